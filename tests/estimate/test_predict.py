"""The estimator from /api/show: exact weights, the attention shapes real models have, and predict()."""

from __future__ import annotations

import copy

from tests.estimate.specs import spec
from tuner.estimate import ModelSpec, Request, max_num_gpu, predict
from tuner.estimate.llamacpp import kv_layer_bytes
from tuner.sim import Simulation
from tuner.sim.catalog import lookup
from tuner.sim.modelinfo import details, model_info
from tuner.units import GiB, MiB


def show_of(tag: str) -> dict:
    mf = lookup(tag)
    return {
        "model_info": model_info(mf),
        "tensors": [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in mf.tensors],
        "details": details(mf),
    }


def test_weights_are_exact_from_the_tensor_list() -> None:
    mf = lookup("deepseek-r1:32b-qwen-distill-q8_0")
    s = spec("deepseek-r1:32b-qwen-distill-q8_0")
    assert s.layer_bytes == mf.layer_bytes and s.output_bytes == mf.output_bytes
    assert s.weights_bytes == sum(t.nbytes for t in mf.tensors)
    assert (s.head_count, s.head_count_kv[0], s.key_length, s.block_count) == (40, 8, 128, 64)


def test_mixture_of_experts_counts_every_expert() -> None:
    s = spec("deepseek-r1:671b")
    dense, moe = s.layer_bytes[0], s.layer_bytes[10]
    assert s.is_moe and moe > 15 * dense  # 256 routed experts are all resident
    assert (
        s.layer_max_matrix_bytes[10] > 5 * s.layer_bytes[0]
    )  # one stacked expert tensor dwarfs a dense layer


def test_mla_file_keeps_only_the_compressed_latent() -> None:
    show = copy.deepcopy(show_of("deepseek-r1:671b"))
    info = show["model_info"]
    pre_mla = ModelSpec.from_show(show)
    info["deepseek2.attention.head_count_kv"] = 1
    info["deepseek2.attention.key_length"] = 576  # kv_lora_rank 512 + rope 64
    info["deepseek2.attention.value_length"] = 512
    mla = ModelSpec.from_show(show)
    full, latent = kv_layer_bytes(pre_mla, 5, 4096), kv_layer_bytes(mla, 5, 4096)
    assert full == 4096 * 128 * (192 + 128) * 2
    assert latent == 4096 * (576 + 512) * 2 and full / latent > 37


def test_grouped_query_attention_from_the_tensors_when_the_array_is_null() -> None:
    show = copy.deepcopy(show_of("llama3.1:8b"))
    show["model_info"]["llama.attention.head_count_kv"] = None  # a per-layer array without verbose
    s = ModelSpec.from_show(show)
    assert s.head_count_kv == (8,) * 32


def test_sliding_window_layers_and_kv_types() -> None:
    g = spec("gemma3:12b")
    assert g.sliding_window == 1024 and sum(g.sliding) == 40 and not g.sliding[5]
    l8 = spec("llama3.1:8b")
    f16, q8, q4 = (kv_layer_bytes(l8, 0, 4096, t) for t in ("f16", "q8_0", "q4_0"))
    assert f16 == 16 * MiB and q8 == f16 * 34 // 64 and q4 == f16 * 18 // 64


def test_the_simulator_is_the_estimator_when_its_hidden_error_is_off() -> None:
    exact = Simulation("2xRTX4090", noise=0, estimator_error=0)
    noisy = Simulation("2xRTX4090", noise=0)
    s = spec("llama3.3:70b")
    free = exact.free_gpu_bytes()
    for n in (40, 70, 81):
        pred = predict(s, free, Request(num_ctx=4096, num_gpu=n))
        truth = exact.plan("llama3.3:70b", n, 4096)
        assert list(pred.gpu_bytes) == list(truth.gpu_bytes) and pred.offloaded == truth.offloaded
        off = noisy.plan("llama3.3:70b", n, 4096)
        # weights and KV are exact; only compute buffers and the CUDA context carry the hidden error
        for name, b in truth.breakdown.items():
            if name != "CPU":
                assert off.breakdown[name]["weights"] == b["weights"] and off.breakdown[name]["kv"] == b["kv"]
        assert off.gpu_bytes != truth.gpu_bytes


def test_max_num_gpu_is_the_edge_of_what_fits() -> None:
    s = spec("llama3.3:70b-instruct-q8_0")
    free = [23 * GiB, 23 * GiB]
    for margin in (1.0, 1.5):
        n, p = max_num_gpu(s, free, Request(num_ctx=8192), margin=margin)
        assert 0 < n < s.max_layers and p.fits(free, margin)
        assert not predict(s, free, Request(num_ctx=8192, num_gpu=n + 1)).fits(free, margin)
    assert (
        max_num_gpu(s, free, Request(num_ctx=8192), margin=1.5)[0]
        <= max_num_gpu(s, free, Request(num_ctx=8192))[0]
    )
