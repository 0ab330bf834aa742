"""Predicted against measured VRAM: how far the memory estimator was from each loaded trial.

The figure (Agg, like plots.py) and the numbers the report prints beside it: the measured/predicted ratio
per loaded trial, the margin the study ended with, and how many configs it did not load because of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from matplotlib.figure import Figure

from tuner.decision.trials import finite, is_complete, is_measured
from tuner.report.plots import DPI, short_tag, tag_colors
from tuner.schema import StudyMeta, TrialRecord
from tuner.units import GiB


@dataclass(frozen=True)
class PredictionSummary:
    loaded: int  # loaded trials with a prediction and a measured peak
    median_ratio: float
    worst_ratio: float  # the largest measured / predicted
    best_ratio: float  # the smallest
    final_margin: float | None
    skipped: int  # configs not loaded: predicted x margin over a GPU's free memory
    failed_loads: int  # loads that failed for lack of memory although the prediction let them through


def _pairs(records: Sequence[TrialRecord]) -> list[tuple[TrialRecord, float, float]]:
    out = []
    for r in records:
        predicted, peak = r.predicted_vram_bytes, r.peak_vram_bytes
        if not (is_complete(r) and is_measured(r) and finite(predicted) and finite(peak)):
            continue
        if predicted is not None and peak is not None and predicted > 0:
            out.append((r, predicted / GiB, peak / GiB))
    return out


def summarize(records: Sequence[TrialRecord]) -> PredictionSummary | None:
    """None when the study made no predictions (--no-predict, no GPU visible, no tensor list)."""
    if not any(finite(r.predicted_vram_bytes) for r in records):
        return None
    pairs = _pairs(records)
    ratios = [m / p for _, p, m in pairs]
    margins = [r.margin for r in sorted(records, key=lambda r: r.number) if finite(r.margin)]
    return PredictionSummary(
        loaded=len(pairs),
        median_ratio=median(ratios) if ratios else float("nan"),
        worst_ratio=max(ratios, default=float("nan")),
        best_ratio=min(ratios, default=float("nan")),
        final_margin=margins[-1] if margins else None,
        skipped=sum(1 for r in records if r.predicted_skip),
        failed_loads=sum(1 for r in records if is_complete(r) and r.oom and not r.predicted_skip),
    )


def plot_predicted_vs_measured(meta: StudyMeta, records: Sequence[TrialRecord]) -> Figure | None:
    """Measured peak VRAM against the estimator's prediction, one colour per tag, with the y = x line."""
    pairs = _pairs(records)
    if not pairs:
        return None
    colors = tag_colors(meta, records)
    fig = Figure(figsize=(7.5, 6.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    top = max(max(p, m) for _, p, m in pairs) * 1.08
    ax.plot([0, top], [0, top], color="#555555", lw=1.0, ls="--", zorder=1, label="measured = predicted")
    for tag in colors:
        mine = [(p, m) for r, p, m in pairs if r.tag == tag]
        if mine:
            ax.scatter(
                [p for p, _ in mine],
                [m for _, m in mine],
                s=36,
                color=colors[tag],
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
                label=short_tag(tag),
            )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted VRAM (GiB, tuner.estimate)")
    ax.set_ylabel("measured peak VRAM (GiB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    ax.set_title(f"{meta.model}: memory estimate against measurement", fontsize=11)
    return fig
