"""Models created from an uploaded GGUF, as `ollama create NAME -f Modelfile` (FROM ./file.gguf) makes them.

The client uploads the file (POST /api/blobs/sha256:<digest>) and then asks /api/create for NAME with
`files: {"file.gguf": "sha256:<digest>"}`. The simulator keeps uploaded blobs in a temporary folder and
reads the GGUF's own key/values and tensor list (the `gguf` package), so the model it serves has the
file's real shapes, types and sizes: /api/show sends them back, the estimator and the simulated runner
place them. Architectures follow the standard GGUF keys (`<arch>.block_count`, ...); what a key does not
say falls back to the GGUF convention (head_count_kv = head_count, key length = embedding / heads).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuner.models import arch as A
from tuner.models.quant import FILE_TYPES
from tuner.sim.catalog import Family, ModelFile, TensorInfo, assemble_file, lookup, register_file

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_FILE_TYPE_NAMES = {v: k for k, v in FILE_TYPES.items()} | {
    3: "Q4_1",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    12: "Q3_K_M",
    14: "Q4_K_S",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}
IMPORT_TEMPLATE = "{{ .Prompt }}"  # what Ollama gives a GGUF that carries no chat template it knows


class BlobError(ValueError):
    pass


def parse_digest(text: str) -> str:
    """'sha256:<64 hex>' (or 'sha256-...') -> the hex; BlobError otherwise."""
    m = _DIGEST.match(text.strip())
    if not m:
        raise BlobError("invalid digest format")
    return m.group(1)


class BlobStore:
    """Uploaded blobs by sha256, in a temporary folder removed by close()."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    def _root(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ollama-sim-blobs-"))
        return self._dir

    def path(self, digest: str) -> Path | None:
        path = self._root() / parse_digest(digest)
        return path if path.is_file() else None

    def put(self, digest: str, data: bytes) -> None:
        want = parse_digest(digest)
        if hashlib.sha256(data).hexdigest() != want:
            raise BlobError("digest mismatch")
        tmp = self._root() / (want + ".partial")
        tmp.write_bytes(data)
        tmp.replace(self._root() / want)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _plain(value: Any) -> Any:
    """A GGUF value as JSON sends it: numpy scalars to Python numbers, float32 by their shortest text."""
    import numpy as np

    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_kv(reader: Any) -> dict[str, Any]:
    """The GGUF key/values (without the header's own GGUF.* fields)."""
    out: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = _plain(f.contents())
    return out


def _arch(kv: dict[str, Any], tensors: list[TensorInfo]) -> A.Arch:
    name = str(kv.get("general.architecture", ""))
    p = name + "."

    def get(key: str, default: Any = None) -> Any:
        value = kv.get(p + key, default)
        if isinstance(value, list):  # per-layer arrays (head_count_kv in some files): the largest
            value = max(value) if value else default
        return value

    try:
        blocks = int(get("block_count"))
        embd = int(get("embedding_length"))
        heads = int(get("attention.head_count"))
    except (TypeError, ValueError):
        raise BlobError(f"unsupported architecture {name!r}: no {name}.block_count") from None
    names = {t.name for t in tensors}
    vocab = get("vocab_size") or len(kv.get("tokenizer.ggml.tokens") or []) or 0
    return A.Arch(
        name=name,
        block_count=blocks,
        context_length=int(get("context_length", 2048)),
        embedding_length=embd,
        feed_forward_length=int(get("feed_forward_length", 4 * embd)),
        head_count=heads,
        head_count_kv=int(get("attention.head_count_kv", heads)),
        vocab_size=int(vocab),
        key_length=int(get("attention.key_length", 0)),
        value_length=int(get("attention.value_length", 0)),
        rope_freq_base=float(get("rope.freq_base", 10000.0)),
        rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        tied_output="output.weight" not in names,
        sliding_window=int(get("attention.sliding_window", 0)),
        expert_count=int(get("expert_count", 0)),
        expert_used_count=int(get("expert_used_count", 0)),
        expert_ff_length=int(get("expert_feed_forward_length", 0)),
    )


def import_tag(digest: str) -> str:
    """The simulator's key for an imported file (ModelFile.tag): its content digest."""
    return "blob:sha256-" + parse_digest(digest)


def read_gguf(path: Path, name: str, digest: str) -> ModelFile:
    """The simulator's ModelFile of the GGUF at `path` (first served as `name`), registered for lookup()."""
    import gguf

    existing = lookup(import_tag(digest))
    if existing is not None:
        return existing
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # gguf raises ValueError, struct.error, ...: all mean "not a GGUF we can read"
        raise BlobError(f"invalid file magic or unreadable GGUF ({exc.__class__.__name__})") from None
    kv = read_kv(reader)
    tensors = [
        TensorInfo(
            t.name,
            gguf.GGMLQuantizationType(t.tensor_type).name,
            tuple(int(d) for d in t.shape),
            int(t.n_bytes),
        )
        for t in reader.tensors
    ]
    arch = _arch(kv, tensors)
    ftype = _FILE_TYPE_NAMES.get(int(kv.get("general.file_type", 1)), "F16")
    repo, _, size = name.partition(":")
    fam = Family(
        model=repo,
        size=size or "latest",
        arch=arch,
        infix="",
        family=arch.name,
        template=IMPORT_TEMPLATE,
        parameters={},
        capabilities=("completion",),
        license="",
        basename=str(kv.get("general.basename", "")),
        tokenizer=(
            str(kv.get("tokenizer.ggml.model", "")),
            str(kv.get("tokenizer.ggml.pre", "")),
            int(kv.get("tokenizer.ggml.bos_token_id", 0)),
            int(kv.get("tokenizer.ggml.eos_token_id", 0)),
        ),
    )
    meta_bytes = path.stat().st_size - sum(t.nbytes for t in tensors)
    mf = assemble_file(
        fam, ftype, import_tag(digest), tensors, meta_bytes, kv=kv, source_digest=parse_digest(digest)
    )
    return register_file(mf)
