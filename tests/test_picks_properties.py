"""The recommendation rules, asserted over 240 simulated studies with noise (tests/studies.py): many models,
quantizations, cards and Ollama releases, constraints (min_ctx, a VRAM limit, --gpu-only), noisy
neighbours, and half of them with an interleaved re-measure of the contenders.

The ties are recomputed here from the samples (Student-t 95% intervals of the mean, independently of
tuner.report), so the rules are checked against the data, not against the code's own reading of it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest

from tests.studies import Study, make_study
from tuner.decision.picks import SPEED_TOLERANCE, best_pick, decide, deployable
from tuner.schema import TrialRecord, fully_on_gpu

N_STUDIES = 240
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}


def interval(r: TrialRecord) -> tuple[float, float, float]:
    """(mean, low, high) of the samples every decision should use: the re-measure's, else the repeats."""
    samples = r.remeasure_samples if len(r.remeasure_samples) >= 2 else r.decode_samples
    mean = statistics.fmean(samples)
    if len(samples) < 2:
        return mean, mean, mean
    half = T975[len(samples) - 1] * statistics.stdev(samples) / math.sqrt(len(samples))
    return mean, mean - half, mean + half


def ctx(r: TrialRecord) -> int:
    loaded = r.context_length_loaded
    return int(loaded) if loaded and 0 < loaded < r.num_ctx else r.num_ctx


def on_gpu(r: TrialRecord) -> bool:
    return fully_on_gpu(r.gpu_fraction)


def cpu_only(r: TrialRecord) -> bool:
    return r.num_gpu == 0 or (r.gpu_fraction is not None and r.gpu_fraction <= 0.001)


def candidates(study: Study) -> list[TrialRecord]:
    feasible = [r for r in study.records if r.feasible and r.decode_tok_s]
    if study.meta.allow_cpu_only:
        return feasible
    return [r for r in feasible if not cpu_only(r)] or feasible


@pytest.fixture(scope="module")
def studies() -> list[Study]:
    return [make_study(seed) for seed in range(N_STUDIES)]


@pytest.fixture(scope="module")
def decisions(studies):
    return [decide(s.meta, s.records) for s in studies]


def test_the_studies_cover_the_situations_the_rules_are_about(studies, decisions):
    seen: Counter[str] = Counter()
    for s, d in zip(studies, decisions):
        pool = candidates(s)
        seen["with a feasible config"] += bool(pool)
        seen["none feasible"] += not pool
        seen["several tags"] += len(s.meta.tags) > 1
        seen["multi-GPU"] += not s.cards.startswith("1x")
        seen["a constraint"] += bool(s.meta.min_ctx or s.meta.vram_limit_bytes or s.meta.gpu_only)
        seen["a CPU-only config feasible"] += any(cpu_only(r) for r in s.records if r.feasible)
        seen["a tie at the top"] += len(d.tied) > 1
        seen["the user's setting within noise"] += d.baseline.within_noise
        seen["noisy trials"] += any(r.noisy for r in s.records)
        seen["re-measured"] += s.remeasured
        seen["nothing fully on the GPU"] += bool(pool) and not any(on_gpu(r) for r in pool)
        seen["a missing pick"] += bool(pool) and bool(d.missing)
    assert len(studies) >= 200
    for situation in seen:
        assert seen[situation] >= 5, (situation, seen)


def test_fastest_is_within_noise_of_the_top_and_ties_keep_context_and_the_gpu(studies, decisions):
    for s, d in zip(studies, decisions):
        pool = candidates(s)
        if not pool:
            assert not d.picks and set(d.missing) == {"fastest", "largest_ctx_on_gpu", "balanced", "leanest"}
            continue
        fastest = d.picks["fastest"].trial
        top = max(pool, key=lambda r: interval(r)[0])
        _, top_low, top_high = interval(top)
        _, low, high = interval(fastest)
        assert low <= top_high and top_low <= high, "the fastest pick is not within noise of the top"
        assert not any(interval(r)[1] > high for r in pool), "a config is faster beyond noise"
        tied = [r for r in pool if interval(r)[1] <= top_high and top_low <= interval(r)[2]]
        base = next((r for r in s.records if r.baseline and r.decode_tok_s), None)
        if base is not None and base in tied:
            assert ctx(fastest) == ctx(base), "a tie with the user's setting must keep their context"
            assert d.baseline.within_noise and "within noise" in d.baseline.summary
        else:
            assert not any(ctx(r) > ctx(fastest) for r in tied), "a within-noise gain cost context"
            same_ctx = [r for r in tied if ctx(r) == ctx(fastest)]
            if any(on_gpu(r) for r in same_ctx):
                assert on_gpu(fastest), "a within-noise gain cost GPU residency"


def test_no_pick_runs_on_the_cpu_alone_while_a_gpu_config_is_feasible(studies, decisions):
    for s, d in zip(studies, decisions):
        gpu_feasible = any(r.feasible and r.decode_tok_s and not cpu_only(r) for r in s.records)
        if gpu_feasible and not s.meta.allow_cpu_only:
            assert not any(cpu_only(p.trial) for p in d.picks.values())
            fastest = d.picks["fastest"].trial
            assert not any(cpu_only(r) for r in deployable(s.meta, s.records, fastest))


def test_largest_context_is_on_the_gpu_within_the_tolerance(studies, decisions):
    for s, d in zip(studies, decisions):
        pool = candidates(s)
        if not pool:
            continue
        top = max(interval(r)[0] for r in d.tied)
        close = [r for r in pool if on_gpu(r) and interval(r)[0] >= (1 - SPEED_TOLERANCE) * top]
        pick = d.picks.get("largest_ctx_on_gpu")
        if not close:
            assert pick is None and "largest_ctx_on_gpu" in d.missing
            continue
        assert pick is not None and on_gpu(pick.trial)
        assert interval(pick.trial)[0] >= (1 - SPEED_TOLERANCE) * top
        assert ctx(pick.trial) == max(ctx(r) for r in close)


def test_leanest_is_the_least_vram_fully_on_the_gpu(studies, decisions):
    for s, d in zip(studies, decisions):
        lean = [r for r in candidates(s) if on_gpu(r) and r.peak_vram_bytes]
        pick = d.picks.get("leanest")
        if not lean:
            assert pick is None
            continue
        assert pick is not None and on_gpu(pick.trial)
        assert pick.trial.peak_vram_bytes == min(r.peak_vram_bytes for r in lean)


def test_balanced_is_the_least_vram_on_the_gpu_at_your_context_and_near_the_fastest(studies, decisions):
    for s, d in zip(studies, decisions):
        pool = candidates(s)
        if not pool:
            continue
        top = max(interval(r)[0] for r in d.tied)
        close = [
            r
            for r in pool
            if on_gpu(r) and r.peak_vram_bytes and interval(r)[0] >= (1 - SPEED_TOLERANCE) * top
        ]
        pick = d.picks.get("balanced")
        if not close:
            assert pick is None
            continue
        base = next((r for r in s.records if r.baseline and r.decode_tok_s), None)
        floor = ctx(base) if base is not None else (s.meta.min_ctx or 0)
        roomy = [r for r in close if ctx(r) >= floor] or close
        assert pick is not None and pick.trial in roomy
        assert pick.trial.peak_vram_bytes == min(r.peak_vram_bytes for r in roomy)


def test_every_pick_explains_itself_in_one_line_and_best_keeps_your_context(studies, decisions):
    for s, d in zip(studies, decisions):
        for pick in d.picks.values():
            assert pick.reason and "\n" not in pick.reason and len(pick.reason) <= 200, pick.reason
        for why in d.missing.values():
            assert why and "\n" not in why
        best = best_pick(s.meta, s.records)
        assert (best is None) == ("fastest" not in d.picks)
        if best is not None and d.baseline.within_noise:
            assert ctx(best.trial) == ctx(d.baseline.baseline)
        assert d.level in ("clear", "tied", "uncertain", "")
        assert (d.level == "uncertain") == any(r.noisy for r in d.tied)
