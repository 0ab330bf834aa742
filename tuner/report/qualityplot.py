"""The Pareto figure's quality panel: each tag's quality loss (mean KL divergence from the most precise tag,
with its 95% interval over the prompts), in the tag's colour, beside the speed/memory plane."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.quality import limit_of
from tuner.decision.trials import finite
from tuner.report.plots import _GREY, _LIMIT, tag_labels
from tuner.schema import StudyMeta, TrialRecord


def tag_losses(records: Sequence[TrialRecord]) -> dict[str, TrialRecord]:
    """One record per tag that carries its quality (with the default KV cache where there are several)."""
    out: dict[str, TrialRecord] = {}
    for r in sorted(records, key=lambda r: (r.kv_cache_type not in (None, "f16"), r.number)):
        if finite(r.quality_kl) and r.tag not in out:
            out[r.tag] = r
    return out


def quality_panel(ax, meta: StudyMeta, records: Sequence[TrialRecord], colors: dict[str, tuple]) -> None:
    losses = tag_losses(records)
    tags = sorted(losses, key=lambda t: losses[t].quality_kl or 0.0)
    labels = tag_labels(tags)
    ys = list(range(len(tags)))
    for y, tag in zip(ys, tags):
        r = losses[tag]
        kl = float(r.quality_kl or 0.0)
        low = float(r.quality_kl_low) if finite(r.quality_kl_low) else kl
        high = float(r.quality_kl_high) if finite(r.quality_kl_high) else kl
        ax.barh([y], [kl], color=[colors.get(tag, _GREY)], alpha=0.85, height=0.6)
        ax.plot([low, high], [y, y], color="black", lw=1.0)
        ax.text(max(high, kl), y, f" {kl:.3g}", va="center", fontsize=7.5)
    limit = limit_of(meta)
    top = max([float(losses[t].quality_kl_high or losses[t].quality_kl or 0.0) for t in tags] + [limit * 0.5])
    if limit <= top * 1.5:
        ax.axvline(limit, color=_LIMIT, ls="--", lw=1.0)
        ax.text(limit, len(tags) - 0.45, " limit", color=_LIMIT, fontsize=7.5, va="bottom")
    ax.set_xlim(0, top * 1.45 or 1.0)
    ax.set_yticks(ys, [labels[t] for t in tags], fontsize=7.5)
    ax.set_ylim(-0.6, len(tags) - 0.2)
    ax.set_xlabel("quality loss (KL, nats/token)", fontsize=8)
    ax.set_title("quality (lower is closer\nto the most precise tag)", fontsize=8.5)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3)
