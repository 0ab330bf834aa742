"""The rules defined once in tuner.schema: what "fully on the GPU" and "deployable" mean."""

from __future__ import annotations

import math

import pytest

from tuner.schema import DEPLOYABLE_FRACTION, deployable, fully_on_gpu


@pytest.mark.parametrize(
    ("decode", "fraction", "best", "expected"),
    [
        (100.0, 1.0, 100.0, True),  # the best itself
        (10.0, 1.0, 100.0, True),  # slow but entirely on the GPU (a heavier tag, a larger context)
        (60.0, 0.7, 100.0, True),  # spills, yet more than half the best speed
        (40.0, 0.7, 100.0, False),  # spills at a fraction of the best: a fallback nobody picks
        (8.0, 0.0, 10.0, True),  # CPU only, where nothing much faster fits: deployable
        (2.0, 0.0, 40.0, False),  # CPU only next to a fast GPU config: not
        (None, 1.0, 100.0, False),
        (math.nan, 1.0, 100.0, False),
        (0.0, 1.0, 100.0, False),
    ],
)
def test_deployable_is_fully_on_the_gpu_or_near_the_best_speed(decode, fraction, best, expected) -> None:
    assert deployable(decode, fraction, best) is expected
    assert DEPLOYABLE_FRACTION == 0.5 and fully_on_gpu(fraction) == (fraction >= 0.999)
