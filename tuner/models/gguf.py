"""What a model file says about itself: its `{arch}.*` metadata keys, its typed tensor list, and both as the
/api/show-shaped dict that the estimator (tuner.estimate.ModelSpec.from_show) reads. Pure."""

from __future__ import annotations

from typing import Any

from tuner.models.arch import Arch, tensor_shapes
from tuner.models.quant import choose_type

Tensor = tuple[str, tuple[int, ...], str]  # name, shape (GGUF order: ne0 first), ggml type


def arch_keys(a: Arch) -> dict[str, Any]:
    """The architecture's GGUF key/values (`{arch}.block_count`, ...), as /api/show's model_info lists them."""
    p = a.name + "."
    info: dict[str, Any] = {
        p + "block_count": a.block_count,
        p + "context_length": a.context_length,
        p + "embedding_length": a.embedding_length,
        p + "feed_forward_length": a.feed_forward_length,
        p + "attention.head_count": a.head_count,
        p + "attention.head_count_kv": a.head_count_kv,
        p + "attention.layer_norm_rms_epsilon": a.rms_eps,
        p + "rope.freq_base": a.rope_freq_base,
    }
    if a.name in ("llama", "deepseek2"):
        info[p + "vocab_size"] = a.vocab_size
    if a.name in ("llama", "phi3"):
        info[p + "rope.dimension_count"] = a.head_dim_k
    if a.key_length:
        info[p + "attention.key_length"] = a.key_length
        info[p + "attention.value_length"] = a.value_length
    if a.sliding_window:
        info[p + "attention.sliding_window"] = a.sliding_window
    if a.vision_blocks:
        info.update(
            {
                p + "mm.tokens_per_image": 256,
                p + "vision.attention.head_count": 16,
                p + "vision.attention.layer_norm_epsilon": 1e-6,
                p + "vision.block_count": a.vision_blocks,
                p + "vision.embedding_length": a.vision_embedding,
                p + "vision.feed_forward_length": a.vision_ff,
                p + "vision.image_size": a.vision_image,
                p + "vision.num_channels": 3,
                p + "vision.patch_size": a.vision_patch,
            }
        )
    if a.is_moe and a.name != "deepseek2":  # mixtral (llama), qwen3moe: the router's keys only
        info[p + "expert_count"] = a.expert_count
        info[p + "expert_used_count"] = a.expert_used_count
        if a.name != "llama":
            info[p + "expert_feed_forward_length"] = a.expert_ff_length
    elif a.is_moe:
        info.update(
            {
                p + "leading_dense_block_count": a.leading_dense_block_count,
                p + "expert_count": a.expert_count,
                p + "expert_used_count": a.expert_used_count,
                p + "expert_shared_count": a.expert_shared_count,
                p + "expert_feed_forward_length": a.expert_ff_length,
                p + "expert_weights_scale": 2.5,
                p + "expert_weights_norm": True,
                p + "expert_gating_func": 2,
                p + "attention.q_lora_rank": a.q_lora_rank,
                p + "attention.kv_lora_rank": a.kv_lora_rank,
                p + "rope.dimension_count": a.rope_dim,
                p + "rope.scaling.type": "yarn",
                p + "rope.scaling.factor": 40,
                p + "rope.scaling.original_context_length": 4096,
                p + "rope.scaling.yarn_log_multiplier": 0.1,
            }
        )
    return info


def _layer_of(name: str) -> int | None:
    return int(name.split(".")[1]) if name.startswith("blk.") else None


def file_tensors(a: Arch, ftype: str, *, is_70b: bool = False) -> list[Tensor]:
    """Every tensor of `a` in a file of type `ftype` ('Q4_K_M', 'Q8_0', 'F16', 'Q4_0'), with llama.cpp's type
    for each; `is_70b` applies llama.cpp's extra bits for attn_v in 70B models (tuner.models.quant)."""
    return [
        (
            name,
            shape,
            choose_type(
                ftype,
                name,
                shape,
                layer=_layer_of(name),
                n_layers=a.block_count,
                has_output=not a.tied_output,
                is_70b=is_70b,
                n_expert=a.expert_count,
            ),
        )
        for name, shape in tensor_shapes(a)
    ]


def show(a: Arch, ftype: str, *, is_70b: bool = False) -> dict[str, Any]:
    """The part of an /api/show response the estimator reads: model_info (architecture keys), tensors, details."""
    return {
        "model_info": {"general.architecture": a.name, **arch_keys(a)},
        "tensors": [
            {"name": n, "type": t, "shape": list(sh)} for n, sh, t in file_tensors(a, ftype, is_70b=is_70b)
        ],
        "details": {"quantization_level": ftype},
    }
