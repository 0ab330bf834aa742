"""Model architectures (the GGUF hyper-parameters) and the GGUF tensor list each one implies.

The numbers are the real ones, from each model's Hugging Face config.json and the GGUF metadata Ollama
serves (checked, not guessed):

* deepseek-r1:32b = DeepSeek-R1-Distill-Qwen-32B, qwen2: 64 blocks, emb 5120, ffn 27648, 40 heads, 8 KV heads,
  vocab 152064, ctx 131072, rope 1e6, untied output, q/k/v biases.
* llama3.1:8b: 32 blocks, emb 4096, ffn 14336, 32/8 heads, vocab 128256, ctx 131072, rope 500000.
* llama3.3:70b: 80 blocks, emb 8192, ffn 28672, 64/8 heads, vocab 128256, ctx 131072.
* gemma3:12b: 48 blocks, emb 3840, ffn 15360, 16/8 heads, key/value length 256, sliding window 1024 on 5 of
  every 6 layers, vocab 262144, ctx 131072, tied output (token_embd doubles as output), q/k norms and
  post-norms, plus a 27-block SigLIP vision tower (F16) in the same file.
* deepseek-r1:671b (deepseek2): 61 blocks, emb 7168, 128 heads, MLA (q_lora 1536, kv_lora 512, rope dim 64,
  key 192 = 128 + 64, value 128), 3 leading dense blocks (ffn 18432), then MoE: 256 routed experts of 2048,
  8 used, 1 shared; vocab 129280, ctx 163840. Ollama's GGUF predates llama.cpp's MLA cache layout
  (no `key_length_mla`), so it stores head_count_kv 128 / key 192 / value 128 and llama.cpp allocates the
  full per-head K and V cache for it (9.5 GiB at 2048 tokens, as Ollama's own logs show).

Added for the search benchmark's breadth (each from the official Hugging Face config.json of the model the
Ollama tag packages; https://huggingface.co/<repo>/blob/main/config.json):

* qwen2.5:7b/14b/32b/72b = Qwen/Qwen2.5-{7B,14B,32B,72B}-Instruct, qwen2 with q/k/v biases, rope 1e6,
  rms 1e-6, vocab 152064, untied; Ollama's files carry context 32768 (max_position_embeddings):
  7B: 28 blocks, emb 3584, ffn 18944, 28/4 heads; 14B: 48, 5120, 13824, 40/8; 32B: 64, 5120, 27648, 40/8;
  72B: 80, 8192, 29568, 64/8.
* phi4:14b = microsoft/phi-4 (Phi3ForCausalLM, GGUF arch phi3): 40 blocks, emb 5120, ffn 17920, 40/10 heads,
  vocab 100352, ctx 16384, rope 250000; fused attn_qkv and a fused gate+up ffn_up, as llama.cpp converts it.
* gemma3:27b = google/gemma-3-27b-it: 62 blocks, emb 5376, ffn 21504, 32/16 heads, head_dim 128, sliding
  window 1024 on 5 of every 6 layers, ctx 131072, the same SigLIP tower as gemma3:12b (27 x 1152/4304).
* mistral-small:24b = mistralai/Mistral-Small-24B-Instruct-2501 (llama): 40 blocks, emb 5120, ffn 32768,
  32/8 heads, head_dim 128, vocab 131072, ctx 32768, rope 1e8.
* mixtral:8x7b = mistralai/Mixtral-8x7B-Instruct-v0.1 (GGUF arch llama with experts): 32 blocks, emb 4096,
  expert ffn 14336, 32/8 heads, vocab 32000, ctx 32768, rope 1e6, 8 experts, 2 used per token, no shared one.
* qwen3:30b-a3b = Qwen/Qwen3-30B-A3B (qwen3moe): 48 blocks, emb 2048, 32/4 heads, head_dim 128, q/k norms,
  128 experts of 768, 8 used, vocab 151936, ctx 40960, rope 1e6.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Arch:
    name: str  # GGUF general.architecture
    block_count: int
    context_length: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    vocab_size: int
    key_length: int = 0  # 0 = embedding_length / head_count
    value_length: int = 0
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    tied_output: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False  # gemma3 attn_q_norm / attn_k_norm
    post_norms: bool = False  # gemma3 post_attention_norm / post_ffw_norm
    rope_freqs: bool = False  # llama3.1 rope_freqs tensor
    sliding_window: int = 0
    sliding_pattern: int = 0  # every Nth layer is global
    # MoE / MLA (deepseek2)
    expert_count: int = 0
    expert_used_count: int = 0
    expert_shared_count: int = 0
    expert_ff_length: int = 0
    leading_dense_block_count: int = 0
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    rope_dim: int = 0
    # vision tower stored in the same file (gemma3)
    vision_blocks: int = 0
    vision_embedding: int = 0
    vision_ff: int = 0
    vision_image: int = 0
    vision_patch: int = 0
    # phi3: one attn_qkv matrix, and ffn_up holds gate and up (2 x feed_forward_length)
    fused_qkv: bool = False
    extra_kv: dict[str, object] = field(default_factory=dict)

    @property
    def head_dim_k(self) -> int:
        return self.key_length or self.embedding_length // self.head_count

    @property
    def head_dim_v(self) -> int:
        return self.value_length or self.embedding_length // self.head_count

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 0

    def is_sliding(self, layer: int) -> bool:
        return bool(self.sliding_window and self.sliding_pattern and (layer + 1) % self.sliding_pattern)

    def is_moe_layer(self, layer: int) -> bool:
        return self.is_moe and layer >= self.leading_dense_block_count


QWEN2_32B = Arch(
    "qwen2", 64, 131072, 5120, 27648, 40, 8, 152064, rope_freq_base=1e6, rms_eps=1e-5, qkv_bias=True
)
LLAMA31_8B = Arch("llama", 32, 131072, 4096, 14336, 32, 8, 128256, rope_freq_base=500000.0, rope_freqs=True)
LLAMA33_70B = Arch("llama", 80, 131072, 8192, 28672, 64, 8, 128256, rope_freq_base=500000.0, rope_freqs=True)
GEMMA3_12B = Arch(
    "gemma3",
    48,
    131072,
    3840,
    15360,
    16,
    8,
    262144,
    key_length=256,
    value_length=256,
    rope_freq_base=1e6,
    rms_eps=1e-6,
    tied_output=True,
    qk_norm=True,
    post_norms=True,
    sliding_window=1024,
    sliding_pattern=6,
    vision_blocks=27,
    vision_embedding=1152,
    vision_ff=4304,
    vision_image=896,
    vision_patch=14,
)
DEEPSEEK2_671B = Arch(
    "deepseek2",
    61,
    163840,
    7168,
    18432,
    128,
    128,
    129280,
    key_length=192,
    value_length=128,
    rope_freq_base=10000.0,
    rms_eps=1e-6,
    expert_count=256,
    expert_used_count=8,
    expert_shared_count=1,
    expert_ff_length=2048,
    leading_dense_block_count=3,
    q_lora_rank=1536,
    kv_lora_rank=512,
    rope_dim=64,
)


def _qwen25(blocks: int, emb: int, ffn: int, heads: int, kv: int) -> Arch:
    return Arch(
        "qwen2", blocks, 32768, emb, ffn, heads, kv, 152064, rope_freq_base=1e6, rms_eps=1e-6, qkv_bias=True
    )


QWEN25_7B = _qwen25(28, 3584, 18944, 28, 4)
QWEN25_14B = _qwen25(48, 5120, 13824, 40, 8)
QWEN25_32B = _qwen25(64, 5120, 27648, 40, 8)
QWEN25_72B = _qwen25(80, 8192, 29568, 64, 8)
PHI4_14B = Arch("phi3", 40, 16384, 5120, 17920, 40, 10, 100352, rope_freq_base=250000.0, fused_qkv=True)
GEMMA3_27B = replace(
    GEMMA3_12B, block_count=62, embedding_length=5376, feed_forward_length=21504, head_count=32,
    head_count_kv=16, key_length=128, value_length=128,
)  # fmt: skip
MISTRAL_SMALL_24B = Arch(
    "llama", 40, 32768, 5120, 32768, 32, 8, 131072, key_length=128, value_length=128, rope_freq_base=1e8
)
MIXTRAL_8X7B = Arch(
    "llama", 32, 32768, 4096, 14336, 32, 8, 32000, rope_freq_base=1e6, expert_count=8, expert_used_count=2,
    expert_ff_length=14336,
)  # fmt: skip
QWEN3_30B_A3B = Arch(
    "qwen3moe", 48, 40960, 2048, 6144, 32, 4, 151936, key_length=128, value_length=128, rope_freq_base=1e6,
    rms_eps=1e-6, qk_norm=True, expert_count=128, expert_used_count=8, expert_ff_length=768,
)  # fmt: skip

Tensor = tuple[str, tuple[int, ...]]  # name, shape (GGUF order: ne0 first)


def _block_tensors(a: Arch, i: int) -> list[Tensor]:
    e, p = a.embedding_length, f"blk.{i}."
    out: list[Tensor] = [(p + "attn_norm.weight", (e,))]
    if a.name == "deepseek2":
        qk = a.head_dim_k  # 192 = nope 128 + rope 64
        nope = qk - a.rope_dim
        out += [
            (p + "attn_q_a.weight", (e, a.q_lora_rank)),
            (p + "attn_q_a_norm.weight", (a.q_lora_rank,)),
            (p + "attn_q_b.weight", (a.q_lora_rank, a.head_count * qk)),
            (p + "attn_kv_a_mqa.weight", (e, a.kv_lora_rank + a.rope_dim)),
            (p + "attn_kv_a_norm.weight", (a.kv_lora_rank,)),
            (p + "attn_kv_b.weight", (a.kv_lora_rank, a.head_count * (nope + a.head_dim_v))),
            (p + "attn_output.weight", (a.head_count * a.head_dim_v, e)),
        ]
    elif a.fused_qkv:
        q = a.head_count * a.head_dim_k
        kv = a.head_count_kv * a.head_dim_k
        out += [(p + "attn_qkv.weight", (e, q + 2 * kv)), (p + "attn_output.weight", (q, e))]
    else:
        q = a.head_count * a.head_dim_k
        kv = a.head_count_kv * a.head_dim_k
        out += [(p + "attn_q.weight", (e, q)), (p + "attn_k.weight", (e, kv)), (p + "attn_v.weight", (e, kv))]
        if a.qkv_bias:
            out += [(p + "attn_q.bias", (q,)), (p + "attn_k.bias", (kv,)), (p + "attn_v.bias", (kv,))]
        if a.qk_norm:
            out += [(p + "attn_q_norm.weight", (a.head_dim_k,)), (p + "attn_k_norm.weight", (a.head_dim_k,))]
        out.append((p + "attn_output.weight", (q, e)))
        if a.post_norms:
            out.append((p + "post_attention_norm.weight", (e,)))
    out.append((p + "ffn_norm.weight", (e,)))
    if a.is_moe_layer(i):
        f, n = a.expert_ff_length, a.expert_count
        fs = f * a.expert_shared_count
        out.append((p + "ffn_gate_inp.weight", (e, n)))
        if a.name == "deepseek2":
            out.append((p + "exp_probs_b.bias", (n,)))
        out += [
            (p + "ffn_gate_exps.weight", (e, f, n)),
            (p + "ffn_up_exps.weight", (e, f, n)),
            (p + "ffn_down_exps.weight", (f, e, n)),
        ]
        if fs:
            out += [
                (p + "ffn_gate_shexp.weight", (e, fs)),
                (p + "ffn_up_shexp.weight", (e, fs)),
                (p + "ffn_down_shexp.weight", (fs, e)),
            ]
    elif a.fused_qkv:  # phi3: gate and up in one matrix
        f = a.feed_forward_length
        out += [(p + "ffn_up.weight", (e, 2 * f)), (p + "ffn_down.weight", (f, e))]
    else:
        f = a.feed_forward_length
        out += [
            (p + "ffn_gate.weight", (e, f)),
            (p + "ffn_up.weight", (e, f)),
            (p + "ffn_down.weight", (f, e)),
        ]
    if a.post_norms:
        out.append((p + "post_ffw_norm.weight", (e,)))
    return out


def _vision_tensors(a: Arch) -> list[Tensor]:
    v, f = a.vision_embedding, a.vision_ff
    out: list[Tensor] = []
    for i in range(a.vision_blocks):
        p = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            out += [(p + name + ".weight", (v, v)), (p + name + ".bias", (v,))]
        out += [
            (p + "ln1.weight", (v,)),
            (p + "ln1.bias", (v,)),
            (p + "ln2.weight", (v,)),
            (p + "ln2.bias", (v,)),
            (p + "ffn_up.weight", (v, f)),
            (p + "ffn_up.bias", (f,)),
            (p + "ffn_down.weight", (f, v)),
            (p + "ffn_down.bias", (v,)),
        ]
    patches = (a.vision_image // a.vision_patch) ** 2
    out += [
        ("v.patch_embd.weight", (a.vision_patch, a.vision_patch, 3, v)),
        ("v.patch_embd.bias", (v,)),
        ("v.position_embd.weight", (v, patches)),
        ("v.post_layernorm.weight", (v,)),
        ("v.post_layernorm.bias", (v,)),
        ("mm.mm_input_projection.weight", (v, a.embedding_length)),
        ("mm.mm_soft_emb_norm.weight", (v,)),
    ]
    return out


def tensor_shapes(a: Arch) -> list[Tensor]:
    """Every tensor of the model file, in file order."""
    out: list[Tensor] = [("token_embd.weight", (a.embedding_length, a.vocab_size))]
    if a.rope_freqs:
        out.append(("rope_freqs.weight", (a.head_dim_k // 2,)))
    for i in range(a.block_count):
        out += _block_tensors(a, i)
    out.append(("output_norm.weight", (a.embedding_length,)))
    if not a.tied_output:
        out.append(("output.weight", (a.embedding_length, a.vocab_size)))
    if a.vision_blocks:
        out += _vision_tensors(a)
    return out
