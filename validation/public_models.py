"""ModelSpecs of the public models in ../shared/data/ollama_memory-public.csv, built the way a client builds one.

Each model is a GGUF tensor list (names, shapes, ggml types) generated from the model's published
hyper-parameters, turned into an /api/show-shaped dict and parsed by `ModelSpec.from_show`, so the estimator
sees exactly what it sees for a real server. Where a row names no model, the model is inferred from the row's
own figures (block count, KV bytes per token, printed weight sizes) and one of the specs below is used; the
row's check says "inferred" and from what (logrows.py).

Sources of the hyper-parameters (config.json of each model or of a fine-tune that copies it; read through
the project's stored copies of public pages, not guessed):

* llama3.1:8b, llama3.3:70b, gemma3:12b, deepseek-r1:671b: tuner/models/arch.py (its sources are listed there;
  the simulator serves the same models).
* gemma3:27b: text_config head_dim 128, hidden 5376, intermediate 21504, 32 heads, 16 KV heads, vision
  SigLIP (1152 wide, 27 blocks, 4304 ffn, image 896, patch 14) in NVIDIA TensorRT-LLM
  tests/unittest/_torch/modeling/test_modeling_gemma3.py (GEMMA3_27B_CONFIG, copied from
  google/gemma-3-27b-it); vocab 262144 and sliding window 1024 every 6th layer global as gemma3:12b; 62 blocks
  from the logs themselves (layers.model=63).
* qwen2.5:0.5b: Qwen2.5-0.5B-Instruct 24 layers, hidden 896, 14 heads, 2 KV heads, ffn 4864, vocab 151936,
  tied embeddings (several public copies of its config.json, e.g. a CATALOG in a public verifier script).
* qwen2.5-coder:7b: huggingface.co/VERSIL91/.../config.json (_name_or_path Qwen/Qwen2.5-Coder-7B-Instruct):
  28 layers, hidden 3584, ffn 18944, 28 heads, 4 KV heads, vocab 152064, untied.
* granite-8b-code-instruct-128k: huggingface.co/HCLSoftware/Granite_8b_final_phase2_complete config.json
  (_name_or_path ibm-granite/granite-8b-code-instruct-128k): llama, 36 layers, hidden 4096, ffn 14336,
  32 heads, 8 KV heads, vocab 49152, tie_word_embeddings, attention_bias and mlp_bias true.
* mistral-small3.1:24b: huggingface.co/mistralai/Mistral-Small-3.1-24B-Instruct-2503 config.json: 40 layers,
  hidden 5120, ffn 32768, 32 heads, 8 KV heads, head_dim 128, vocab 131072; vision hidden 1024, head_dim 64
  (16 heads), image 1540; the Pixtral encoder's 24 layers and 4096 ffn from mistralai/Pixtral-12B-2409
  params.json (same encoder family); patch 14 (1540 = 110 x 14).
* qwen3:32b: huggingface.co/ronnywebdevs1/d-m-1 config.json (Qwen3ForCausalLM): 64 layers, hidden 5120,
  ffn 25600, 64 heads, 8 KV heads, head_dim 128, vocab 151936, untied, q/k norms.
* gpt-oss:20b / gpt-oss:120b: huggingface.co/keras/gpt_oss_20b_en task.json and public GptOss config.json
  copies: 24 / 36 layers, hidden 2880, 64 heads, 8 KV heads, head_dim 64, 32 / 128 experts (4 used) of
  2880, vocab 201088, sliding window 128 on every other layer, attention biases and sinks; Ollama's file
  keeps the experts in MXFP4 and the rest in 16 bits (its printed weights: 10.7 GiB repeating, 1.1 GiB output).
* GLM-4.5-Air (inferred for row 19): PrimeIntellect/INTELLECT-3-Base config.json (a GLM-4.5-Air base):
  46 layers + 1 next-token layer, hidden 4096, ffn 10944, 96 heads, 8 KV heads, head_dim 128, 128 experts of
  1408 (8 used, 1 shared), first layer dense, vocab 151552.
* deepseek-v2:16b-lite: DeepSeek-V2-Lite(-Chat) config.json (e.g. TechxGenus/DeepSeek-V2-Lite-Chat-AWQ):
  27 layers, hidden 2048, ffn 10944 (layer 0), 64 experts of 1408 (6 used, 2 shared), 16 heads, no q-LoRA,
  kv_lora 512, qk 128 + 64 rope, v 128, vocab 102400.

Over 400 lines on purpose: one function per public model, each beside its sources above; nothing else lives
here. File types: Q4_K_M, Q8_0, F16 and Q4_0 follow llama.cpp's per-tensor rules (tuner/models/quant.py); Q6_K and
Q4_K_S below follow llama.cpp llama_tensor_get_type (Q4_K_S: attn_v of the first 4 layers and ffn_down of the
first eighth in Q5_K; k-quants fall back to Q5_0 / Q5_1 / Q8_0 where a row is not a multiple of 256).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import cache
from typing import Any

from tuner.estimate.spec import ModelSpec
from tuner.models import arch as A
from tuner.models import gguf
from tuner.models.quant import choose_type

Tensor = tuple[str, tuple[int, ...], str]  # name, shape (ne0 first), ggml type

_KQUANT_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


# --- architectures that tuner/models/arch.py can generate --------------------------------------------------
GEMMA3_27B = replace(
    A.GEMMA3_12B,
    block_count=62,
    embedding_length=5376,
    feed_forward_length=21504,
    head_count=32,
    head_count_kv=16,
    key_length=128,
    value_length=128,
)
QWEN25_05B = A.Arch(
    "qwen2",
    24,
    32768,
    896,
    4864,
    14,
    2,
    151936,
    rope_freq_base=1e6,
    rms_eps=1e-6,
    tied_output=True,
    qkv_bias=True,
)
QWEN25_CODER_7B = A.Arch("qwen2", 28, 32768, 3584, 18944, 28, 4, 152064, rope_freq_base=1e6, qkv_bias=True)
QWEN3_32B = A.Arch(
    "qwen3", 64, 40960, 5120, 25600, 64, 8, 151936, key_length=128, value_length=128, qk_norm=True
)
GRANITE_8B_CODE = A.Arch("llama", 36, 128000, 4096, 14336, 32, 8, 49152, tied_output=True, qkv_bias=True)
MISTRAL_SMALL_31 = A.Arch(
    "mistral3", 40, 131072, 5120, 32768, 32, 8, 131072, key_length=128, value_length=128
)
PIXTRAL = {"blocks": 24, "embedding": 1024, "ffn": 4096, "image": 1540, "patch": 14, "heads": 16}


def _type(ftype: str, name: str, shape: tuple[int, ...], layer: int | None, n_layers: int, tied: bool) -> str:
    """llama.cpp's type for one tensor of a file of type `ftype` (the k-quant row-size fallback included)."""
    if ftype in ("Q4_K_M", "Q8_0", "F16", "Q4_0"):
        return choose_type(ftype, name, shape, layer=layer, n_layers=n_layers, has_output=not tied)
    if len(shape) == 1 or name.endswith(".bias") or "norm" in name or "ffn_gate_inp" in name:
        return "F32"
    if name.startswith(("v.", "mm.")):
        return "F16"
    if ftype == "Q6_K":
        new = "Q6_K"
    elif ftype == "Q4_K_S":
        new = "Q4_K"
        is_output = name == "output.weight" or (tied and name == "token_embd.weight")
        if is_output:
            new = "Q6_K"
        elif layer is not None and ".attn_v." in name and layer < 4:
            new = "Q5_K"
        elif layer is not None and ".ffn_down" in name and layer < n_layers // 8:
            new = "Q5_K"
    else:
        raise ValueError(f"no per-tensor rule for file type {ftype!r}")
    return _KQUANT_FALLBACK.get(new, new) if shape[0] % 256 else new


def _layer(name: str) -> int | None:
    return int(name.split(".")[1]) if name.startswith("blk.") else None


def _typed(a: A.Arch, ftype: str, extra: Iterable[tuple[str, tuple[int, ...]]] = ()) -> list[Tensor]:
    out: list[Tensor] = []
    for name, shape in [*A.tensor_shapes(a), *extra]:
        out.append((name, shape, _type(ftype, name, shape, _layer(name), a.block_count, a.tied_output)))
    return out


def show(arch: str, hparams: dict[str, Any], tensors: Iterable[Tensor], quant: str) -> dict[str, Any]:
    """An /api/show-shaped response: model_info with the GGUF keys, the tensor list, details."""
    info: dict[str, Any] = {"general.architecture": arch}
    info.update({f"{arch}.{k}": v for k, v in hparams.items()})
    return {
        "model_info": info,
        "tensors": [{"name": n, "type": t, "shape": list(sh)} for n, sh, t in tensors],
        "details": {"quantization_level": quant},
    }


def _arch_hparams(a: A.Arch) -> dict[str, Any]:
    h: dict[str, Any] = {
        "block_count": a.block_count,
        "context_length": a.context_length,
        "embedding_length": a.embedding_length,
        "feed_forward_length": a.feed_forward_length,
        "attention.head_count": a.head_count,
        "attention.head_count_kv": a.head_count_kv,
        "vocab_size": a.vocab_size,
    }
    if a.key_length:
        h["attention.key_length"] = a.key_length
        h["attention.value_length"] = a.value_length
    if a.sliding_window:
        h["attention.sliding_window"] = a.sliding_window
    if a.vision_blocks:
        h["vision.block_count"] = a.vision_blocks
        h["vision.embedding_length"] = a.vision_embedding
        h["vision.image_size"] = a.vision_image
        h["vision.patch_size"] = a.vision_patch
    return h


# --- the models ----------------------------------------------------------------------------------------
CATALOG: dict[str, A.Arch] = {  # the models of tuner/models/arch.py, by Ollama name
    "deepseek-r1:32b": A.QWEN2_32B,
    "llama3.1:8b": A.LLAMA31_8B,
    "gemma3:12b": A.GEMMA3_12B,
    "llama3.3:70b": A.LLAMA33_70B,
    "deepseek-r1:671b": A.DEEPSEEK2_671B,
}


@cache
def catalog(model: str, ftype: str = "Q4_K_M") -> ModelSpec:
    """A model whose architecture tuner.models knows (llama3.1:8b, llama3.3:70b, gemma3:12b, deepseek-r1:671b
    ...) in file type `ftype`, with llama.cpp's extra attn_v bits for the 70B."""
    show = gguf.show(CATALOG[model], ftype, is_70b=model.endswith(":70b"))
    return ModelSpec.from_show(show, name=f"{model} {ftype}")


@cache
def gemma3_27b() -> ModelSpec:
    return ModelSpec.from_show(
        show("gemma3", _arch_hparams(GEMMA3_27B), _typed(GEMMA3_27B, "Q4_K_M"), "Q4_K_M"), name="gemma3:27b"
    )


@cache
def qwen25_05b() -> ModelSpec:
    return ModelSpec.from_show(
        show("qwen2", _arch_hparams(QWEN25_05B), _typed(QWEN25_05B, "Q4_K_M"), "Q4_K_M"), name="qwen2.5:0.5b"
    )


@cache
def qwen25_coder_7b() -> ModelSpec:
    a = QWEN25_CODER_7B
    return ModelSpec.from_show(
        show("qwen2", _arch_hparams(a), _typed(a, "Q4_K_M"), "Q4_K_M"), name="qwen2.5-coder:7b"
    )


@cache
def qwen3_32b_q6_k() -> ModelSpec:
    a = QWEN3_32B
    return ModelSpec.from_show(
        show("qwen3", _arch_hparams(a), _typed(a, "Q6_K"), "Q6_K"), name="qwen3:32b-q6_K"
    )


@cache
def granite_8b_code_q4_0() -> ModelSpec:
    a = GRANITE_8B_CODE
    e, f = a.embedding_length, a.feed_forward_length
    extra = []  # attention_bias also covers the output projection; mlp_bias the three FFN matrices
    for i in range(a.block_count):
        p = f"blk.{i}."
        extra += [(p + "attn_output.bias", (e,)), (p + "ffn_gate.bias", (f,)), (p + "ffn_up.bias", (f,))]
        extra += [(p + "ffn_down.bias", (e,))]
    tensors = _typed(a, "Q4_0", extra)
    return ModelSpec.from_show(show("llama", _arch_hparams(a), tensors, "Q4_0"), name="granite-code:8b-128k")


@cache
def mistral_small_31() -> ModelSpec:
    a, v = MISTRAL_SMALL_31, PIXTRAL
    tensors = _typed(a, "Q4_K_M")
    ve, vf = v["embedding"], v["ffn"]
    for i in range(v["blocks"]):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors.append((p + name + ".weight", (ve, ve), "F16"))
        tensors += [(p + "ffn_gate.weight", (ve, vf), "F16"), (p + "ffn_up.weight", (ve, vf), "F16")]
        tensors += [(p + "ffn_down.weight", (vf, ve), "F16")]
        tensors += [(p + "attn_norm.weight", (ve,), "F32"), (p + "ffn_norm.weight", (ve,), "F32")]
    tensors += [
        ("v.patch_conv.weight", (v["patch"], v["patch"], 3, ve), "F16"),
        ("v.encoder_norm.weight", (ve,), "F32"),
        ("mm.norm.weight", (ve,), "F32"),
        ("mm.patch_merger.merging_layer.weight", (4 * ve, ve), "F16"),
        ("mm.linear_1.weight", (ve, a.embedding_length), "F16"),
        ("mm.linear_2.weight", (a.embedding_length, a.embedding_length), "F16"),
    ]
    h = _arch_hparams(a)
    h.update(
        {
            "vision.block_count": v["blocks"],
            "vision.embedding_length": ve,
            "vision.image_size": v["image"],
            "vision.patch_size": v["patch"],
        }
    )
    return ModelSpec.from_show(show("mistral3", h, tensors, "Q4_K_M"), name="mistral-small3.1:24b")


@cache
def gpt_oss(layers: int, experts: int) -> ModelSpec:
    """gpt-oss:20b (24, 32) or gpt-oss:120b (36, 128): MXFP4 experts, 16-bit attention and embeddings."""
    e, heads, kv_heads, hd, ff, vocab = 2880, 64, 8, 64, 2880, 201088
    q, kv = heads * hd, kv_heads * hd
    t: list[Tensor] = [("token_embd.weight", (e, vocab), "BF16")]
    for i in range(layers):
        p = f"blk.{i}."
        t += [
            (p + "attn_norm.weight", (e,), "F32"),
            (p + "attn_q.weight", (e, q), "BF16"),
            (p + "attn_q.bias", (q,), "F32"),
            (p + "attn_k.weight", (e, kv), "BF16"),
            (p + "attn_k.bias", (kv,), "F32"),
            (p + "attn_v.weight", (e, kv), "BF16"),
            (p + "attn_v.bias", (kv,), "F32"),
            (p + "attn_output.weight", (q, e), "BF16"),
            (p + "attn_output.bias", (e,), "F32"),
            (p + "attn_sinks.weight", (heads,), "F32"),
            (p + "post_attention_norm.weight", (e,), "F32"),
            (p + "ffn_gate_inp.weight", (e, experts), "F32"),
            (p + "ffn_gate_inp.bias", (experts,), "F32"),
            (p + "ffn_gate_exps.weight", (e, ff, experts), "MXFP4"),
            (p + "ffn_gate_exps.bias", (ff, experts), "F32"),
            (p + "ffn_up_exps.weight", (e, ff, experts), "MXFP4"),
            (p + "ffn_up_exps.bias", (ff, experts), "F32"),
            (p + "ffn_down_exps.weight", (ff, e, experts), "MXFP4"),
            (p + "ffn_down_exps.bias", (e, experts), "F32"),
        ]
    t += [("output_norm.weight", (e,), "F32"), ("output.weight", (e, vocab), "BF16")]
    h = {
        "block_count": layers,
        "context_length": 131072,
        "embedding_length": e,
        "feed_forward_length": ff,
        "attention.head_count": heads,
        "attention.head_count_kv": kv_heads,
        "attention.key_length": hd,
        "attention.value_length": hd,
        "attention.sliding_window": 128,
        "expert_count": experts,
        "expert_used_count": 4,
        "expert_feed_forward_length": ff,
        "vocab_size": vocab,
    }
    size = "20b" if layers == 24 else "120b"
    return ModelSpec.from_show(show("gptoss", h, t, "MXFP4"), name=f"gpt-oss:{size}")


@cache
def deepseek_v2_lite_q4_k_s() -> ModelSpec:
    """deepseek-v2:16b-lite-chat-q4_K_S as llama.cpp quantized it in 2024 (pre-MLA cache: 16 x (192 + 128))."""
    e, heads, blocks, vocab = 2048, 16, 27, 102400
    ff, ffe, n_exp, shared, lora, nope, rope, vdim = 10944, 1408, 64, 2, 512, 128, 64, 128
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (e, vocab))]
    for i in range(blocks):
        p = f"blk.{i}."
        shapes += [
            (p + "attn_norm.weight", (e,)),
            (p + "attn_q.weight", (e, heads * (nope + rope))),
            (p + "attn_kv_a_mqa.weight", (e, lora + rope)),
            (p + "attn_kv_a_norm.weight", (lora,)),
            (p + "attn_kv_b.weight", (lora, heads * (nope + vdim))),
            (p + "attn_output.weight", (heads * vdim, e)),
            (p + "ffn_norm.weight", (e,)),
        ]
        if i == 0:
            shapes += [
                (p + "ffn_gate.weight", (e, ff)),
                (p + "ffn_up.weight", (e, ff)),
                (p + "ffn_down.weight", (ff, e)),
            ]
        else:
            fs = ffe * shared
            shapes += [
                (p + "ffn_gate_inp.weight", (e, n_exp)),
                (p + "ffn_gate_exps.weight", (e, ffe, n_exp)),
                (p + "ffn_up_exps.weight", (e, ffe, n_exp)),
                (p + "ffn_down_exps.weight", (ffe, e, n_exp)),
                (p + "ffn_gate_shexp.weight", (e, fs)),
                (p + "ffn_up_shexp.weight", (e, fs)),
                (p + "ffn_down_shexp.weight", (fs, e)),
            ]
    shapes += [("output_norm.weight", (e,)), ("output.weight", (e, vocab))]
    tensors = [(n, sh, _type("Q4_K_S", n, sh, _layer(n), blocks, False)) for n, sh in shapes]
    h = {
        "block_count": blocks,
        "context_length": 163840,
        "embedding_length": e,
        "feed_forward_length": ff,
        "attention.head_count": heads,
        "attention.head_count_kv": heads,
        "attention.key_length": nope + rope,
        "attention.value_length": vdim,
        "attention.kv_lora_rank": lora,
        "leading_dense_block_count": 1,
        "expert_count": n_exp,
        "expert_used_count": 6,
        "expert_shared_count": shared,
        "expert_feed_forward_length": ffe,
        "vocab_size": vocab,
    }
    return ModelSpec.from_show(
        show("deepseek2", h, tensors, "Q4_K_S"), name="deepseek-v2:16b-lite-chat-q4_K_S"
    )


@cache
def glm45_air_q8_0() -> ModelSpec:
    """GLM-4.5-Air in Q8_0 as llama.cpp converts it: 46 layers + the next-token (MTP) layer as blk.46.

    Layer 0 is dense; blk.46 carries, besides a MoE layer, its own embedding, head and eh_proj (the `nextn.*`
    tensors), which Ollama counts in that layer.
    """
    e, heads, kv_heads, hd, ff, ffe, n_exp, vocab = 4096, 96, 8, 128, 10944, 1408, 128, 151552
    q, kv = heads * hd, kv_heads * hd
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (e, vocab))]
    for i in range(47):
        p = f"blk.{i}."
        shapes += [
            (p + "attn_norm.weight", (e,)),
            (p + "attn_q.weight", (e, q)),
            (p + "attn_q.bias", (q,)),
            (p + "attn_k.weight", (e, kv)),
            (p + "attn_k.bias", (kv,)),
            (p + "attn_v.weight", (e, kv)),
            (p + "attn_v.bias", (kv,)),
            (p + "attn_output.weight", (q, e)),
            (p + "post_attention_norm.weight", (e,)),
        ]
        if i == 0:
            shapes += [
                (p + "ffn_gate.weight", (e, ff)),
                (p + "ffn_up.weight", (e, ff)),
                (p + "ffn_down.weight", (ff, e)),
            ]
        else:
            shapes += [
                (p + "ffn_gate_inp.weight", (e, n_exp)),
                (p + "exp_probs_b.bias", (n_exp,)),
                (p + "ffn_gate_exps.weight", (e, ffe, n_exp)),
                (p + "ffn_up_exps.weight", (e, ffe, n_exp)),
                (p + "ffn_down_exps.weight", (ffe, e, n_exp)),
                (p + "ffn_gate_shexp.weight", (e, ffe)),
                (p + "ffn_up_shexp.weight", (e, ffe)),
                (p + "ffn_down_shexp.weight", (ffe, e)),
            ]
        if i == 46:
            shapes += [
                (p + "nextn.eh_proj.weight", (2 * e, e)),
                (p + "nextn.embed_tokens.weight", (e, vocab)),
                (p + "nextn.enorm.weight", (e,)),
                (p + "nextn.hnorm.weight", (e,)),
                (p + "nextn.shared_head_head.weight", (e, vocab)),
                (p + "nextn.shared_head_norm.weight", (e,)),
            ]
    shapes += [("output_norm.weight", (e,)), ("output.weight", (e, vocab))]
    tensors = [
        (n, sh, "F32" if len(sh) == 1 or n.endswith(".bias") or "ffn_gate_inp" in n else "Q8_0")
        for n, sh in shapes
    ]
    h = {
        "block_count": 47,
        "context_length": 131072,
        "embedding_length": e,
        "feed_forward_length": ff,
        "attention.head_count": heads,
        "attention.head_count_kv": kv_heads,
        "attention.key_length": hd,
        "attention.value_length": hd,
        "leading_dense_block_count": 1,
        "expert_count": n_exp,
        "expert_used_count": 8,
        "expert_shared_count": 1,
        "expert_feed_forward_length": ffe,
        "vocab_size": vocab,
    }
    return ModelSpec.from_show(show("glm4moe", h, tensors, "Q8_0"), name="GLM-4.5-Air (inferred)")
