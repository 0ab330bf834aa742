from __future__ import annotations

import re
from collections import Counter

import pytest

from tuner.estimate.ggml import tensor_bytes
from tuner.sim.catalog import CATALOG_NAMES, DEFAULT_TAGS, lookup
from tuner.sim.modelinfo import model_info

# Sizes ollama.com lists for each tag, in GB (10^9 bytes); the tags added for the search benchmark as the
# library's tag pages show them (scraped daily in github.com/D3rhami/ollama_gallery, data/tags/<model>.json,
# commit 5d4b656, 2026-07-15).
OLLAMA_SIZES_GB = {
    "qwen2.5:7b-instruct-q4_K_M": 4.7,
    "qwen2.5:7b-instruct-q8_0": 8.1,
    "qwen2.5:7b-instruct-fp16": 15,
    "qwen2.5:14b-instruct-q4_K_M": 9.0,
    "qwen2.5:14b-instruct-q8_0": 16,
    "qwen2.5:14b-instruct-fp16": 30,
    "qwen2.5:32b-instruct-q4_K_M": 20,
    "qwen2.5:32b-instruct-q8_0": 35,
    "qwen2.5:32b-instruct-fp16": 66,
    "qwen2.5:72b-instruct-q4_K_M": 47,
    "qwen2.5:72b-instruct-q8_0": 77,
    "qwen2.5:72b-instruct-fp16": 145,
    "phi4:14b-q4_K_M": 9.1,
    "phi4:14b-q8_0": 16,
    "phi4:14b-fp16": 29,
    "gemma3:27b-it-q4_K_M": 17,
    "gemma3:27b-it-q8_0": 30,
    "gemma3:27b-it-fp16": 55,
    "mistral-small:24b-instruct-2501-q4_K_M": 14,
    "mistral-small:24b-instruct-2501-q8_0": 25,
    "mistral-small:24b-instruct-2501-fp16": 47,
    "mixtral:8x7b-instruct-v0.1-q4_0": 26,
    "mixtral:8x7b-instruct-v0.1-q4_K_M": 28,
    "mixtral:8x7b-instruct-v0.1-q8_0": 50,
    "mixtral:8x7b-instruct-v0.1-fp16": 93,
    "qwen3:30b-a3b-q4_K_M": 19,
    "qwen3:30b-a3b-q8_0": 33,
    "qwen3:30b-a3b-fp16": 61,
    "deepseek-r1:32b-qwen-distill-q4_K_M": 20,
    "deepseek-r1:32b-qwen-distill-q8_0": 35,
    "deepseek-r1:32b-qwen-distill-fp16": 66,
    "llama3.1:8b-instruct-q4_K_M": 4.9,
    "llama3.1:8b-instruct-q8_0": 8.5,
    "llama3.1:8b-instruct-fp16": 16,
    "gemma3:12b-it-q4_K_M": 8.1,
    "gemma3:12b-it-q8_0": 13,
    "gemma3:12b-it-fp16": 24,
    "llama3.3:70b-instruct-q4_K_M": 43,
    "llama3.3:70b-instruct-q8_0": 75,
    "llama3.3:70b-instruct-fp16": 141,
    "deepseek-r1:671b-q4_K_M": 404,
    "deepseek-r1:671b-q8_0": 713,
    "deepseek-r1:671b-fp16": 1342,
}


@pytest.mark.parametrize("tag", sorted(OLLAMA_SIZES_GB))
def test_file_sizes_land_within_three_percent_of_ollama(tag: str) -> None:
    mf = lookup(tag)
    assert mf is not None and mf.tag == tag
    assert mf.file_bytes / 1e9 == pytest.approx(OLLAMA_SIZES_GB[tag], rel=0.03)


def test_ggml_block_sizes_are_exact() -> None:
    assert tensor_bytes("Q4_K", (256,)) == 144
    assert tensor_bytes("Q6_K", (256,)) == 210
    assert tensor_bytes("Q8_0", (32,)) == 34
    assert tensor_bytes("Q4_0", (32,)) == 18
    assert tensor_bytes("F16", (10,)) == 20 and tensor_bytes("F32", (10,)) == 40


def test_names_aliases_and_defaults() -> None:
    assert lookup("deepseek-r1:32b") is lookup("deepseek-r1:32b-qwen-distill-q4_K_M")
    assert lookup("LLAMA3.1:8B") is lookup("llama3.1:8b-instruct-q4_K_M")
    assert lookup("llama3.1") is lookup("llama3.1:8b")  # ':latest'
    assert lookup("registry.ollama.ai/library/gemma3:12b") is lookup("gemma3:12b-it-q4_K_M")
    assert lookup("mistral:7b") is None
    assert set(DEFAULT_TAGS) == {
        "deepseek-r1:32b",
        "llama3.1:8b",
        "gemma3:12b",
        "llama3.3:70b",
        "deepseek-r1:671b",
        "qwen2.5:7b",
        "qwen2.5:14b",
        "qwen2.5:32b",
        "qwen2.5:72b",
        "phi4:14b",
        "gemma3:27b",
        "mistral-small:24b",
        "mixtral:8x7b",
        "qwen3:30b-a3b",
    }
    assert len(CATALOG_NAMES) == 63
    assert lookup("mixtral:8x7b") is lookup("mixtral:8x7b-instruct-v0.1-q4_0")  # the library's default
    assert lookup("qwen2.5") is lookup("qwen2.5:7b-instruct-q4_K_M")


def test_q4_k_m_mixes_q4_k_with_q6_k_like_llama_cpp() -> None:
    mf = lookup("llama3.1:8b")
    types = {t.name: t.type for t in mf.tensors}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["rope_freqs.weight"] == "F32"
    v = Counter(types[f"blk.{i}.attn_v.weight"] for i in range(32))
    down = Counter(types[f"blk.{i}.ffn_down.weight"] for i in range(32))
    assert v == down == Counter({"Q6_K": 16, "Q4_K": 16})  # use_more_bits: first/last eighth + every third
    assert types["blk.0.attn_v.weight"] == "Q6_K" and types["blk.5.attn_v.weight"] == "Q4_K"
    assert {types[n] for n in types if n.endswith("attn_q.weight")} == {"Q4_K"}
    seventy = {t.name: t.type for t in lookup("llama3.3:70b").tensors}
    assert seventy["blk.20.attn_v.weight"] == "Q5_K"  # the 70B rule
    q8 = {t.type for t in lookup("llama3.1:8b-instruct-q8_0").tensors}
    assert q8 == {"Q8_0", "F32"}
    assert {t.type for t in lookup("llama3.1:8b-instruct-fp16").tensors} == {"F16", "F32"}


def test_known_ollama_log_figures() -> None:
    # memory.weights.nonrepeating in Ollama's logs: 411.0 MiB (8b q4_K_M), 532.3 MiB (8b q8_0),
    # 787.5 MiB (gemma3:12b, tied output), 725.0 MiB (671b q4_K_M); one 671b q4_K_M MoE layer is the
    # 7106.67 MiB CUDA0 buffer llama.cpp printed for it.
    mib = 2**20
    assert round(lookup("llama3.1:8b").output_bytes / mib, 1) == 411.0
    assert round(lookup("llama3.1:8b-instruct-q8_0").output_bytes / mib, 1) == 532.3
    assert round(lookup("gemma3:12b").output_bytes / mib, 1) == 787.5
    assert round(lookup("deepseek-r1:671b").output_bytes / mib, 1) == 725.0
    assert lookup("deepseek-r1:671b").layer_bytes[60] / mib == pytest.approx(7106.67, abs=1)


def test_architectures_are_the_real_ones() -> None:
    r1 = lookup("deepseek-r1:671b").arch
    assert (r1.name, r1.block_count, r1.context_length, r1.leading_dense_block_count) == (
        "deepseek2",
        61,
        163840,
        3,
    )
    assert (r1.expert_count, r1.expert_used_count, r1.expert_shared_count) == (256, 8, 1)
    assert (r1.kv_lora_rank, r1.q_lora_rank, r1.key_length, r1.value_length) == (512, 1536, 192, 128)
    names = {t.name: t.shape for t in lookup("deepseek-r1:671b").tensors}
    assert names["blk.3.ffn_gate_exps.weight"] == (7168, 2048, 256)
    assert "blk.2.ffn_gate.weight" in names and "blk.2.ffn_gate_exps.weight" not in names
    distill = lookup("deepseek-r1:32b").arch
    assert (distill.name, distill.block_count, distill.head_count, distill.head_count_kv) == (
        "qwen2",
        64,
        40,
        8,
    )
    gemma = lookup("gemma3:12b")
    assert gemma.arch.tied_output and not any(t.name == "output.weight" for t in gemma.tensors)
    assert [gemma.arch.is_sliding(i) for i in range(6)] == [True] * 5 + [False]
    assert lookup("deepseek-r1:671b").active_parameter_count == pytest.approx(37.6e9, rel=0.02)


@pytest.mark.parametrize(
    ("tag", "total", "active"),
    [  # the parameter counts the model cards state
        ("mixtral:8x7b", 46.7e9, 12.9e9),
        ("qwen3:30b-a3b", 30.5e9, 3.3e9),
        ("qwen2.5:72b", 72.7e9, 72.7e9),
        ("phi4:14b", 14.7e9, 14.7e9),
    ],
)
def test_moe_and_dense_parameter_counts(tag: str, total: float, active: float) -> None:
    mf = lookup(tag)
    assert mf.parameter_count == pytest.approx(total, rel=0.02)
    assert mf.active_parameter_count == pytest.approx(active, rel=0.03)


def test_new_families_have_their_tensor_layouts() -> None:
    mixtral = {t.name: t for t in lookup("mixtral:8x7b-instruct-v0.1-q4_K_M").tensors}
    assert mixtral["blk.0.ffn_up_exps.weight"].shape == (4096, 14336, 8)
    assert "blk.0.ffn_gate_shexp.weight" not in mixtral and "blk.0.exp_probs_b.bias" not in mixtral
    assert mixtral["blk.5.attn_v.weight"].type == "Q8_0"  # llama.cpp's 8-expert rule
    qwen3 = {t.name: t.shape for t in lookup("qwen3:30b-a3b").tensors}
    assert qwen3["blk.0.ffn_down_exps.weight"] == (768, 2048, 128)
    assert qwen3["blk.0.attn_q.weight"] == (2048, 4096) and "blk.0.attn_q_norm.weight" in qwen3
    phi = {t.name: t for t in lookup("phi4:14b").tensors}
    assert phi["blk.0.attn_qkv.weight"].shape == (5120, 5120 + 2 * 1280)
    assert phi["blk.0.ffn_up.weight"].shape == (5120, 2 * 17920) and "blk.0.ffn_gate.weight" not in phi
    info = model_info(lookup("qwen3:30b-a3b"))
    assert info["qwen3moe.expert_count"] == 128 and info["qwen3moe.expert_feed_forward_length"] == 768


def test_model_info_and_details() -> None:
    info = model_info(lookup("gemma3:12b"))
    assert info["general.architecture"] == "gemma3" and info["gemma3.block_count"] == 48
    assert info["gemma3.attention.key_length"] == info["gemma3.attention.value_length"] == 256
    assert info["gemma3.attention.sliding_window"] == 1024
    assert info["tokenizer.ggml.tokens"] is None and "general.name" not in info
    verbose = model_info(lookup("llama3.1:8b"), verbose=True)
    assert len(verbose["tokenizer.ggml.tokens"]) == 128256
    r1 = model_info(lookup("deepseek-r1:671b-q8_0"))
    assert r1["deepseek2.expert_count"] == 256 and r1["deepseek2.attention.head_count_kv"] == 128
    assert r1["general.file_type"] == 7


def test_digests_are_stable_hex() -> None:
    for name in CATALOG_NAMES:
        mf = lookup(name)
        assert re.fullmatch(r"[0-9a-f]{64}", mf.digest) and re.fullmatch(r"[0-9a-f]{64}", mf.blob_digest)
    assert lookup("deepseek-r1:32b").digest == lookup("deepseek-r1:32b-qwen-distill-q4_K_M").digest
