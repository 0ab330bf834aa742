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

from collections.abc import Sequence
from dataclasses import dataclass, field

from tuner.decision.baseline import BaselineComparison, change_against, compare_baseline
from tuner.decision.candidates import (
    MAX_CONTENDERS,
    SPEED_TOLERANCE,
    choose_fastest,
    contenders,
    current_setting,
    deployable,
    eligible,
    pareto_front,
    tied_with_top,
)
from tuner.decision.energy import ENERGY_PICK_NAMES, ENERGY_PICK_TITLES, ENERGY_RULES, energy_picks
from tuner.decision.quality import (
    QUALITY_PICK_NAMES,
    QUALITY_PICK_TITLES,
    limit_of,
    quality_picks,
    quality_rules,
)
from tuner.decision.reasons import (
    balanced_reason,
    certainty_of,
    fastest_reason,
    largest_reason,
    no_feasible_reason,
)
from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    finite,
    fmt_gib,
    fmt_percent,
    has_vram,
    is_on_gpu,
    vram_of,
    vram_or_inf,
)
from tuner.schema import StudyMeta, TrialRecord, honour_limits

__all__ = [
    "ALL_PICK_NAMES",
    "MAX_CONTENDERS",
    "PICK_NAMES",
    "PICK_RULES",
    "PICK_TITLES",
    "SPEED_TOLERANCE",
    "BaselineComparison",
    "Decision",
    "Pick",
    "bare_meta",
    "baseline_comparison",
    "best_pick",
    "change_against",
    "contenders",
    "current_setting",
    "decide",
    "deployable",
    "eligible",
    "missing_picks",
    "pareto_front",
    "pick_rules",
    "picks",
    "tied_with_top",
]

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
        why = no_feasible_reason(records)
        return Decision({}, {name: why for name in PICK_NAMES}, compare_baseline(records, None, []))

    tied = tied_with_top(pool)
    base_tied = base is not None and any(r.number == base.number for r in tied)
    fastest = choose_fastest(tied, base if base_tied else None)
    chosen: dict[str, Pick] = {"fastest": Pick("fastest", fastest, fastest_reason(fastest, tied, base_tied))}
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
            "largest_ctx_on_gpu", largest, largest_reason(meta, largest, top_speed)
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
            "balanced", balanced, balanced_reason(balanced, top_speed, user_ctx if not relaxed else 0)
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
        trial = choose_fastest(among, base if tied_base else None)
        return trial, fastest_reason(trial, among, tied_base)

    q_chosen, q_missing = quality_picks(meta, pool, user_ctx, fastest_of)
    chosen.update({name: Pick(name, trial, reason) for name, (trial, reason) in q_chosen.items()})
    missing.update(q_missing)
    e_chosen, e_missing = energy_picks(pool, user_ctx)
    chosen.update({name: Pick(name, trial, reason) for name, (trial, reason) in e_chosen.items()})
    missing.update(e_missing)
    best_name = "fastest_within_quality" if "fastest_within_quality" in chosen else "fastest"
    comparison = compare_baseline(records, fastest, tied)
    level, certainty = certainty_of(meta, pool, tied, fastest)
    return Decision(chosen, missing, comparison, tied, certainty, level, best_name)


# ---------------------------------------------------------------------------------------------------------
# Your current setting
# ---------------------------------------------------------------------------------------------------------


def baseline_comparison(records: Sequence[TrialRecord], meta: StudyMeta | None = None) -> BaselineComparison:
    """The user's current setting (the baseline trial) against the fastest pick."""
    return decide(meta or bare_meta(), records).baseline


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
