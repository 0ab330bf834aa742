from __future__ import annotations

import re
from collections import Counter

import pytest

from tuner.estimate.ggml import tensor_bytes
from tuner.sim.catalog import CATALOG_NAMES, DEFAULT_TAGS, lookup
from tuner.sim.modelinfo import model_info

# Sizes ollama.com lists for each tag, in GB (10^9 bytes).
OLLAMA_SIZES_GB = {
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
    }
    assert len(CATALOG_NAMES) == 22


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
