"""Which trials a pick may name and which ones the data cannot tell apart. Pure.

eligible        feasible trials a pick may name (CPU-only ones only when nothing else is feasible)
tied_with_top   the configs whose 95% interval overlaps the top one's
choose_fastest  the tie-break within a tie: your context, the larger context, fully on the GPU, the least VRAM
contenders      what the study measures again before writing the answer (at most MAX_CONTENDERS)
current_setting the user's current setting as measured (the baseline trial)
pareto_front, deployable   the speed/VRAM front, and the part of it a user would deploy
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    feasible_trials,
    has_vram,
    is_complete,
    is_cpu_only,
    is_measured,
    is_on_gpu,
    is_true,
    own_interval,
    speed_interval,
    vram_of,
    vram_or_inf,
)
from tuner.pareto import pareto_front as front_of
from tuner.schema import StudyMeta, TrialRecord, honour_limits

SPEED_TOLERANCE = 0.10  # largest_ctx_on_gpu and balanced: no slower than 90% of the fastest
MAX_CONTENDERS = 4  # at most this many configs are measured again before the answer is written


def eligible(meta: StudyMeta, records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Feasible trials a pick may name: CPU-only ones only when nothing with GPU layers is feasible (or the
    user allowed it). A trial that breaks the study's limits (schema.honour_limits) never is."""
    feasible = feasible_trials(honour_limits(meta, r) for r in records)
    if getattr(meta, "allow_cpu_only", False):
        return feasible
    with_gpu = [r for r in feasible if not is_cpu_only(r)]
    return with_gpu or feasible


def _top(candidates: Sequence[TrialRecord]) -> TrialRecord:
    return max(candidates, key=lambda r: (decode_of(r), -vram_or_inf(r), -r.number))


def tied_with_top(candidates: Sequence[TrialRecord], *, remeasured: bool = True) -> list[TrialRecord]:
    """The configs whose 95% interval overlaps the top one's (the top first, then by speed)."""
    if not candidates:
        return []
    interval = speed_interval if remeasured else own_interval
    top = (
        _top(candidates) if remeasured else max(candidates, key=lambda r: (own_interval(r).mean, -r.number))  # type: ignore[union-attr]
    )
    top_interval = interval(top)
    assert top_interval is not None
    tied = [r for r in candidates if (i := interval(r)) is not None and i.overlaps(top_interval)]
    return sorted(tied, key=lambda r: (r.number != top.number, -(interval(r).mean), r.number))  # type: ignore[union-attr]


def contenders(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Every config whose own interval overlaps the best one's: what the study measures again, interleaved,
    before writing the answer. At most MAX_CONTENDERS, the user's current setting always among them."""
    tied = tied_with_top(eligible(meta, records), remeasured=False)
    if len(tied) < 2:
        return []
    base = current_setting(records)
    keep = tied[:MAX_CONTENDERS]
    if base is not None and base in tied and base not in keep:
        keep[-1] = base
    return keep


def current_setting(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The user's current setting as measured: the first finished baseline trial that loaded."""
    baselines = sorted((r for r in records if is_true(r.baseline) and is_complete(r)), key=lambda r: r.number)
    measured = [r for r in baselines if is_measured(r)]
    return measured[0] if measured else None


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Feasible COMPLETE trials not dominated on (max decode_tok_s, min peak_vram_bytes), by VRAM."""
    candidates = sorted((r for r in feasible_trials(records) if has_vram(r)), key=lambda r: r.number)
    return front_of(candidates, speed=decode_of, memory=vram_of)


def deployable(
    meta: StudyMeta, records: Sequence[TrialRecord], fastest: TrialRecord | None
) -> list[TrialRecord]:
    """The Pareto front's configs a user would deploy, least VRAM first: eligible for a pick, and fully on
    the GPU or within the speed tolerance of the fastest pick (a partial offload only when it comes close)."""
    pool = {r.number for r in eligible(meta, records)}
    floor = (1 - SPEED_TOLERANCE) * decode_of(fastest) if fastest is not None else float("inf")
    return [r for r in pareto_front(records) if r.number in pool and (is_on_gpu(r) or decode_of(r) >= floor)]


# ---------------------------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------------------------


def choose_fastest(tied: list[TrialRecord], base: TrialRecord | None) -> TrialRecord:
    """Within the tie: the user's context (and tag) when their setting is tied, else the larger context,
    then fully on the GPU, then the least VRAM, then the faster."""

    def key(r: TrialRecord) -> tuple:
        at_user = base is not None and effective_ctx(r) == effective_ctx(base)
        same_tag = at_user and base is not None and r.tag == base.tag
        return (at_user, same_tag, effective_ctx(r), is_on_gpu(r), -vram_or_inf(r), decode_of(r), -r.number)

    return max(tied, key=key)
