"""The memory margin is a belief (tuner.margin.MarginBelief): learned both ways, with its uncertainty."""

from __future__ import annotations

import pytest

from tuner.margin import GpuGuess, MarginBelief
from tuner.units import GiB, MiB


def guess(compute_mib: float, free_gib: float = 24.0, fixed_gib: float = 20.0) -> GpuGuess:
    return GpuGuess(int(fixed_gib * GiB), int(compute_mib * MiB), 320 * MiB, int(free_gib * GiB))


def test_the_prior_is_sure_of_what_has_room_and_unsure_at_the_edge() -> None:
    b = MarginBelief()
    assert b.p_fit([guess(300, free_gib=24)]) > 0.999  # 20 GiB fixed + ~0.6 GiB guessed on 24 GiB
    assert b.p_fit([guess(300, free_gib=20.2)]) < 0.01  # not even the fixed part and a little
    edge = b.p_fit([guess(300, free_gib=20.9)])  # the estimate itself (0.6 GiB) fits, with little room
    assert 0.05 < edge < 0.95


def test_a_measured_load_pins_the_guessed_part_and_the_belief_can_come_down() -> None:
    b = MarginBelief()
    g = guess(300, free_gib=20.9)
    before = b.p_fit([g])
    # the real runner took 0.8 x compute and 320 - 64 MiB of context: less than the estimator guessed
    b.observe_load([guess(300)], [int(20 * GiB + 0.8 * 300 * MiB + 256 * MiB)])
    assert b.p_fit([g]) > max(before, 0.95)  # learned that this config fits: no ratchet holds it back
    assert b.margin([guess(300)]) < MarginBelief().margin([guess(300)])


def test_a_failed_load_teaches_as_much_as_a_success() -> None:
    b = MarginBelief()
    before = b.p_fit([guess(300, free_gib=21.2)])
    b.observe_failure([guess(300, free_gib=21.2)])  # 20 GiB fixed + the guessed part did not fit in 21.2
    assert b.p_fit([guess(300, free_gib=21.2)]) < before / 3  # (the search never retries it: it is taken)
    assert b.p_fit([guess(300, free_gib=21.0)]) < 0.1 < 0.9 < b.p_fit([guess(300, free_gib=23.0)])
    c, d = b.mean()
    assert c * 300 * MiB + 320 * MiB + d > 1.2 * GiB  # it must have needed more than 1.2 GiB


def test_two_loads_with_different_compute_buffers_separate_the_components() -> None:
    b = MarginBelief()
    for compute in (200, 1200, 600):
        b.observe_load([guess(compute)], [int(20 * GiB + 0.75 * compute * MiB + 320 * MiB + 384 * MiB)])
    c, d = b.mean()
    assert c == pytest.approx(0.75, abs=0.08) and d / MiB == pytest.approx(384, abs=60)


def test_a_config_on_several_gpus_must_fit_on_each_and_a_vram_limit_counts_the_sum() -> None:
    b = MarginBelief()
    roomy, tight = guess(300, free_gib=24), guess(300, free_gib=20.3)
    assert b.p_fit([roomy, tight]) == pytest.approx(b.p_fit([tight]), abs=1e-6)
    assert b.p_fit([roomy, roomy], limit=int(40 * GiB)) < 0.01  # 2 x 20.6 GiB is over a 40 GiB limit
    unused = GpuGuess(0, 0, 0, int(24 * GiB))
    assert b.p_fit([roomy, unused]) == pytest.approx(b.p_fit([roomy]))
