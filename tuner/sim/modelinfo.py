"""What /api/show and /api/tags say about a model file: details, model_info (GGUF key/values), sizes."""

from __future__ import annotations

from typing import Any

from tuner.estimate.spec import ModelSpec
from tuner.sim.catalog import ModelFile
from tuner.sim.quant import FILE_TYPES


def human_number(count: int) -> str:
    """Ollama's format.HumanNumber: 8030261248 -> '8.0B', 671026419200 -> '671.0B', 7344384 -> '7.34M'
    (one decimal for billions, two for millions, none for thousands; a whole number has none)."""
    for unit, scale, places in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 0)):
        if count >= scale:
            value = count / scale
            if value == int(value) or places == 0:
                return f"{value:.0f}{unit}"
            return f"{value:.{places}f}{unit}"
    return str(count)


def details(mf: ModelFile, parent_model: str = "") -> dict[str, Any]:
    return {
        "parent_model": parent_model,
        "format": "gguf",
        "family": mf.family.family,
        "families": [mf.family.family],
        "parameter_size": human_number(mf.parameter_count),
        "quantization_level": mf.ftype,
    }


def model_info(mf: ModelFile, verbose: bool = False) -> dict[str, Any]:
    """The GGUF key/values as /api/show's model_info: arrays are null unless verbose."""
    if mf.kv is not None:  # an imported file: its own keys, as Ollama shows them
        info = {k: (v if verbose or not isinstance(v, list) else None) for k, v in mf.kv.items()}
        info.pop("general.name", None)  # Ollama drops it
        info["general.parameter_count"] = mf.parameter_count
        return dict(sorted(info.items()))
    a, fam = mf.arch, mf.family
    p = a.name + "."
    info: dict[str, Any] = {
        "general.architecture": a.name,
        "general.basename": fam.basename,
        "general.file_type": FILE_TYPES[mf.ftype],
        "general.parameter_count": mf.parameter_count,
        "general.size_label": fam.size.upper(),
        "general.type": "model",
        p + "block_count": a.block_count,
        p + "context_length": a.context_length,
        p + "embedding_length": a.embedding_length,
        p + "feed_forward_length": a.feed_forward_length,
        p + "attention.head_count": a.head_count,
        p + "attention.head_count_kv": a.head_count_kv,
        p + "attention.layer_norm_rms_epsilon": a.rms_eps,
        p + "rope.freq_base": a.rope_freq_base,
    }
    if mf.ftype != "F16":
        info["general.quantization_version"] = 2
    if a.name in ("llama", "deepseek2"):
        info[p + "vocab_size"] = a.vocab_size
    if a.name == "llama":
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
    if a.is_moe:
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
    tok_model, pre, bos, eos = fam.tokenizer
    info.update(
        {
            "tokenizer.ggml.model": tok_model,
            "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.bos_token_id": bos,
            "tokenizer.ggml.eos_token_id": eos,
            "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_eos_token": False,
        }
    )
    arrays = ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type"]
    arrays.append("tokenizer.ggml.merges" if tok_model == "gpt2" else "tokenizer.ggml.scores")
    for key in arrays:
        info[key] = _array(key, a.vocab_size) if verbose else None
    return dict(sorted(info.items()))


def _array(key: str, vocab: int) -> list[Any]:
    if key.endswith("tokens"):
        return [f"<t{i}>" for i in range(vocab)]
    if key.endswith("token_type"):
        return [1] * vocab
    if key.endswith("scores"):
        return [0.0] * vocab
    return [f"a{i} b{i}" for i in range(vocab // 2)]


_SPECS: dict[str, ModelSpec] = {}


def spec_of(mf: ModelFile) -> ModelSpec:
    """The estimator's view of a catalog file, read the way a client reads it: from /api/show's fields."""
    key = mf.tag + mf.source_digest
    if key not in _SPECS:
        show = {
            "model_info": model_info(mf),
            "tensors": [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in mf.tensors],
            "details": details(mf),
        }
        _SPECS[key] = ModelSpec.from_show(show, name=mf.tag)
    return _SPECS[key]
