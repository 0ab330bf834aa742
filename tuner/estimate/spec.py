"""ModelSpec: what the memory estimate needs from one model file, read from an /api/show response.

Weights are exact: each tensor's bytes from its ggml type and shape, grouped per repeating layer
(`blk.N.*`), the output layer (`output_norm` + `output`, or `token_embd` when the output is tied), the
input embedding, the vision projector (`v.*`, `mm.*`) and the rest. Attention shapes come from the GGUF keys
`<arch>.attention.*`, with the tensors as a fallback where a per-layer array arrives as null
(/api/show without verbose). What real models have and this handles:

* grouped-query attention: head_count_kv per layer (a number, an array, or from attn_k's shape);
* key/value lengths that differ from embedding/heads (`attention.key_length`, `value_length`);
* sliding-window layers: gemma2/gemma3/gpt-oss/cohere2 by their fixed llama.cpp patterns, or
  `attention.sliding_window_pattern` where the file has it;
* MLA (deepseek2 converted by llama.cpp after 2025-04): head_count_kv 1 with key_length 576 and
  value_length 512, so the KV formula gives the compressed cache; Ollama's older deepseek2 files carry the
  full 128 heads x (192 + 128) instead, and get that cache (as llama.cpp allocates for them);
* mixture-of-experts: expert tensors counted in full (all experts are resident), the largest matrix per
  layer kept for op-offload staging;
* recurrent/SSM layers (head_count_kv 0): a fixed-size state instead of KV cells.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.estimate.ggml import tensor_bytes

# llama.cpp's built-in sliding-window layouts: (period, which layers in each period are global)
_SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gptoss": 2}
_BLK = re.compile(r"^blk\.(\d+)\.")


class SpecError(ValueError):
    """The /api/show response lacks what the estimate needs."""


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    block_count: int
    context_length: int
    embedding_length: int
    head_count: int  # the largest over layers
    head_count_kv: tuple[int, ...]  # per layer; 0 = a recurrent layer
    key_length: int
    value_length: int
    vocab_size: int
    feed_forward_length: int
    layer_bytes: tuple[int, ...]  # weights per repeating layer
    layer_max_matrix_bytes: tuple[int, ...]  # the largest 2-D+ weight of each layer
    output_bytes: int  # output_norm + output (token_embd when tied): Ollama's "output layer"
    token_embd_bytes: int
    tied_output: bool
    projector_bytes: int = 0  # vision tower and projector in the same file
    other_bytes: int = 0  # rope_freqs and the like
    sliding: tuple[bool, ...] = ()  # per layer; empty = no sliding-window layers
    sliding_window: int = 0
    expert_count: int = 0
    expert_used_count: int = 0
    expert_shared_count: int = 0
    expert_ff_length: int = 0
    ssm_state_bytes: int = 0  # per sequence, per recurrent layer (f32)
    vision_image: int = 0
    vision_patch: int = 0
    vision_embedding: int = 0
    name: str = ""
    quantization: str = ""

    # --- derived ---------------------------------------------------------------------------------
    @property
    def weights_bytes(self) -> int:
        return (
            sum(self.layer_bytes)
            + self.output_bytes
            + self.projector_bytes
            + self.other_bytes
            + (0 if self.tied_output else self.token_embd_bytes)
        )

    @property
    def max_layers(self) -> int:
        """Offloadable layers: the repeating ones plus the output layer."""
        return self.block_count + 1

    @property
    def head_count_kv_min(self) -> int:
        return min((h for h in self.head_count_kv if h), default=0)

    def is_sliding(self, layer: int) -> bool:
        return bool(self.sliding) and self.sliding[layer]

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 0

    # --- parsing ---------------------------------------------------------------------------------
    @classmethod
    def from_show(cls, show: Mapping[str, Any], name: str = "") -> ModelSpec:
        """Read an /api/show response (a dict, or the official client's ShowResponse dumped to one)."""
        info: Mapping[str, Any] = show.get("model_info") or show.get("modelinfo") or {}
        tensors = show.get("tensors") or []
        details = show.get("details") or {}
        arch = str(info.get("general.architecture") or "")
        if not arch:
            raise SpecError("the /api/show response has no model_info 'general.architecture'")
        if not tensors:
            raise SpecError(
                "the /api/show response has no 'tensors' list (Ollama sends it for GGUF models); "
                "save the response of a current server or pass a GGUF-backed model"
            )
        p = arch + "."

        def num(key: str, default: Any = None) -> Any:
            value = info.get(p + key, default)
            return default if value is None else value

        blocks = int(num("block_count", 0))
        if blocks <= 0:
            raise SpecError(f"model_info lacks '{p}block_count'")
        emb = int(num("embedding_length", 0))
        shapes = {str(t["name"]): [int(d) for d in t.get("shape") or []] for t in tensors}
        heads_raw = num("attention.head_count")
        heads = _per_layer(heads_raw, blocks)
        head_count = max(heads) if heads else 0
        if not head_count:  # a null array: the query projection's width over the head length
            head_count = _infer_heads(shapes, emb, int(num("attention.key_length", 0)))
        key_len = int(num("attention.key_length", 0)) or (emb // head_count if head_count else 0)
        val_len = int(num("attention.value_length", 0)) or key_len
        kv_heads = _per_layer(num("attention.head_count_kv"), blocks)
        if not kv_heads:
            kv_heads = [_kv_heads_from_tensors(shapes, i, key_len, head_count) for i in range(blocks)]
        vocab = int(num("vocab_size", 0) or 0)
        tokens = info.get("tokenizer.ggml.tokens")
        if not vocab and isinstance(tokens, list):
            vocab = len(tokens)
        if not vocab:
            embd = shapes.get("token_embd.weight") or shapes.get("output.weight") or [0, 0]
            vocab = embd[-1]
        ffn = num("feed_forward_length", 0)
        ffn = max(ffn) if isinstance(ffn, list) and ffn else int(ffn or 0)

        layer = [0] * blocks
        biggest = [0] * blocks
        output = token = projector = other = 0
        has_output = "output.weight" in shapes
        for t in tensors:
            tname = str(t["name"])
            nbytes = tensor_bytes(str(t["type"]), [int(d) for d in t.get("shape") or []])
            match = _BLK.match(tname)
            if match:
                i = int(match.group(1))
                if i >= blocks:  # e.g. a next-token-prediction block the runner does not load
                    other += nbytes
                    continue
                layer[i] += nbytes
                if len(t.get("shape") or []) >= 2:
                    biggest[i] = max(biggest[i], nbytes)
            elif tname.startswith(("v.", "mm.")):
                projector += nbytes
            elif tname == "token_embd.weight":
                token = nbytes
            elif tname in ("output.weight", "output_norm.weight"):
                output += nbytes
            else:
                other += nbytes
        if not has_output:
            output += token

        window = int(num("attention.sliding_window", 0) or 0)
        sliding: tuple[bool, ...] = ()
        pattern_key = num("attention.sliding_window_pattern")
        if window and isinstance(pattern_key, list) and len(pattern_key) == blocks:
            sliding = tuple(bool(x) for x in pattern_key)
        elif window and arch in _SWA_PATTERNS:
            period = (
                int(pattern_key) if isinstance(pattern_key, int) and pattern_key > 0 else _SWA_PATTERNS[arch]
            )
            if arch == "gptoss":  # even layers use the window
                sliding = tuple(i % 2 == 0 for i in range(blocks))
            else:  # every period-th layer is global
                sliding = tuple((i + 1) % period != 0 for i in range(blocks))

        ssm = 0
        if any(h == 0 for h in kv_heads) and num("ssm.state_size"):
            d_conv, d_inner = int(num("ssm.conv_kernel", 4)), int(num("ssm.inner_size", 0))
            d_state, groups = int(num("ssm.state_size", 0)), int(num("ssm.group_count", 1) or 1)
            ssm = ((d_conv - 1) * (d_inner + 2 * groups * d_state) + d_state * d_inner) * 4

        return cls(
            arch=arch,
            block_count=blocks,
            context_length=int(num("context_length", 0) or 0),
            embedding_length=emb,
            head_count=head_count,
            head_count_kv=tuple(kv_heads),
            key_length=key_len,
            value_length=val_len,
            vocab_size=int(vocab),
            feed_forward_length=ffn,
            layer_bytes=tuple(layer),
            layer_max_matrix_bytes=tuple(biggest),
            output_bytes=output,
            token_embd_bytes=token,
            tied_output=not has_output,
            projector_bytes=projector,
            other_bytes=other,
            sliding=sliding,
            sliding_window=window,
            expert_count=int(num("expert_count", 0) or 0),
            expert_used_count=int(num("expert_used_count", 0) or 0),
            expert_shared_count=int(num("expert_shared_count", 0) or 0),
            expert_ff_length=int(num("expert_feed_forward_length", 0) or 0),
            ssm_state_bytes=ssm,
            vision_image=int(num("vision.image_size", 0) or 0),
            vision_patch=int(num("vision.patch_size", 0) or 0),
            vision_embedding=int(num("vision.embedding_length", 0) or 0),
            name=name,
            quantization=str(details.get("quantization_level") or ""),
        )


def _per_layer(value: Any, blocks: int) -> list[int]:
    """A GGUF number-or-array hyper-parameter as one value per layer; [] when it is missing or null."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = [int(v) for v in value]
        return items if len(items) == blocks else []
    return [int(value)] * blocks


def _infer_heads(shapes: Mapping[str, list[int]], emb: int, key_len: int) -> int:
    q = shapes.get("blk.0.attn_q.weight")
    if q and len(q) == 2:
        head = key_len or 128
        return max(1, q[1] // head)
    return 1


def _kv_heads_from_tensors(shapes: Mapping[str, list[int]], layer: int, key_len: int, heads: int) -> int:
    k = shapes.get(f"blk.{layer}.attn_k.weight")
    if k and len(k) == 2 and key_len:
        return k[1] // key_len
    if shapes.get(f"blk.{layer}.attn_kv_a_mqa.weight"):  # MLA without head_count_kv: per-head K/V
        return heads
    return 0  # no attention in this layer (recurrent)
