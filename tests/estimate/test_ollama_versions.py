"""Release-dependent rules of Ollama's estimate (ollama.rules_for), each seen in a public log (see
reports/memory-validation.md), and the vision graph the Ollama engine reserves (llamacpp.allocate)."""

from __future__ import annotations

from tuner.estimate.llamacpp import allocate
from tuner.estimate.ollama import (
    METAL_MINIMUM_MEMORY,
    estimate_gpu_layers,
    graph_size,
    rules_for,
    vision_graph,
)
from tuner.estimate.versions import human_bytes2 as hb
from tuner.units import GiB
from validation import public_models as P


def _est(spec, free_gib, ctx, version, parallel=1, **kw):  # type: ignore[no-untyped-def]
    return estimate_gpu_layers(
        spec,
        [int(f * GiB) for f in free_gib],
        num_ctx=ctx,
        num_batch=512,
        num_gpu=-1,
        num_parallel=parallel,
        version=version,
        **kw,
    )


def test_rules_by_release() -> None:
    old, new = rules_for("0.5.7"), rules_for("0.12.10")
    assert old.ascending and old.weights_include_kv and old.projector_on_gpu0 and not old.gemma3_sliding
    assert not (
        new.ascending or new.weights_include_kv or new.projector_on_gpu0 or new.gptoss_doubled_partial
    )
    assert rules_for(None) == new
    assert not rules_for("0.6.0").vision_counted and rules_for("0.6.1").vision_counted


def test_gemma3_sliding_window_kv_arrived_in_0_6_3() -> None:
    gemma = P.catalog("gemma3:12b")
    assert hb(graph_size(gemma, 2048, 512, 1, version="0.6.0").kv_total) == "768.0 MiB"  # 48 x 2048 x 8 KiB
    assert hb(graph_size(gemma, 2048, 512, 1, version="0.6.5").kv_total) == "608.0 MiB"  # row 23


def test_mistral3_takes_the_fallback_graph() -> None:
    g = graph_size(P.mistral_small_31(), 4096, 512, 1, version="0.6.5")
    assert g.partial == g.full == 32 // 8 * g.kv_total // 6  # 426.7 MiB in row 27
    assert hb(g.partial) == "426.7 MiB"


def test_gpt_oss_graph_before_and_after_pr_11700() -> None:
    spec = P.gpt_oss(24, 32)
    first = graph_size(spec, 8192, 512, 1, version="0.11.2")
    assert (hb(first.full), hb(first.partial), hb(first.kv_total)) == ("2.0 GiB", "4.0 GiB", "300.0 MiB")
    later = graph_size(spec, 8192, 512, 1, version="0.11.5")
    assert later.partial == later.full == first.full // 2


def test_memory_weights_printed_with_kv_before_0_6_1() -> None:
    spec = P.catalog("llama3.1:8b")
    old = _est(spec, [23.3], 2048, "0.5.4", parallel=4)
    new = _est(spec, [23.3], 2048, "0.6.5", parallel=4)
    assert old.weights_bytes == sum(spec.layer_bytes) + old.kv_bytes  # row 45: 4.9 GiB
    assert new.weights_bytes == sum(spec.layer_bytes) + spec.output_bytes
    assert old.weights_repeating == old.weights_bytes - spec.output_bytes


def test_projector_on_the_first_gpu_before_0_7_0() -> None:
    spec = P.mistral_small_31()
    assert _est(spec, [9.9], 4096, "0.6.5").layers == 0  # row 27: projector graph 8.8 GiB must fit on GPU 0
    assert _est(spec, [9.9], 4096, "0.7.0").layers > 0  # later it rides with the output layer
    assert _est(P.gemma3_27b(), [14.5], 2048, "0.6.0").projector_weights == 0  # 0.6.0 ignored gemma3's tower


def test_metal_uses_the_full_graph_and_512_mib_minimum() -> None:
    spec = P.granite_8b_code_q4_0()
    e = _est(spec, [21.3], 2048, "0.4.0", parallel=4, library="metal")
    assert e.graph_partial == e.graph_full and hb(e.graph_full) == "560.0 MiB"  # row 43
    kv0 = graph_size(spec, 2048, 512, 4, version="0.4.0").kv[0]
    ascending_reserve = METAL_MINIMUM_MEMORY + spec.layer_bytes[0] + kv0
    assert e.allocations[0] == ascending_reserve + e.weights_bytes + spec.output_bytes + e.graph_full


def test_ollama_engine_reserves_the_image_graph_when_it_is_larger() -> None:
    spec = P.gemma3_27b()
    kw = dict(n_devices=1, num_gpu=63, split=[1.0], ctx_total=8192, ubatch=512, parallel=2, flash_attn=False)
    text = allocate(spec, **kw).gpu[0].compute  # type: ignore[arg-type]
    image = vision_graph(spec)[1]
    both = allocate(spec, vision_compute=image, **kw).gpu[0].compute  # type: ignore[arg-type]
    assert text < image < both and both == image + (32 << 20)  # row 41: 1.1 GiB reserved
