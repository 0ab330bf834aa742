"""llama.cpp's per-tensor quantization choice (llama-quant.cpp llama_tensor_get_type), for generated model files.

Ollama's own quantizer (server/quantization.go) follows the same rules; block sizes are in tuner.estimate.ggml.
"""

from __future__ import annotations

# Ollama's file types (general.file_type) and the name it shows as quantization_level.
FILE_TYPES: dict[str, int] = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp: the first and last eighth of the layers, and every third one in between, get more bits."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def choose_type(
    ftype: str,
    name: str,
    shape: tuple[int, ...],
    *,
    layer: int | None,
    n_layers: int,
    has_output: bool,
    is_70b: bool = False,
    n_expert: int = 0,
) -> str:
    """The ggml type llama.cpp gives tensor `name` in a file of type `ftype` ('Q4_K_M', 'Q8_0', 'F16').

    8-expert models (mixtral) keep attn_k and attn_v at Q8_0 and attn_output at Q5_K in every k-quant mix
    ("bumping this to Q8_0 trades just ~128MB"); a fused attn_qkv (phi3) gets Q5_K in Q4_K_M."""
    if len(shape) == 1 or name.endswith(".bias") or "norm" in name or "ffn_gate_inp" in name:
        return "F32"
    if name.startswith("rope_freqs"):
        return "F32"
    if name.startswith(("v.", "mm.")):  # vision tower and projector stay 16-bit in Ollama's files
        return "F16"
    if ftype in ("F16", "Q8_0"):
        return ftype
    if n_expert == 8 and (".attn_v." in name or ".attn_k." in name):
        return "Q8_0"
    if ftype == "Q4_0":  # llama.cpp gives the output matrix Q6_K in every k-less 4-bit file
        is_out = name == "output.weight" or (not has_output and name == "token_embd.weight")
        return "Q6_K" if is_out and shape[0] % 256 == 0 else "Q8_0" if is_out else "Q4_0"
    if ftype != "Q4_K_M":
        raise ValueError(f"unsupported file type {ftype!r}")
    new = "Q4_K"
    if n_expert == 8 and ".attn_output." in name:
        return "Q5_K"
    if ".attn_qkv." in name:
        return "Q5_K"
    is_output = name == "output.weight" or (not has_output and name == "token_embd.weight")
    if is_output:
        new = "Q6_K"
    elif ".attn_v." in name and layer is not None:
        if use_more_bits(layer, n_layers):
            new = "Q6_K"
        elif is_70b:
            new = "Q5_K"  # the 70B rule: attn_v is 8x smaller than attn_q, so it gets more bits
    elif ".ffn_down" in name and layer is not None:
        if use_more_bits(layer, n_layers):
            new = "Q6_K"
    # k-quants need rows that are a multiple of 256; llama.cpp falls back otherwise
    if shape[0] % 256:
        new = {"Q4_K": "Q5_0", "Q5_K": "Q5_0", "Q6_K": "Q8_0"}[new]
    return new
