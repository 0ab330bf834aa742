"""The picks that weigh quality, and what a faster tag costs in it. Pure.

Each trial record carries its (tag, KV cache type)'s fidelity against the reference tag when the study
measured it (TrialRecord.quality_kl, the mean KL divergence in nats per token, with its 95% interval, and
quality_top1). Two picks use it:

    best_quality_on_gpu     the most faithful tag that runs fully on the GPU at your context: the lowest
                            quality loss; tags whose KL intervals overlap it are equally faithful, and of
                            those configs the fastest is taken.
    fastest_within_quality  the fastest config whose tag loses at most the stated quality loss
                            (--max-quality-loss, else DEFAULT_MAX_QUALITY_LOSS), with the fastest pick's
                            tie-breaks. When quality was measured, best.Modelfile holds this pick.

DEFAULT_MAX_QUALITY_LOSS is a policy, not a measurement: 0.05 nats sits between llama.cpp's published mean
KL divergence of Q4_K_M (0.031) and Q4_0 (0.072) on LLaMA 3 8B (tools/perplexity/README.md), so by default a
K-quant at 4 bits passes and the legacy 4-bit type does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    finite,
    fmt_percent,
    fmt_tok_s,
    is_measured,
    is_on_gpu,
    speed_interval,
)
from tuner.schema import StudyMeta, TrialRecord

DEFAULT_MAX_QUALITY_LOSS = 0.05  # nats per token (see the module docstring)
QUALITY_PICK_NAMES = ("best_quality_on_gpu", "fastest_within_quality")
QUALITY_PICK_TITLES = {
    "best_quality_on_gpu": "Best quality on the GPU",
    "fastest_within_quality": "Fastest within the quality limit",
}
QUALITY_TABLE_TITLES = {
    "best_quality_on_gpu": "best quality on GPU",
    "fastest_within_quality": "fastest within quality",
}


def quality_rules(limit: float) -> dict[str, str]:
    return {
        "best_quality_on_gpu": (
            "the lowest quality loss (KL divergence from the most precise tag) among the configs fully on "
            "the GPU at your context; tags within noise of it count as equal, and the fastest of those wins"
        ),
        "fastest_within_quality": (
            f"the fastest config whose tag loses at most {limit:g} nats of KL divergence per token against "
            "the most precise tag (best.Modelfile holds it when quality was measured)"
        ),
    }


def has_quality(records: Sequence[TrialRecord]) -> bool:
    return any(finite(r.quality_kl) for r in records)


def limit_of(meta: StudyMeta) -> float:
    value = getattr(meta, "max_quality_loss", None)
    return float(value) if finite(value) else DEFAULT_MAX_QUALITY_LOSS


def fmt_quality(r: TrialRecord | None) -> str:
    """'0.0312 nats, top-1 92%' (the trial's tag), 'reference' or 'not measured'."""
    if r is None or not finite(r.quality_kl):
        return "not measured"
    if r.quality_kl == 0 and r.quality_kl_high == 0:
        return "0 nats: the reference"
    top1 = f", top-1 {fmt_percent(r.quality_top1)}" if finite(r.quality_top1) else ""
    return f"{r.quality_kl:.3g} nats{top1}"


def _kl_high(r: TrialRecord) -> float:
    return float(r.quality_kl_high) if finite(r.quality_kl_high) else float(r.quality_kl or 0.0)


def _kl_low(r: TrialRecord) -> float:
    return float(r.quality_kl_low) if finite(r.quality_kl_low) else float(r.quality_kl or 0.0)


def quality_picks(
    meta: StudyMeta,
    pool: Sequence[TrialRecord],
    user_ctx: int,
    fastest_of: Callable[[list[TrialRecord]], tuple[TrialRecord, str]],
) -> tuple[dict[str, tuple[TrialRecord, str]], dict[str, str]]:
    """{pick name: (trial, reason)} and {pick name: why none} for the quality picks; both empty when no
    trial carries a quality measurement. `fastest_of` is the fastest pick's rule over a candidate list."""
    if not has_quality(pool):
        return {}, {}
    chosen: dict[str, tuple[TrialRecord, str]] = {}
    missing: dict[str, str] = {}
    limit = limit_of(meta)
    known = [r for r in pool if finite(r.quality_kl)]

    on_gpu = [r for r in known if is_on_gpu(r)]
    at_ctx = [r for r in on_gpu if effective_ctx(r) >= user_ctx] or on_gpu
    if at_ctx:
        best_kl = min(at_ctx, key=lambda r: (r.quality_kl, _kl_high(r)))
        equal = [r for r in at_ctx if _kl_low(r) <= _kl_high(best_kl)]
        pick = max(equal, key=lambda r: (decode_of(r), -(r.quality_kl or 0.0), -r.number))
        reaches = any(effective_ctx(r) >= user_ctx for r in on_gpu)
        where = f"at your context ({user_ctx}) or more" if reaches else "(none reaches your context)"
        chosen["best_quality_on_gpu"] = (
            pick,
            f"The most faithful tag fully on the GPU {where}: {pick.tag} (quality loss {fmt_quality(pick)}), "
            "its fastest config there.",
        )
    else:
        missing["best_quality_on_gpu"] = (
            "No feasible config with a quality measurement runs fully on the GPU."
        )

    within = [r for r in known if (r.quality_kl or 0.0) <= limit]
    if within:
        trial, reason = fastest_of(within)
        chosen["fastest_within_quality"] = (
            trial,
            f"The fastest config whose tag loses at most {limit:g} nats ({trial.tag}: {fmt_quality(trial)}). "
            + reason,
        )
    else:
        least = min(known, key=lambda r: r.quality_kl or 0.0)
        missing["fastest_within_quality"] = (
            f"No feasible config's tag stays within {limit:g} nats of KL divergence (the least, {least.tag}, "
            f"loses {fmt_quality(least)})."
        )
    return chosen, missing


def faster_over_limit(records: Sequence[TrialRecord], best: TrialRecord, limit: float) -> TrialRecord | None:
    """The fastest measured config of another tag that beats `best` beyond noise but loses more than
    `limit`, and breaks no constraint but the quality one: what the quality limit gave up."""
    mine = speed_interval(best)
    faster = [
        r
        for r in records
        if is_measured(r)
        and r.tag != best.tag
        and finite(r.quality_kl)
        and (r.quality_kl or 0.0) > limit
        and (theirs := speed_interval(r)) is not None
        and mine is not None
        and theirs.above(mine)
        and all(v <= 0 for k, v in (r.constraints or {}).items() if k != "quality_over")
    ]
    return max(faster, key=decode_of, default=None)


def quality_cost(
    records: Sequence[TrialRecord], fastest: TrialRecord | None, within: TrialRecord | None, limit: float
) -> str:
    """One or two sentences: what the faster tag costs in quality, and what best.Modelfile does about it."""
    best = within or fastest
    if best is None or not finite(best.quality_kl):
        return ""
    if within is None:
        return (
            f"The fastest tag, {best.tag}, loses {fmt_quality(best)} against the most precise tag, and no "
            f"tag stays within {limit:g} nats: pass a larger --max-quality-loss to accept one."
        )
    faster = faster_over_limit(records, within, limit)
    if faster is None:
        return (
            f"The best pick, {within.tag}, loses {fmt_quality(within)} against the most precise tag, within "
            f"the {limit:g} nats limit; no tag over the limit is faster beyond noise."
        )
    return (
        f"The faster tag, {faster.tag} ({fmt_tok_s(decode_of(faster))} tok/s, trial #{faster.number}, "
        f"{decode_of(faster) / decode_of(within):.2f}x), loses {fmt_quality(faster)} against the most precise "
        f"tag, over the {limit:g} nats limit: the best pick takes {within.tag} ({fmt_quality(within)}) "
        "instead (--max-quality-loss sets the limit)."
    )
