"""Ollama's estimate, checked against log lines real servers printed (../shared/data, issues #8667, #8597)."""

from __future__ import annotations

from tests.estimate.specs import spec
from tuner.estimate.ollama import MINIMUM_MEMORY, estimate_gpu_layers, graph_size, pick_gpus
from tuner.estimate.versions import human_bytes2 as hb
from tuner.units import GiB


def _est(
    tag: str, free_gib: list[float], ctx: int, parallel: int = 1, ascending: bool = False, num_gpu: int = -1
):
    free = [int(f * GiB) for f in free_gib]
    return estimate_gpu_layers(
        spec(tag),
        free,
        num_ctx=ctx,
        num_batch=512,
        num_gpu=num_gpu,
        num_parallel=parallel,
        ascending=ascending,
    )


def test_worked_example_llama31_8b_graph_sizes() -> None:
    g = graph_size(spec("llama3.1:8b"), 4096, 512, 1)
    assert hb(g.kv_total) == "512.0 MiB" and hb(g.full) == "296.0 MiB" and hb(g.partial) == "677.5 MiB"


def test_llama31_8b_parallel_4_matches_log_row_45() -> None:
    e = _est("llama3.1:8b", [23.3], 2048, parallel=4)
    assert (e.layers, hb(e.total_bytes), hb(e.kv_bytes)) == (33, "6.5 GiB", "1.0 GiB")
    assert (hb(e.graph_full), hb(e.graph_partial)) == ("560.0 MiB", "677.5 MiB")


def test_gemma3_sliding_window_estimate_matches_log_row_11() -> None:
    e = _est("gemma3:12b", [11.1], 8192)
    assert (e.layers, hb(e.total_bytes), hb(e.vram_bytes), hb(e.kv_bytes)) == (
        48,
        "11.4 GiB",
        "8.9 GiB",
        "992.0 MiB",
    )
    assert (hb(e.graph_full), hb(e.graph_partial)) == ("519.5 MiB", "1.3 GiB")


def test_deepseek_671b_on_one_small_gpu_matches_issue_8667() -> None:
    e = _est("deepseek-r1:671b", [6.9], 2048, ascending=True)
    assert (e.layers, hb(e.total_bytes), hb(e.vram_bytes), hb(e.kv_bytes)) == (
        3,
        "415.7 GiB",
        "3.4 GiB",
        "9.5 GiB",
    )
    assert (hb(e.graph_full), hb(e.graph_partial)) == ("654.0 MiB", "1019.5 MiB")


def test_deepseek_671b_on_ten_3090s_matches_issue_8597() -> None:
    e = _est("deepseek-r1:671b", [23.4] * 10, 2048, ascending=True)
    assert e.layers == 33 and e.tensor_split == (4, 4, 4, 3, 3, 3, 3, 3, 3, 3)
    assert (hb(e.total_bytes), hb(e.vram_bytes)) == ("416.8 GiB", "217.4 GiB")


def test_story_5_plan_is_reproduced_exactly() -> None:
    """8 x A800: 51 layers split 7,7,7,6,6,6,6,6, 690.3 GiB full, 573.9 GiB partial (the user's log)."""
    e = _est("deepseek-r1:671b-q8_0", [78.6] * 8, 2048, ascending=True)
    assert e.layers == 51 and e.tensor_split == (7, 7, 7, 6, 6, 6, 6, 6)
    assert (hb(e.total_bytes), hb(e.vram_bytes)) == ("690.3 GiB", "573.9 GiB")
    newer = _est("deepseek-r1:671b-q8_0", [78.6] * 8, 4096)  # v0.7.0+ walks the layers last to first
    assert newer.layers == 48 and newer.tensor_split == (6,) * 8


def test_minimum_memory_and_layer_reserve_per_gpu() -> None:
    e = _est("llama3.1:8b", [23.3], 4096)
    mf = spec("llama3.1:8b")
    kv = graph_size(mf, 4096, 512, 1).kv
    expected = MINIMUM_MEMORY + mf.layer_bytes[0] + kv[0] + sum(mf.layer_bytes) + sum(kv) + mf.output_bytes
    assert e.allocations[0] == expected + e.graph_full


def test_explicit_num_gpu_stops_the_estimate() -> None:
    e = _est("llama3.3:70b", [23.3, 23.3], 4096, num_gpu=20)
    assert e.layers == 20 and e.vram_bytes < e.total_bytes


def test_pick_gpus_uses_the_fewest_that_fit() -> None:
    mf = spec("llama3.1:8b")
    free = [int(20 * GiB), int(23 * GiB)]
    gpus, est, full = pick_gpus(mf, free, num_ctx=4096, num_batch=512, num_gpu=-1, num_parallel=1)
    assert gpus == [1] and full and est.layers == 33
    big = spec("llama3.3:70b")
    gpus, est, full = pick_gpus(big, free, num_ctx=4096, num_batch=512, num_gpu=-1, num_parallel=1)
    assert sorted(gpus) == [0, 1] and not full and 0 < est.layers < 81
