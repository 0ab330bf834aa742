"""What /api/show and /api/tags say about a model file: details, model_info (GGUF key/values), sizes."""

from __future__ import annotations

from typing import Any

from tuner.estimate.spec import ModelSpec
from tuner.models.gguf import arch_keys
from tuner.models.quant import FILE_TYPES
from tuner.sim.catalog import ModelFile


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
        own = {k: (v if verbose or not isinstance(v, list) else None) for k, v in mf.kv.items()}
        own.pop("general.name", None)  # Ollama drops it
        own["general.parameter_count"] = mf.parameter_count
        return dict(sorted(own.items()))
    a, fam = mf.arch, mf.family
    info: dict[str, Any] = {
        "general.architecture": a.name,
        "general.basename": fam.basename,
        "general.file_type": FILE_TYPES[mf.ftype],
        "general.parameter_count": mf.parameter_count,
        "general.size_label": fam.size.upper(),
        "general.type": "model",
        **arch_keys(a),
    }
    if mf.ftype != "F16":
        info["general.quantization_version"] = 2
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
