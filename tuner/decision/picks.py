"""What the study decided: the named picks, how sure the ranking is, and the user's current setting. Pure.

Speeds are 95% intervals (tuner.decision.trials.speed_interval). The rules, in the words the report uses:

    fastest             the highest decode speed. Configs whose intervals overlap the top one are a tie (the
                        data cannot tell them apart); a tie goes to your current context when your current
                        setting is one of the tied configs, else to the larger context, then to a config fully
                        on the GPU, then to the one with the least VRAM (more headroom).
    largest_ctx_on_gpu  the largest context that runs fully on the GPU at no less than 90% of the fastest
                        decode speed.
    balanced            fully on the GPU, at least your current context, and within 10% of the fastest
                        decode speed: of those, the one that uses the least GPU memory.
    leanest             fully on the GPU with the least VRAM, whatever its speed or context.
    most_efficient      where energy was measured: the least J/token fully on the GPU at your context or
                        more, ties within noise to the faster (tuner.decision.energy).

No pick runs entirely on the CPU while any config with layers on the GPU is feasible, unless the user asked
for it (StudyMeta.allow_cpu_only). "Your current setting" is the baseline trial: the engine's own placement
at its default context, or at --baseline-ctx.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tuner.decision.energy import ENERGY_PICK_NAMES, ENERGY_PICK_TITLES, ENERGY_RULES, energy_picks
from tuner.decision.quality import (
    QUALITY_PICK_NAMES,
    QUALITY_PICK_TITLES,
    limit_of,
    quality_picks,
    quality_rules,
)
from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    feasible_trials,
    finite,
    fmt_gib,
    fmt_interval,
    fmt_percent,
    fmt_tok_s,
    has_vram,
    is_complete,
    is_cpu_only,
    is_measured,
    is_on_gpu,
    is_spilled,
    is_true,
    own_interval,
    speed_interval,
    vram_of,
    vram_or_inf,
    was_remeasured,
)
from tuner.pareto import pareto_front as front_of
from tuner.schema import StudyMeta, TrialRecord, honour_limits
from tuner.units import GiB

SPEED_TOLERANCE = 0.10  # largest_ctx_on_gpu and balanced: no slower than 90% of the fastest
MAX_CONTENDERS = 4  # at most this many configs are measured again before the answer is written

PICK_NAMES = ("fastest", "largest_ctx_on_gpu", "balanced", "leanest")
PICK_TITLES = {
    "fastest": "Fastest",
    "largest_ctx_on_gpu": "Largest context on the GPU",
    "balanced": "Balanced",
    "leanest": "Leanest on the GPU",
}
# How the report defines each pick, in one sentence.
PICK_RULES = {
    "fastest": (
        "the highest decode speed; configs within noise of it (overlapping 95% intervals) are a tie, which "
        "goes to your current context if your setting is tied, else to the larger context, then to fully on "
        "the GPU, then to the least VRAM"
    ),
    "largest_ctx_on_gpu": (
        f"the largest context that runs fully on the GPU at no less than {1 - SPEED_TOLERANCE:.0%} of the "
        "fastest decode speed"
    ),
    "balanced": (
        f"fully on the GPU, at least your current context and within {SPEED_TOLERANCE:.0%} of the fastest "
        "speed: the one that leaves the most GPU memory free"
    ),
    "leanest": "fully on the GPU with the least VRAM, whatever its speed or context",
}
PICK_TITLES.update(QUALITY_PICK_TITLES)
PICK_TITLES.update(ENERGY_PICK_TITLES)
# The quality and energy picks exist only where quality or energy was measured.
ALL_PICK_NAMES = (*PICK_NAMES, *QUALITY_PICK_NAMES, *ENERGY_PICK_NAMES)


def pick_rules(meta: StudyMeta) -> dict[str, str]:
    """Every pick's rule in one sentence, the quality picks with the study's limit."""
    return {**PICK_RULES, **quality_rules(limit_of(meta)), **ENERGY_RULES}


@dataclass(frozen=True)
class Pick:
    name: str  # one of PICK_NAMES, or "best" for best.Modelfile
    trial: TrialRecord
    reason: str  # one line for people


@dataclass(frozen=True)
class BaselineComparison:
    baseline: TrialRecord | None  # the trial with num_gpu left to the engine
    best: TrialRecord | None  # the fastest pick
    speedup: float | None  # best decode tok/s / baseline decode tok/s, when both were measured
    vram_ratio: float | None  # best peak VRAM / baseline peak VRAM, when both were measured
    summary: str  # what to tell the user, one or two sentences
    within_noise: bool = False  # the baseline is tied with the fastest (their intervals overlap)


@dataclass(frozen=True)
class Decision:
    """Everything the report says about what to deploy."""

    picks: dict[str, Pick]
    missing: dict[str, str]  # pick name -> why no trial qualifies
    baseline: BaselineComparison
    tied: list[TrialRecord] = field(default_factory=list)  # configs within noise of the top, top first
    certainty: str = ""  # one paragraph: how sure the ranking is
    level: str = ""  # "clear" | "tied" | "uncertain" | "" (nothing to rank)
    best_name: str = "fastest"  # the pick best.Modelfile holds: fastest_within_quality where quality is known

    @property
    def names(self) -> list[str]:
        """The picks this decision speaks of (chosen or missing), in the report's order."""
        return [n for n in ALL_PICK_NAMES if n in self.picks or n in self.missing]

    @property
    def best(self) -> Pick | None:
        return self.picks.get(self.best_name) or self.picks.get("fastest")


# ---------------------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------------------


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


def picks(meta: StudyMeta, records: Sequence[TrialRecord]) -> dict[str, Pick]:
    """The named recommendations that some trial qualifies for (see missing_picks for the others)."""
    return decide(meta, records).picks


def missing_picks(meta: StudyMeta, records: Sequence[TrialRecord]) -> dict[str, str]:
    """{pick name: why no trial qualifies} for the picks that picks() leaves out."""
    return decide(meta, records).missing


def best_pick(meta: StudyMeta, records: Sequence[TrialRecord]) -> Pick | None:
    """What best.Modelfile holds: the fastest pick (your context kept when your setting is within noise)."""
    best = decide(meta, records).best
    return Pick("best", best.trial, best.reason) if best else None


def decide(meta: StudyMeta, records: Sequence[TrialRecord]) -> Decision:
    records = [honour_limits(meta, r) for r in records]
    pool = eligible(meta, records)
    base = current_setting(records)
    if not pool:
        why = _no_feasible_reason(records)
        return Decision({}, {name: why for name in PICK_NAMES}, _compare(records, None, []))

    tied = tied_with_top(pool)
    base_tied = base is not None and any(r.number == base.number for r in tied)
    fastest = _choose_fastest(tied, base if base_tied else None)
    chosen: dict[str, Pick] = {"fastest": Pick("fastest", fastest, _fastest_reason(fastest, tied, base_tied))}
    missing: dict[str, str] = {}
    top_speed = max(decode_of(r) for r in tied)  # "the fastest speed": the top of the tie
    floor = (1 - SPEED_TOLERANCE) * top_speed

    on_gpu = [r for r in pool if is_on_gpu(r)]
    close = [r for r in on_gpu if decode_of(r) >= floor]
    spill_known = any(r.cpu_spill is not None or finite(r.gpu_fraction) for r in pool)
    no_gpu_why = (
        "Every feasible config spilled part of the model to the CPU: none runs fully on the GPU."
        if spill_known
        else "No feasible trial reports how much of the model is on the GPU (size_vram / size)."
    )
    if close:
        largest = max(close, key=lambda r: (effective_ctx(r), decode_of(r), -vram_or_inf(r), -r.number))
        chosen["largest_ctx_on_gpu"] = Pick(
            "largest_ctx_on_gpu", largest, _largest_reason(meta, largest, top_speed)
        )
    elif on_gpu:
        best_on_gpu = max(on_gpu, key=decode_of)
        missing["largest_ctx_on_gpu"] = (
            f"No config fully on the GPU decodes within {SPEED_TOLERANCE:.0%} of the fastest (the best "
            f"one, trial #{best_on_gpu.number}, reaches {fmt_percent(decode_of(best_on_gpu) / top_speed)})."
        )
    else:
        missing["largest_ctx_on_gpu"] = no_gpu_why

    user_ctx = effective_ctx(base) if base is not None else (meta.min_ctx or 0)
    roomy = [r for r in close if has_vram(r) and effective_ctx(r) >= user_ctx]
    relaxed = not roomy
    if relaxed:
        roomy = [r for r in close if has_vram(r)]
    if roomy:
        balanced = min(roomy, key=lambda r: (vram_of(r), -decode_of(r), -effective_ctx(r), r.number))
        chosen["balanced"] = Pick(
            "balanced", balanced, _balanced_reason(balanced, top_speed, user_ctx if not relaxed else 0)
        )
    else:
        missing["balanced"] = (
            no_gpu_why
            if not on_gpu
            else f"No config fully on the GPU with a VRAM measurement decodes within {SPEED_TOLERANCE:.0%} "
            "of the fastest."
        )

    lean_pool = [r for r in on_gpu if has_vram(r)]
    if lean_pool:
        leanest = min(lean_pool, key=lambda r: (vram_of(r), -decode_of(r), -effective_ctx(r), r.number))
        chosen["leanest"] = Pick(
            "leanest",
            leanest,
            f"The least VRAM of the configs fully on the GPU ({fmt_gib(leanest.peak_vram_bytes)}), at "
            f"{fmt_percent(decode_of(leanest) / top_speed)} of the fastest speed.",
        )
    else:
        missing["leanest"] = (
            no_gpu_why if not on_gpu else "No config fully on the GPU has a VRAM measurement."
        )

    def fastest_of(candidates: list[TrialRecord]) -> tuple[TrialRecord, str]:
        among = tied_with_top(candidates)
        tied_base = base is not None and any(r.number == base.number for r in among)
        trial = _choose_fastest(among, base if tied_base else None)
        return trial, _fastest_reason(trial, among, tied_base)

    q_chosen, q_missing = quality_picks(meta, pool, user_ctx, fastest_of)
    chosen.update({name: Pick(name, trial, reason) for name, (trial, reason) in q_chosen.items()})
    missing.update(q_missing)
    e_chosen, e_missing = energy_picks(pool, user_ctx)
    chosen.update({name: Pick(name, trial, reason) for name, (trial, reason) in e_chosen.items()})
    missing.update(e_missing)
    best_name = "fastest_within_quality" if "fastest_within_quality" in chosen else "fastest"
    comparison = _compare(records, fastest, tied)
    level, certainty = _certainty(meta, pool, tied, fastest)
    return Decision(chosen, missing, comparison, tied, certainty, level, best_name)


def _choose_fastest(tied: list[TrialRecord], base: TrialRecord | None) -> TrialRecord:
    """Within the tie: the user's context (and tag) when their setting is tied, else the larger context,
    then fully on the GPU, then the least VRAM, then the faster."""

    def key(r: TrialRecord) -> tuple:
        at_user = base is not None and effective_ctx(r) == effective_ctx(base)
        same_tag = at_user and base is not None and r.tag == base.tag
        return (at_user, same_tag, effective_ctx(r), is_on_gpu(r), -vram_or_inf(r), decode_of(r), -r.number)

    return max(tied, key=key)


def _fastest_reason(fastest: TrialRecord, tied: list[TrialRecord], base_tied: bool) -> str:
    others = len(tied) - 1
    if others == 0:
        return f"Faster than every other config beyond noise ({fmt_interval(speed_interval(fastest))} tok/s)."
    if base_tied and is_true(fastest.baseline):
        why = "your current setting is one of them, so it stays"
    elif base_tied:
        why = f"your current setting is one of them, so your context ({effective_ctx(fastest)}) stays"
    else:
        why = _tie_break_words(fastest, tied)
    return f"Tied within noise with {others} other config{'s' if others > 1 else ''}; {why}."


def _tie_break_words(fastest: TrialRecord, tied: list[TrialRecord]) -> str:
    ctx = effective_ctx(fastest)
    if any(effective_ctx(r) < ctx for r in tied):
        return f"picked for the larger context ({ctx})"
    if is_on_gpu(fastest) and any(not is_on_gpu(r) for r in tied):
        return "picked for running fully on the GPU"
    if any(vram_or_inf(r) > vram_or_inf(fastest) for r in tied):
        return "picked for the least VRAM"
    return "picked as the fastest of them"


def _largest_reason(meta: StudyMeta, largest: TrialRecord, top_speed: float) -> str:
    ctx = effective_ctx(largest)
    capped = f" (the engine caps num_ctx {largest.num_ctx} at {ctx})" if ctx != largest.num_ctx else ""
    trained = meta.context_length.get(largest.tag) if isinstance(meta.context_length, dict) else None
    of_trained = f" of {trained} trained" if finite(trained) and trained >= ctx else ""
    return (
        f"{ctx} tokens{of_trained}{capped} fully on the GPU, at "
        f"{fmt_percent(decode_of(largest) / top_speed)} of the fastest speed."
    )


def _balanced_reason(balanced: TrialRecord, top_speed: float, user_ctx: int) -> str:
    floor = f" with at least your context ({user_ctx})" if user_ctx else ""
    return (
        f"The least VRAM fully on the GPU{floor} within {SPEED_TOLERANCE:.0%} of the fastest "
        f"(it reaches {fmt_percent(decode_of(balanced) / top_speed)})."
    )


def _certainty(
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


def _no_feasible_reason(records: Sequence[TrialRecord]) -> str:
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


# ---------------------------------------------------------------------------------------------------------
# Your current setting
# ---------------------------------------------------------------------------------------------------------


def baseline_comparison(records: Sequence[TrialRecord], meta: StudyMeta | None = None) -> BaselineComparison:
    """The user's current setting (the baseline trial) against the fastest pick."""
    return decide(meta or bare_meta(), records).baseline


def _compare(
    records: Sequence[TrialRecord], best: TrialRecord | None, tied: Sequence[TrialRecord]
) -> BaselineComparison:
    baselines = sorted((r for r in records if is_true(r.baseline)), key=lambda r: r.number)
    if not baselines:
        return BaselineComparison(
            None, best, None, None, "No baseline trial (num_gpu left to the engine) was run in this study."
        )
    finished = [r for r in baselines if is_complete(r)]
    measured = [r for r in finished if is_measured(r)]
    baseline = (measured or finished or baselines)[0]
    label = (
        f"Your current setting, the engine's own placement (trial #{baseline.number}, {baseline.tag}, "
        f"num_ctx {baseline.num_ctx or 'default'})"
    )
    if not is_complete(baseline):
        return BaselineComparison(
            baseline, best, None, None, f"{label} did not finish (state {baseline.state})."
        )
    if not is_measured(baseline):
        message = f"{label} did not load: {baseline.error or 'no message from the server'}."
        if best is not None:
            message += (
                f" autotune's fastest setting runs at {fmt_tok_s(decode_of(best))} tok/s "
                f"(trial #{best.number})."
            )
        return BaselineComparison(baseline, best, None, None, message)

    notes = []
    if is_spilled(baseline):
        notes.append(
            f"your setting spills to the CPU ({fmt_percent(baseline.gpu_fraction)} of the model on the GPU)"
        )
    if not is_true(baseline.feasible):
        notes.append(f"your setting breaks a constraint ({baseline.error or 'see the constraints'})")
    note = f" Note: {'; '.join(notes)}." if notes else ""
    speed = f"{fmt_interval(speed_interval(baseline))} tok/s"
    if best is None:
        return BaselineComparison(
            baseline,
            None,
            None,
            None,
            f"{label} runs at {speed}; no feasible trial to compare it with.{note}",
        )
    within = any(r.number == baseline.number for r in tied)
    speedup = decode_of(best) / decode_of(baseline)
    vram_ratio = (
        vram_of(best) / vram_of(baseline)
        if has_vram(best) and has_vram(baseline) and vram_of(baseline) > 0
        else None
    )
    if within:
        summary = (
            f"{label} is within noise of the fastest: {speed}. You need not change anything for speed; "
            f"the best pick keeps your context ({effective_ctx(best)})."
        )
    else:
        summary = (
            f"The fastest pick (trial #{best.number}) decodes at {fmt_interval(speed_interval(best))} tok/s, "
            f"{speedup:.2f}x {label[0].lower() + label[1:]} at {speed}"
        )
        if vram_ratio is not None:
            summary += f", using {vram_ratio:.2f}x its peak VRAM"
        summary += "."
    return BaselineComparison(baseline, best, speedup, vram_ratio, summary + note, within)


def bare_meta() -> StudyMeta:
    """A study description with no constraints, for deciding on records alone."""
    return StudyMeta(
        schema_version=0,
        study_name="",
        engine="",
        model="",
        tags=[],
        block_count={},
        context_length={},
        ctx_ladder=[],
        budget=0,
        vram_limit_bytes=None,
        min_ctx=None,
        gpu_only=False,
        depth=0.0,
        num_predict=0,
        fingerprint={},
    )


def change_against(base: TrialRecord | None, r: TrialRecord) -> str:
    """What a pick changes against the user's current setting, in a few words."""
    if base is None:
        return "no current setting measured"
    if r.number == base.number:
        return "none: your current setting"
    parts = []
    if r.tag != base.tag:
        parts.append(f"tag {r.tag}")
    ctx, base_ctx = effective_ctx(r), effective_ctx(base)
    if ctx != base_ctx:
        parts.append(f"num_ctx {base_ctx} → {ctx}")
    if r.num_gpu >= 0:
        parts.append(f"num_gpu {r.num_gpu}")
    speed = decode_of(r) / decode_of(base) if is_measured(base) else None
    tied = (a := speed_interval(r)) is not None and (b := speed_interval(base)) is not None and a.overlaps(b)
    if speed is not None:
        parts.append("same speed within noise" if tied else f"{speed:.2f}x the speed")
    if has_vram(r) and has_vram(base):
        delta = vram_of(r) - vram_of(base)
        if abs(delta) < 0.005 * GiB:
            parts.append("same VRAM")
        else:
            parts.append(f"{'+' if delta >= 0 else '-'}{fmt_gib(abs(delta))} VRAM")
    return ", ".join(parts) or "same settings"
