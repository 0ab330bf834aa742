"""The words for each pick's choice, how sure the ranking is, and why nothing could be picked. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.candidates import SPEED_TOLERANCE
from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    finite,
    fmt_interval,
    fmt_percent,
    is_complete,
    is_measured,
    is_on_gpu,
    is_true,
    speed_interval,
    vram_or_inf,
    was_remeasured,
)
from tuner.schema import StudyMeta, TrialRecord


def fastest_reason(fastest: TrialRecord, tied: list[TrialRecord], base_tied: bool) -> str:
    others = len(tied) - 1
    if others == 0:
        return f"Faster than every other config beyond noise ({fmt_interval(speed_interval(fastest))} tok/s)."
    if base_tied and is_true(fastest.baseline):
        why = "your current setting is one of them, so it stays"
    elif base_tied:
        why = f"your current setting is one of them, so your context ({effective_ctx(fastest)}) stays"
    else:
        why = tie_break_words(fastest, tied)
    return f"Tied within noise with {others} other config{'s' if others > 1 else ''}; {why}."


def tie_break_words(fastest: TrialRecord, tied: list[TrialRecord]) -> str:
    ctx = effective_ctx(fastest)
    if any(effective_ctx(r) < ctx for r in tied):
        return f"picked for the larger context ({ctx})"
    if is_on_gpu(fastest) and any(not is_on_gpu(r) for r in tied):
        return "picked for running fully on the GPU"
    if any(vram_or_inf(r) > vram_or_inf(fastest) for r in tied):
        return "picked for the least VRAM"
    return "picked as the fastest of them"


def largest_reason(meta: StudyMeta, largest: TrialRecord, top_speed: float) -> str:
    ctx = effective_ctx(largest)
    capped = f" (the engine caps num_ctx {largest.num_ctx} at {ctx})" if ctx != largest.num_ctx else ""
    trained = meta.context_length.get(largest.tag) if isinstance(meta.context_length, dict) else None
    of_trained = f" of {trained} trained" if finite(trained) and trained >= ctx else ""
    return (
        f"{ctx} tokens{of_trained}{capped} fully on the GPU, at "
        f"{fmt_percent(decode_of(largest) / top_speed)} of the fastest speed."
    )


def balanced_reason(balanced: TrialRecord, top_speed: float, user_ctx: int) -> str:
    floor = f" with at least your context ({user_ctx})" if user_ctx else ""
    return (
        f"The least VRAM fully on the GPU{floor} within {SPEED_TOLERANCE:.0%} of the fastest "
        f"(it reaches {fmt_percent(decode_of(balanced) / top_speed)})."
    )


def certainty_of(
    meta: StudyMeta, pool: list[TrialRecord], tied: list[TrialRecord], fastest: TrialRecord
) -> tuple[str, str]:
    """How sure the ranking is, as a level and one paragraph."""
    target = getattr(meta, "target_rse", 0.02) or 0.02
    noisy = [r for r in tied if is_true(r.noisy)]
    again = [r for r in tied if was_remeasured(r)]
    rounds = int((meta.remeasure or {}).get("rounds", 0)) if isinstance(meta.remeasure, dict) else 0
    top = speed_interval(tied[0])
    width = f"+-{100 * top.relative_half_width:.1f}%" if top is not None and top.known else "no spread known"
    if len(tied) == 1:
        level = "clear"
        text = (
            f"Clear: the fastest config ({fmt_interval(top)} tok/s, 95% interval {width}) is ahead of every "
            f"other of the {len(pool)} feasible configs beyond noise."
        )
    else:
        level = "tied"
        text = (
            f"Tied: {len(tied)} configs are within noise of each other (95% intervals overlapping the top's, "
            f"{width}); the pick among them follows the tie-breaks (your context, the larger context, fully "
            "on the GPU, the least VRAM), not a speed difference the data cannot show."
        )
    if again:
        text += (
            f" {len(again)} contenders were measured again after the search, interleaved (A/B/.../B/A, "
            f"{rounds} round{'s' if rounds != 1 else ''}) so that drift hits them alike; their intervals "
            "come from that re-measure."
        )
    elif len(tied) > 1:
        text += " They were not measured again (the study ran without the re-measure)."
    if noisy:
        level = "uncertain"
        text += (
            f" Uncertain: {len(noisy)} of them {'was' if len(noisy) == 1 else 'were'} noisy (relative "
            f"standard error still at or above {100 * target:.0f}% after every repeat): trial"
            f"{'s' if len(noisy) > 1 else ''} {', '.join(f'#{r.number}' for r in noisy)}."
        )
    return level, text


def no_feasible_reason(records: Sequence[TrialRecord]) -> str:
    complete = [r for r in records if is_complete(r)]
    if not records:
        return "The study has no trials yet."
    if not complete:
        return "No trial has finished yet."
    failed = [r for r in complete if not is_measured(r)]
    if len(failed) == len(complete):
        return f"None of the {len(complete)} finished trials loaded."
    return (
        f"No finished trial met every constraint ({len(failed)} did not load, "
        f"{len(complete) - len(failed)} loaded but broke a constraint)."
    )
