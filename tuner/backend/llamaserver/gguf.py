"""A GGUF file's metadata as ModelInfo: architecture, layers, trained context, quantization, size, tensors.

Read with the `gguf` package (a dependency of autotune), imported only when a GGUF file is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.backend.base import ModelInfo
from tuner.errors import BadResponse, ConfigError, ModelNotFound


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - an odd field is not worth failing model_info for
        return None


def quantization_name(file_type: int | None) -> str:
    """general.file_type (llama_ftype) as a name: 15 -> 'Q4_K_M', 1 -> 'F16'."""
    if file_type is None:
        return "unknown"
    import gguf  # noqa: PLC0415

    try:
        name = gguf.LlamaFileType(int(file_type)).name
    except ValueError:
        return f"ftype-{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _format_params(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def read_model_info(path: str) -> ModelInfo:
    """What a GGUF file's metadata says (architecture, layers, trained context, quantization, size)."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFound(f"GGUF file '{path}' does not exist; pass the path to a .gguf model file.")
    try:
        import gguf  # noqa: PLC0415 - needed only for llama-server

        reader = gguf.GGUFReader(str(p), "r")
    except ImportError as exc:
        raise ConfigError("The 'gguf' package is needed to read GGUF files; run 'pip install gguf'.") from exc
    except (ValueError, OSError, KeyError) as exc:
        raise BadResponse(f"'{path}' is not a readable GGUF file ({exc}).") from exc
    arch = _field_value(reader, "general.architecture") or "unknown"
    block_count = _field_value(reader, f"{arch}.block_count")
    context_length = _field_value(reader, f"{arch}.context_length")
    raw: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or len(f.data) > 64:
            continue  # skip the header and big arrays (the vocabulary)
        value = _field_value(reader, key)
        if value is not None:
            raw[key] = value
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    tensors = [
        {"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape]}
        for t in reader.tensors
    ]
    return ModelInfo(
        name=str(path),
        architecture=str(arch),
        block_count=int(block_count or 0),
        context_length=int(context_length or 0),
        quantization=quantization_name(_field_value(reader, "general.file_type")),
        size_bytes=p.stat().st_size,
        parameter_size=_format_params(n_params),
        family=str(arch),
        model_info=raw,
        tensors=tensors,
    )
