"""The pure core: placement, true allocation, load failures and speed, without HTTP."""

from __future__ import annotations

import pytest

from tuner.errors import is_out_of_memory
from tuner.sim import Simulation
from tuner.units import GiB


def test_default_context_and_caps_follow_the_version() -> None:
    assert Simulation("1x24GiB", version="0.6.2").default_num_ctx == 2048
    assert Simulation("1x24GiB", version="0.12.10").default_num_ctx == 4096
    assert Simulation("2xRTX4090", version="0.20.0").default_num_ctx == 262144
    assert Simulation("1xRTX4090", version="0.32.0").default_num_ctx == 32768
    sim = Simulation("1x24GiB", noise=0)
    assert sim.plan("llama3.1:8b", num_ctx=500000).num_ctx == 131072  # capped at the trained context
    assert sim.plan("gemma3:12b", num_ctx=512).num_ctx == 2048  # vision models need 2048


def test_parallel_slots_multiply_the_kv_cache() -> None:
    one = Simulation("1x24GiB", noise=0).plan("llama3.1:8b", num_ctx=8192)
    four = Simulation("1x24GiB", noise=0, num_parallel=4).plan("llama3.1:8b", num_ctx=8192)
    assert four.ctx_total == 4 * one.ctx_total
    assert four.breakdown["CUDA0"]["kv"] == 4 * one.breakdown["CUDA0"]["kv"]


def test_ps_sizes_are_the_estimate_in_era_a_and_true_buffers_in_era_c() -> None:
    a = Simulation("1xRTX4090", noise=0).plan("deepseek-r1:32b")
    assert a.size_bytes == a.estimate.total_bytes and a.size_vram_bytes == a.estimate.vram_bytes
    assert a.size_vram_bytes > a.gpu_bytes[0] - 320 * 2**20  # the estimate is more than what is used
    c = Simulation("1xRTX4090", noise=0, version="0.32.0").plan("deepseek-r1:32b", num_ctx=4096)
    assert c.estimate is None and c.size_bytes == c.size_vram_bytes
    assert c.size_vram_bytes == sum(
        v for k, v in c.breakdown["CUDA0"].items() if k in ("weights", "kv", "compute")
    )


def test_explicit_num_gpu_is_honoured_and_fails_with_ollamas_messages() -> None:
    sim = Simulation("1xRTX4090", noise=0)
    over = sim.plan("deepseek-r1:32b", num_gpu=999, num_ctx=131072)
    assert not over.ok and over.offloaded == 65
    assert over.error == "llama runner process has terminated: cudaMalloc failed: out of memory"
    weights = Simulation("1x12GiB", noise=0).plan("llama3.3:70b", num_gpu=81)
    assert (
        weights.error
        == "llama runner process has terminated: error loading model: unable to allocate CUDA0 buffer"
    )
    era_c = Simulation("1x12GiB", noise=0, version="0.32.0").plan("llama3.3:70b", num_gpu=81)
    assert era_c.error.startswith("llama-server reported out-of-memory during startup: ")
    assert all(is_out_of_memory(p.error) for p in (over, weights, era_c))


def test_system_memory_message_is_formatted_like_humanbytes2() -> None:
    sim = Simulation("1x8GiB", noise=0, host_ram="16GiB")
    p = sim.plan("llama3.3:70b")
    assert not p.ok and p.error_kind == "system_memory"
    assert p.error.startswith("model requires more system memory (")
    assert p.error.endswith(" GiB) than is available (14.0 GiB)")


def test_era_c_fits_layers_itself_and_steps_down_an_automatic_context_after_oom() -> None:
    sim = Simulation("2xRTX4090", noise=0, version="0.32.0", host_ram="40GiB")
    p = sim.plan("llama3.3:70b")  # VRAM tier 262144 -> capped at 131072 -> host OOM -> retry at 32768
    assert p.ok and p.num_ctx == 32768 and p.num_ctx_requested == 32768
    assert 0 < p.offloaded < 81
    assert all(b + GiB <= 24564 * 2**20 for b in p.gpu_bytes)


def test_speed_cpu_spill_is_5_to_10x_slower_and_depth_costs() -> None:
    sim = Simulation("1xRTX4090", noise=0)
    gpu = sim.plan("deepseek-r1:32b", num_ctx=8192)
    spill = sim.plan("deepseek-r1:32b", num_gpu=30, num_ctx=8192)
    fast, slow = sim.speed(gpu).decode_tok_s, sim.speed(spill).decode_tok_s
    assert gpu.fully_on_gpu and spill.cpu_layers == 35
    assert 5 <= fast / slow <= 12
    assert sim.speed(gpu, depth_tokens=8000).decode_tok_s < fast
    assert sim.speed(gpu, 2048).prefill_tok_s > 10 * fast


def test_moe_decode_reads_only_the_used_experts() -> None:
    sim = Simulation("8xH200", noise=0, host_ram="2TiB")
    p = sim.plan("deepseek-r1:671b", num_ctx=2048)
    assert p.fully_on_gpu
    dense_equivalent = 404e9 / (4800e9 * 0.56)  # reading the whole file would take this long
    assert 1 / sim.speed(p).decode_tok_s < dense_equivalent / 5


def test_story_d_largest_explicit_num_gpu_below_the_automatic_count() -> None:
    sim = Simulation("8xA800-80GB", host_ram="1TiB", version="0.5.7", noise=0)
    auto = sim.plan("deepseek-r1:671b-q8_0")
    assert not auto.ok and auto.num_gpu == 51 and auto.estimate.tensor_split == (7, 7, 7, 6, 6, 6, 6, 6)
    largest = max(n for n in range(1, 63) if sim.plan("deepseek-r1:671b-q8_0", num_gpu=n).ok)
    assert largest == 48 and largest < auto.num_gpu
    assert sim.plan("deepseek-r1:671b-q8_0", num_gpu=43).ok  # what the user settled on
    # from 0.7.0 Ollama walks the layers last to first and the same hardware loads 48 layers by itself
    newer = Simulation("8xA800-80GB", host_ram="1TiB", noise=0).plan("deepseek-r1:671b-q8_0")
    assert newer.ok and newer.num_gpu == 48


def test_noise_free_core_is_deterministic_and_noise_spreads() -> None:
    quiet = Simulation("1xRTX4090", noise=0)
    p = quiet.plan("llama3.1:8b")
    assert quiet.generation_seconds(p, 100, 0, 64) == quiet.generation_seconds(p, 100, 0, 64)
    noisy = Simulation("1xRTX4090", noise=0.05, seed=1)
    samples = {noisy.generation_seconds(p, 100, 0, 64)[1] for _ in range(20)}
    assert len(samples) == 20
    again = Simulation("1xRTX4090", noise=0.05, seed=1)
    assert again.generation_seconds(p, 100, 0, 64) == Simulation(
        "1xRTX4090", noise=0.05, seed=1
    ).generation_seconds(p, 100, 0, 64)


def test_unknown_tag_and_bad_arguments() -> None:
    sim = Simulation("1x24GiB")
    with pytest.raises(KeyError):
        sim.plan("nope:1b")
    with pytest.raises(ValueError, match="version"):
        Simulation("1x24GiB", version="latest")
    with pytest.raises(ValueError, match="noise"):
        Simulation("1x24GiB", noise=-1)


def test_a_foreign_memory_truth_differs_by_card_family_and_keeps_fit_monotone_in_num_gpu() -> None:
    from tuner.sim.memtruth import FOREIGN_FAMILIES  # noqa: PLC0415

    def cuda0(gpus: str, truth: str, num_gpu: int = 33) -> dict[str, int]:
        return (
            Simulation(gpus, noise=0, memory_truth=truth)
            .plan("llama3.1:8b", num_gpu, 4096)
            .breakdown["CUDA0"]
        )

    exact = Simulation("1xH100", noise=0, estimator_error=0).plan("llama3.1:8b", 33, 4096).breakdown["CUDA0"]
    h100, ada = cuda0("1xH100", "foreign"), cuda0("1xRTX4090", "foreign")
    assert h100["weights"] == exact["weights"] and h100["kv"] == exact["kv"]  # what the file fixes is exact
    assert h100["context"] == FOREIGN_FAMILIES["datacenter"][1] != ada["context"]
    assert h100["compute"] < exact["compute"]  # the H100 fit: the estimator overstates compute there
    assert cuda0("1xH100", "foreign") == h100  # deterministic
    with pytest.raises(ValueError, match="memory_truth"):
        Simulation("1xH100", memory_truth="wishful")
    sim = Simulation("1xRTX3060-8GB", noise=0, memory_truth="foreign")
    loads = [sim.plan("qwen2.5:7b-instruct-q8_0", n, 8192).ok for n in range(0, 30)]
    assert loads == sorted(loads, reverse=True)  # whether it fits is monotone in num_gpu
