"""Before the answer is written, the contenders are measured again, interleaved.

The contenders are every feasible config whose own 95% interval overlaps the fastest one's
(tuner.decision.picks.contenders): the configs the search could not tell apart. Measured minutes apart,
a slow drift (a warming GPU, a neighbour starting up) can decide between them. So each round visits every
contender once, A B C and then C B A (alternately, so a linear drift hits every config alike), and every
visit runs the whole trial protocol (tuner.measure: unload, load, warm-up, timed generations, unload).
One visit's mean decode tok/s is one sample: its interval then also holds the load-to-load spread that a
single trial's repeats cannot see. The cost is bounded: at most decision.picks.MAX_CONTENDERS configs, and
rounds x contenders visits within half the study's budget (rounds_for; at least two rounds).

The result lives on the study (user attribute "remeasure") and is read back into each contender's record
as remeasure_samples (apply); the report's speeds for those configs come from it.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from tuner.backend.base import Backend
from tuner.config import MeasureSettings
from tuner.decision.picks import contenders
from tuner.interference import InterferenceMonitor
from tuner.measure import measure
from tuner.probe import Probe
from tuner.schema import StudyMeta, TrialRecord
from tuner.space import Config

ATTR = "remeasure"
RUN_OFFSET = 1_000_000  # prompt numbers of the re-measure: never one a trial used


MIN_ROUNDS = 2


def rounds_for(asked: int, contenders: int, budget: int) -> int:
    """The rounds to run: as asked, but the visits (rounds x contenders) stay within half the study's budget
    in loads, and never fewer than MIN_ROUNDS (one sample is no interval)."""
    if asked <= 0 or contenders < 2:
        return 0
    affordable = (budget // 2) // contenders
    return max(MIN_ROUNDS, min(asked, affordable))


def visit_order(numbers: Sequence[int], rounds: int) -> list[tuple[int, int]]:
    """[(round, trial number)]: A B C, C B A, A B C, ..."""
    order = []
    for r in range(rounds):
        seq = list(numbers) if r % 2 == 0 else list(reversed(numbers))
        order += [(r, n) for n in seq]
    return order


def config_of(record: TrialRecord) -> Config:
    """The config a trial measured, to load it again (the baseline: the engine's placement at the context
    it reported using)."""
    return Config(record.tag, record.num_gpu, record.num_ctx, record.flash_attn, record.kv_cache_type)


def needed(
    meta: StudyMeta, records: Sequence[TrialRecord], stored: dict[str, Any] | None, machine: str
) -> list[TrialRecord]:
    """The contenders still to re-measure: none when fewer than two, or when the stored re-measure already
    covers exactly these configs on this machine."""
    todo = contenders(meta, records)
    if len(todo) < 2:
        return []
    if (
        stored
        and stored.get("fingerprint_id") == machine
        and sorted(stored.get("trials", [])) == sorted(r.number for r in todo)
    ):
        return []
    return todo


def remeasure(
    backend: Backend,
    probe: Probe,
    targets: Sequence[TrialRecord],
    settings: MeasureSettings,
    *,
    rounds: int,
    generations: int = 2,
    monitor: InterferenceMonitor | None = None,
    fingerprint_id: str = "",
    on_visit: Callable[[int, int, float | None], None] | None = None,
) -> dict[str, Any]:
    """Measure `targets` again, interleaved, `rounds` times each; the block stored on the study."""
    per_visit = dataclasses.replace(
        settings, min_repeats=generations, max_repeats=generations, target_rse=0.0
    )
    numbers = [r.number for r in targets]
    configs = {r.number: config_of(r) for r in targets}
    samples: dict[str, list[float]] = {str(n): [] for n in numbers}
    visits: list[dict[str, Any]] = []
    for i, (round_index, number) in enumerate(visit_order(numbers, rounds)):
        m = measure(
            backend, probe, configs[number], per_visit, run_offset=RUN_OFFSET + 100 * i, monitor=monitor
        )
        rates = m.decode_rates
        speed = statistics.fmean(rates) if m.loaded and not m.oom and rates else None
        if speed is not None:
            samples[str(number)].append(round(speed, 4))
        visits.append(
            {
                "round": round_index,
                "trial": number,
                "decode_tok_s": speed,
                "error": " ".join(m.error.split())[:300] if speed is None else "",
                "interference": m.interference,
            }
        )
        if on_visit is not None:
            on_visit(i + 1, len(numbers) * rounds, speed)
    return {
        "rounds": rounds,
        "generations": generations,
        "trials": sorted(numbers),
        "order": numbers,
        "samples": samples,
        "visits": visits,
        "fingerprint_id": fingerprint_id,
    }


def apply(records: Sequence[TrialRecord], stored: dict[str, Any] | None) -> list[TrialRecord]:
    """The records with the stored re-measure's samples on the contenders it measured."""
    if not stored:
        return list(records)
    samples = stored.get("samples") or {}
    return [
        dataclasses.replace(r, remeasure_samples=[float(v) for v in samples[str(r.number)]])
        if str(r.number) in samples
        else r
        for r in records
    ]
