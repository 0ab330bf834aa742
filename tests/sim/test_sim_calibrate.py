"""Calibration against public throughput numbers: rows are mapped by the facts they state, never by spelling."""

from __future__ import annotations

import re

import pytest

from tuner.hardware import KNOWN_CARDS
from tuner.sim import perf
from tuner.sim.calibrate import DEFAULT_CSV, map_row, pick_shape, run
from tuner.sim.catalog import lookup
from tuner.sim.hardware import HostSpec, power_limited


def row(**over: str) -> dict[str, str]:
    base = {
        "engine": "llama.cpp (CUDA, llama-bench)", "gpu": "NVIDIA GeForce RTX 3090", "gpu_bw_GBps": "936.2",
        "model": "Qwen 2.5 32B", "quant": "Q4_K_M", "model_size_GiB": "", "n_layers": "65",
        "layers_on_gpu": "99 (all)", "pp_tok_s": "", "tg_tok_s": "40", "notes": "",
    }  # fmt: skip
    return {**base, **over}


def test_calibration_lands_close_on_the_public_numbers() -> None:
    text = run(DEFAULT_CSV)
    pp = re.search(r"prompt \(pp\): (\d+) rows, median \|sim/measured - 1\| = ([\d.]+)%", text)
    tg = re.search(r"decode \(tg\): (\d+) rows, median \|sim/measured - 1\| = ([\d.]+)%", text)
    assert pp and tg
    assert int(tg.group(1)) >= 33 and float(tg.group(2)) < 10
    assert int(pp.group(1)) >= 20 and float(pp.group(2)) < 25
    assert "Skipped" in text and "| mapped to |" in text  # the per-row table names each row's architecture


@pytest.mark.parametrize(
    "spelling", ["Qwen 2.5 32B", "qwen2.5:32b", "Qwen2.5-32B-Instruct", "QWEN2.5 32b coder"]
)
def test_a_model_maps_by_lineage_and_parameter_count_whatever_its_spelling(spelling: str) -> None:
    shape, why = pick_shape(row(model=spelling))
    assert shape is not None and shape.key == "qwen2.5-32b", why


def test_a_row_whose_stated_layers_disagree_with_the_architecture_is_left_out() -> None:
    shape, why = pick_shape(row(n_layers="49"))
    assert shape is None and "49" in why and "65" in why
    case, why = map_row(2, row(model="Llama 2 9000B"))
    assert case is None and "no llama2 architecture" in why


def test_a_partial_offload_takes_its_split_from_the_row_or_is_left_out() -> None:
    partial, _ = map_row(2, row(layers_on_gpu="40"))
    assert partial is not None and partial.gpu_layers == 40
    unknown, why = map_row(2, row(model="Qwen2.5 72B", n_layers="81", layers_on_gpu=""))
    assert unknown is None and "not stated" in why  # 47 GB cannot be assumed whole on a 24 GB card
    moe, why = map_row(2, row(layers_on_gpu="-ngl 99 --cpu-moe"))
    assert moe is None and "cpu-moe" in why


def test_a_power_limited_card_is_recognised_and_slower_where_it_draws_the_most() -> None:
    case, why = map_row(2, row(gpu="NVIDIA RTX PRO 6000 Blackwell Workstation Edition @300 W power limit",
                               gpu_bw_GBps="1792"))  # fmt: skip
    full = KNOWN_CARDS["rtxpro6000"]
    assert case is not None, why
    assert case.card.tflops < 0.8 * full.tflops and 0.85 * full.bandwidth_gbps < case.card.bandwidth_gbps
    at_tdp = power_limited(full, 600, 600)
    assert (at_tdp.tflops, at_tdp.bandwidth_gbps) == (full.tflops, full.bandwidth_gbps)


def test_a_bandwidth_the_card_does_not_have_is_not_mapped() -> None:
    case, why = map_row(2, row(gpu_bw_GBps="360"))
    assert case is None and "bandwidth" in why


def test_moe_decode_is_bound_by_the_bytes_of_the_active_experts() -> None:
    mf = lookup("mixtral:8x7b-instruct-v0.1-q8_0")
    card = KNOWN_CARDS["h100"]
    layout = perf.Layout(tuple([0] * (mf.arch.block_count + 1)), True, (0,))
    seconds = perf.decode_seconds_per_token(mf, layout, [card], HostSpec(), depth=0)
    active = sum(mf.layer_active_bytes) + mf.output_bytes
    assert active < 0.35 * mf.file_bytes  # 2 of 8 experts, plus attention and the output layer
    bandwidth_s = active / (card.bandwidth_gbps * 1e9 * perf.bw_efficiency(card))
    fixed = perf.TOKEN_OVERHEAD_S + mf.arch.block_count * perf.MOE_LAYER_S
    assert seconds == pytest.approx(bandwidth_s + fixed, rel=0.01)
