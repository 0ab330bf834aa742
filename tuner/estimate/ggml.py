"""ggml tensor types: exact bytes per block (ggml/src/ggml.c type_traits), and the bytes of one tensor."""

from __future__ import annotations

# type name -> (bytes per block, weights per block)
GGML_TYPES: dict[str, tuple[int, int]] = {
    "F64": (8, 1),
    "F32": (4, 1),
    "F16": (2, 1),
    "BF16": (2, 1),
    "I8": (1, 1),
    "I16": (2, 1),
    "I32": (4, 1),
    "I64": (8, 1),
    "Q8_0": (34, 32),
    "Q8_1": (36, 32),
    "Q5_0": (22, 32),
    "Q5_1": (24, 32),
    "Q4_0": (18, 32),
    "Q4_1": (20, 32),
    "MXFP4": (17, 32),
    "IQ4_NL": (18, 32),
    "Q2_K": (84, 256),
    "Q3_K": (110, 256),
    "Q4_K": (144, 256),
    "Q5_K": (176, 256),
    "Q6_K": (210, 256),
    "Q8_K": (292, 256),
    "IQ1_S": (50, 256),
    "IQ1_M": (56, 256),
    "IQ2_XXS": (66, 256),
    "IQ2_XS": (74, 256),
    "IQ2_S": (82, 256),
    "IQ3_XXS": (98, 256),
    "IQ3_S": (110, 256),
    "IQ4_XS": (136, 256),
    "TQ1_0": (54, 256),
    "TQ2_0": (66, 256),
}

# KV cache element types llama.cpp accepts for --cache-type-k/-v, and Ollama's own approximation of their
# bytes per element in the Era A estimate (fs/ggml kvCacheBytesPerElement).
KV_TYPES = ("f16", "q8_0", "q4_0")
OLLAMA_KV_BYTES = {"f16": 2.0, "q8_0": 1.0, "q4_0": 0.5}


def tensor_bytes(ggml_type: str, shape: tuple[int, ...] | list[int]) -> int:
    """Bytes of a tensor of `ggml_type` with `shape`; ValueError for an unknown type or a partial block."""
    try:
        block_bytes, block_len = GGML_TYPES[ggml_type.upper()]
    except KeyError:
        raise ValueError(f"unknown ggml tensor type {ggml_type!r}") from None
    count = 1
    for dim in shape:
        count *= int(dim)
    if count % block_len:
        raise ValueError(f"{count} elements are not a whole number of {ggml_type} blocks")
    return count // block_len * block_bytes


def kv_bytes(kv_type: str, elements: int) -> int:
    """Bytes llama.cpp allocates for `elements` KV cache values of `kv_type` (f16, q8_0 or q4_0)."""
    block_bytes, block_len = GGML_TYPES[kv_type.upper()]
    return -(-elements // block_len) * block_bytes
