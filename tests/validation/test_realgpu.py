"""The estimator against NVML peaks measured on a real H100 (reports/examples/h100-llama3-8b)."""

from __future__ import annotations

import statistics

from tuner.fitcheck import PRIOR_MARGIN
from tuner.units import MiB
from validation.realgpu import render, rows


def test_predictions_of_the_h100_study_are_close_and_the_prior_margin_covers_them() -> None:
    data = rows()
    assert len(data) == 32
    assert statistics.median(abs(r.error) for r in data) < 0.10
    assert all(
        -50 * MiB < r.measured - r.predicted < 400 * MiB for r in data
    )  # the CUDA context is larger there
    assert max(r.variable_ratio for r in data) < PRIOR_MARGIN  # the first loads of a study would not fail
    assert "| Q4_0 | 33 | 2048 |" in render(data)
