"""The estimator against NVML peaks measured on a real H100 (reports/examples/h100-llama3-8b)."""

from __future__ import annotations

import statistics

import pytest

from tuner.margin import GpuGuess, MarginBelief
from tuner.units import MiB
from validation.realgpu import learned, render, rows


def test_predictions_of_the_h100_study_are_close_and_the_prior_margin_covers_them() -> None:
    data = rows()
    assert len(data) == 32
    assert statistics.median(abs(r.error) for r in data) < 0.10
    assert all(
        -50 * MiB < r.measured - r.predicted < 400 * MiB for r in data
    )  # the CUDA context is larger there
    prior = MarginBelief()
    for r in data:  # before its first load, a study would have given each of these at least 95% to fit
        guess = GpuGuess(r.fixed, r.compute, r.predicted - r.fixed - r.compute)
        assert prior.margin([guess]) > r.variable_ratio
    c, d = learned(data).mean()  # and after them it knows both parts: the least-squares fit is 0.75, +384
    assert c == pytest.approx(0.75, abs=0.08) and d / MiB == pytest.approx(384, abs=60)
    assert "| Q4_0 | 33 | 2048 |" in render(data)
