"""Generate llama-architecture GGUF models with random weights, for tests and benchmarks.

    python -m tuner.ggufgen OUT.gguf --shape tiny|llama3-8b --type F16|Q8_0|Q4_0 [--seed 0]

The weights are random (speed does not depend on their values) and the vocabulary is a SentencePiece
("llama") one with byte fallback: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then filler
tokens "[t<n>]" up to the shape's vocab size, so any text tokenizes (one token per byte) and every
generated filler token is printable. Only the embeddings are arranged: the output matrix holds each filler
token's embedding in the row of the next filler token, so greedy decoding walks the fillers in a cycle
([t7][t8][t9]...), never repeats a token (Ollama aborts a stream after 30 repeats of one token) and never
emits a control or byte token; the random blocks only add noise to that walk. `tiny` (8 layers, 256 wide, ~13 MB in F16) is for CI;
`llama3-8b` has Llama-3-8B's shapes (32 layers, 4096 wide, FFN 14336, 32 heads, 8 KV heads and the
full 128256-token vocabulary), so its memory and speed match the real model (F16: 16 GB).

Tensors are written one at a time (GGUFWriter's tensor-info-first path), so memory stays at one
tensor. Q8_0/Q4_0 are quantized here with gguf's numpy quantizers, every matrix the same type; for
the 8B shape it is much faster to write F16 and run `llama-quantize in.gguf out.gguf Q8_0`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 2  # bump when the files this writes change, so cached test models are regenerated


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_ctx_train: int
    rope_freq_base: float = 500000.0
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES = {
    "tiny": Shape(
        "tiny", n_layer=8, n_embd=256, n_ff=768, n_head=4, n_head_kv=2, n_vocab=2048, n_ctx_train=32768
    ),
    # The tiny model with a 16M-token trained context: its KV cache at a large num_ctx outgrows any host's
    # memory (4 KiB per token: 32 GiB at 8M), so a real server refuses the load, as it would a big model.
    "tiny-longctx": Shape(
        "tiny-longctx",
        n_layer=8,
        n_embd=256,
        n_ff=768,
        n_head=4,
        n_head_kv=2,
        n_vocab=2048,
        n_ctx_train=1 << 24,
    ),
    "llama3-8b": Shape(
        "llama3-8b",
        n_layer=32,
        n_embd=4096,
        n_ff=14336,
        n_head=32,
        n_head_kv=8,
        n_vocab=128256,
        n_ctx_train=8192,
    ),
}

# general.file_type values (llama.cpp's llama_ftype) of the types written here.
_FILE_TYPES = {"F16": 1, "Q4_0": 2, "Q8_0": 7}


def _gguf() -> Any:
    try:
        import gguf  # noqa: PLC0415 - a test dependency, not needed to import tuner
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("the 'gguf' package is needed: pip install 'gguf>=0.17'") from exc
    return gguf


def tensor_shapes(shape: Shape) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape (rows, cols), is_matrix) of every tensor, in file order."""
    e, f, v = shape.n_embd, shape.n_ff, shape.n_vocab
    kv = shape.n_head_kv * shape.head_dim
    out: list[tuple[str, tuple[int, ...], bool]] = [("token_embd.weight", (v, e), True)]
    for i in range(shape.n_layer):
        out += [
            (f"blk.{i}.attn_norm.weight", (e,), False),
            (f"blk.{i}.attn_q.weight", (e, e), True),
            (f"blk.{i}.attn_k.weight", (kv, e), True),
            (f"blk.{i}.attn_v.weight", (kv, e), True),
            (f"blk.{i}.attn_output.weight", (e, e), True),
            (f"blk.{i}.ffn_norm.weight", (e,), False),
            (f"blk.{i}.ffn_gate.weight", (f, e), True),
            (f"blk.{i}.ffn_up.weight", (f, e), True),
            (f"blk.{i}.ffn_down.weight", (e, f), True),
        ]
    out += [("output_norm.weight", (e,), False), ("output.weight", (v, e), True)]
    return out


def vocabulary(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types of a byte-fallback SentencePiece vocabulary of `n_vocab` tokens."""
    gguf = _gguf()
    tt = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [int(tt.UNKNOWN), int(tt.CONTROL), int(tt.CONTROL)] + [int(tt.BYTE)] * 256
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab={n_vocab} is below the {len(tokens)} tokens a byte vocabulary needs")
    filler = n_vocab - len(tokens)
    tokens += [f"[t{i}]" for i in range(filler)]
    types += [int(tt.NORMAL)] * filler
    scores = [0.0] * n_vocab
    return tokens, scores, types


def _random_f16_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random float16 values of magnitude 2**-7..2**-5 with random signs, built from random bits."""
    bits = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16).copy()
    exponent = (((bits >> 10) & 1) + 8).astype(np.uint16) << 10  # exponent field 8 or 9
    bits = (bits & np.uint16(0x83FF)) | exponent
    return bits.view(np.float16)


class _RandomPool:
    """Random float16 values for any tensor, cut from one random pool at a random offset.

    Generating 8 G random values takes minutes; repeating a 16 M-value pool takes a memory copy, and
    the values do not matter for speed or memory.
    """

    def __init__(self, rng: np.random.Generator, size: int = (1 << 24) + 4099) -> None:
        self._rng = rng
        self._pool = _random_f16_bits(rng, size)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        size = len(self._pool)
        start = int(self._rng.integers(size))
        if n <= size - start:
            return self._pool[start : start + n].reshape(shape).copy()
        reps = -(-(n - (size - start)) // size)
        return np.concatenate([self._pool[start:], *([self._pool] * reps)])[:n].reshape(shape)


N_SPECIAL_TOKENS = 3 + 256  # <unk>, <s>, </s> and the byte tokens, before the filler tokens
EMBEDDING_SCALE = (
    64  # pool values are 2**-7..2**-5: embeddings of magnitude 0.5..2 outweigh the blocks' noise
)


def _embeddings(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """token_embd (vocab x width), the same for a seed every time it is asked for."""
    pool = _RandomPool(np.random.default_rng([seed, 1]), size=min(1 << 24, int(np.prod(shape))) + 4099)
    return (pool.take(shape).astype(np.float32) * EMBEDDING_SCALE).astype(np.float16)


def _output(embd: np.ndarray) -> np.ndarray:
    """Row next(i) holds embedding i for every filler token i, so the logit of next(i) after i is |e_i|^2
    while every other token gets a near-orthogonal dot product; control and byte rows are zero."""
    out = np.zeros_like(embd)
    fillers = embd[N_SPECIAL_TOKENS:]
    out[N_SPECIAL_TOKENS:] = np.roll(fillers, 1, axis=0)  # out[j] = embd[j - 1], wrapping
    return out


def _tensor_data(
    pool: _RandomPool, name: str, shape: tuple[int, ...], is_matrix: bool, qtype: Any, seed: int = 0
) -> tuple[np.ndarray, Any]:
    """(array to write, raw ggml type or None) for one tensor."""
    gguf = _gguf()
    if not is_matrix:
        return np.ones(shape, dtype=np.float32), None  # norm weights
    if name == "token_embd.weight":
        data = _embeddings(shape, seed)
    elif name == "output.weight":
        data = _output(_embeddings(shape, seed))
    else:
        data = pool.take(shape)
    if qtype == gguf.GGMLQuantizationType.F16:
        return data, None
    return gguf.quants.quantize(data.astype(np.float32), qtype), qtype


def _nbytes(shape: tuple[int, ...], is_matrix: bool, qtype: Any) -> int:
    """Bytes of one tensor as written: F32 norms, F16 or a quantized type for matrices."""
    gguf = _gguf()
    n = int(np.prod(shape))
    if not is_matrix:
        return 4 * n
    if qtype == gguf.GGMLQuantizationType.F16:
        return 2 * n
    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, qtype)))


def make_model(
    path: str | os.PathLike[str],
    shape: str | Shape = "tiny",
    ggml_type: str = "F16",
    seed: int = 0,
    *,
    sparse: bool = False,
) -> Path:
    """Write a random-weight llama GGUF model to `path` (through a temporary file); return the path.

    sparse=True writes the header, key/values and tensor list, then extends the file to its full size
    without writing the weights: a sparse file whose declared size can exceed the disk and the RAM (for
    testing what a server does with a model too large to load), costing only the header on disk.
    """
    gguf = _gguf()
    spec = SHAPES[shape] if isinstance(shape, str) else shape
    ggml_type = ggml_type.upper()
    if ggml_type not in _FILE_TYPES:
        raise ValueError(f"ggml_type {ggml_type!r} is not one of {', '.join(_FILE_TYPES)}")
    qtype = getattr(gguf.GGMLQuantizationType, ggml_type)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")

    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(f"autotune-random-{spec.name}")
    writer.add_description(f"random weights, {spec.name} shapes, seed {seed}, generator v{GENERATOR_VERSION}")
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_vocab_size(spec.n_vocab)
    writer.add_file_type(_FILE_TYPES[ggml_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = vocabulary(spec.n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)

    layout = tensor_shapes(spec)
    for name, shp, is_matrix in layout:
        if not is_matrix:
            writer.add_tensor_info(name, shp, np.dtype(np.float32), 4 * int(np.prod(shp)))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor_info(name, shp, np.dtype(np.float16), 2 * int(np.prod(shp)))
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(shp, qtype)
            writer.add_tensor_info(
                name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype
            )
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        if sparse:
            writer.close()
            align = 32  # GGUF's default alignment: tensor data starts at the next multiple
            start = -(-tmp.stat().st_size // align) * align
            total = sum(-(-_nbytes(shp, is_matrix, qtype) // align) * align for _n, shp, is_matrix in layout)
            os.truncate(tmp, start + total)
            os.replace(tmp, out)
            return out
        pool = _RandomPool(np.random.default_rng(seed))
        for name, shp, is_matrix in layout:
            data, _ = _tensor_data(pool, name, shp, is_matrix, qtype, seed)
            writer.write_tensor_data(data)
        writer.close()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def model_filename(shape: str, ggml_type: str, seed: int = 0) -> str:
    return f"random-{shape}-{ggml_type.upper()}-s{seed}-v{GENERATOR_VERSION}.gguf"


def ensure_model(directory: str | os.PathLike[str], shape: str, ggml_type: str, seed: int = 0) -> Path:
    """The cached model in `directory`, generated on first use (the name carries the generator version)."""
    path = Path(directory) / model_filename(shape, ggml_type, seed)
    if not path.is_file():
        make_model(path, shape, ggml_type, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.ggufgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .gguf file to write")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--type", dest="ggml_type", choices=sorted(_FILE_TYPES), default="F16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_model(args.out, args.shape, args.ggml_type, args.seed)
    print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
