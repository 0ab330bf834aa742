"""The report's first figure: decode speed against peak VRAM, the Pareto front, the picks labelled.

- Every loaded trial is a point with its 95% interval as a vertical bar; the feasible front is a staircase.
- The x axis fits the data. The GPUs' memory is a dashed line when it lies within reach of the data, else
  an arrow at the right edge that says how much there is.
- Trials that did not load sit in a shaded band below zero, at the VRAM they were predicted to need (or,
  without a prediction, the size the engine reported): x = the GPU ran out of memory, + = host RAM ran out,
  diamond = not loaded because the estimator predicted it would not fit. Those predicted far past the data
  are drawn at the right edge, and the band says how far they went.
- Pick labels are placed one by one around their own point, each where it overlaps no label placed before
  and stays inside the axes, with a line to the point (Annotation gid "pick:<trial number>").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

from tuner.decision.picks import PICK_TITLES, Pick, pareto_front
from tuner.decision.quality import has_quality
from tuner.decision.trials import (
    decode_of,
    did_not_load,
    failure_kind,
    finite,
    has_vram,
    is_complete,
    is_feasible,
    is_measured,
    is_true,
    speed_interval,
    vram_of,
)
from tuner.report.plots import (
    _GREY,
    _LIMIT,
    DPI,
    _scatter_trial,
    _status_handles,
    _tag_handles,
    gpu_memory_bytes,
    memory_line,
    tag_colors,
)
from tuner.report.qualityplot import quality_panel
from tuner.schema import StudyMeta, TrialRecord
from tuner.units import GiB

_FAIL_BAND = "#f2dede"
_FAIL_MARKERS = {"gpu": "x", "host": "P", "predicted": "D", "other": "x"}
_FAIL_WORDS = {
    "gpu": "did not load: GPU memory",
    "host": "did not load: host RAM",
    "predicted": "not loaded: predicted not to fit",
    "other": "did not load",
}
SHORT_LABELS = {
    "fastest": "fastest",
    "largest_ctx_on_gpu": "largest ctx on GPU",
    "balanced": "balanced",
    "leanest": "leanest",
    "best_quality_on_gpu": "best quality",
    "fastest_within_quality": "fastest in quality limit",
    "most_efficient": "least energy",
}
CAPACITY_REACH = 1.35  # draw the GPU memory line when it is within this factor of the data's extent


def failed_x_bytes(record: TrialRecord) -> float | None:
    """Where a trial that did not load is drawn: its predicted VRAM, else the size the engine reported."""
    for value in (record.predicted_vram_bytes, record.size_bytes):
        if finite(value) and value > 0:
            return float(value)
    return None


def plot_pareto(
    meta: StudyMeta, records: Sequence[TrialRecord], chosen: dict[str, Pick] | None = None
) -> Figure:
    """Decode tok/s against peak VRAM (GiB): one colour per tag, the feasible front connected."""
    colors = tag_colors(meta, records)
    fig = Figure(figsize=(10.4, 4.9), dpi=DPI, layout="constrained")
    if has_quality(records):  # a second panel: each tag's quality loss, in the tag's colour
        grid = fig.add_gridspec(1, 2, width_ratios=[4.0, 1.0])
        ax = fig.add_subplot(grid[0])
        quality_panel(fig.add_subplot(grid[1]), meta, records, colors)
    else:
        ax = fig.add_subplot()
    placed = [r for r in records if is_complete(r) and is_measured(r) and has_vram(r)]
    failed = sorted((r for r in records if did_not_load(r)), key=lambda r: r.number)
    capacity = gpu_memory_bytes(meta)

    data_right = max([vram_of(r) / GiB for r in placed] or [1.0])
    reach = max(
        data_right, (capacity or 0) / GiB if capacity and capacity / GiB <= data_right * CAPACITY_REACH else 0
    )
    x_right = max(reach * 1.06, 1.0)

    for r in placed:
        interval = speed_interval(r)
        x, y = vram_of(r) / GiB, decode_of(r)
        if interval is not None and interval.known:
            ax.plot([x, x], [interval.low, interval.high], color=colors[r.tag], lw=0.9, alpha=0.55, zorder=2)
        _scatter_trial(ax, x, y, r, colors[r.tag])

    front = pareto_front(records)
    if front:
        ax.plot(
            [vram_of(r) / GiB for r in front],
            [decode_of(r) for r in front],
            color="black",
            lw=1.4,
            alpha=0.75,
            zorder=2,
            drawstyle="steps-post" if len(front) > 1 else "default",
        )
        ax.scatter(
            [vram_of(r) / GiB for r in front],
            [decode_of(r) for r in front],
            s=190,
            facecolors="none",
            edgecolors="black",
            linewidths=1.4,
            zorder=4,
        )

    highs = [i.high for r in placed if (i := speed_interval(r)) is not None]
    top = max(highs or [1.0]) * 1.12
    kinds: set[str] = set()
    if failed:
        band = 0.14 * top
        ax.axhspan(-band, 0, color=_FAIL_BAND, zorder=0)
        beyond = []
        unknown = 0
        for n, r in enumerate(failed):
            where = failed_x_bytes(r)
            if where is None:
                unknown += 1
                continue
            kind = failure_kind(r) or "other"
            kinds.add(kind)
            x = where / GiB
            marker = _FAIL_MARKERS[kind]
            if x > x_right:
                beyond.append(x)
                x = x_right * 0.995
            filled = marker in ("x", "P")  # line markers take one colour; the diamond is hollow
            ax.scatter(
                [x],
                [-band * (0.3 + 0.15 * (n % 4))],
                marker=marker,
                s=46 if filled else 26,
                c=[colors[r.tag]] if filled else "none",
                edgecolors=None if filled else [colors[r.tag]],
                linewidths=1.6,
                zorder=3,
            )
        note = f"did not load ({len(failed)}), at their predicted VRAM"
        if beyond:
            note += f"; {len(beyond)} past the edge, up to {max(beyond):.1f} GiB"
        if unknown:
            note += f"; {unknown} without a size, not drawn"
        ax.text(0.005, -band * 0.93, note, transform=ax.get_yaxis_transform(), fontsize=7.5, color="#a94442")
        ax.set_ylim(-band, top)
    else:
        ax.set_ylim(0, top)
    ax.set_xlim(0, x_right)
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= top])

    _memory_marks(ax, meta, capacity, x_right)
    if not placed:
        ax.text(
            0.5,
            0.55,
            "No trial loaded, so there is nothing to place on the speed/memory plane.",
            transform=ax.transAxes,
            ha="center",
            fontsize=11,
            color=_GREY,
        )
    ax.set_xlabel("peak VRAM (GiB)")
    ax.set_ylabel("decode speed (tokens/s, 95% interval)")
    ax.grid(True, alpha=0.3)
    ax.set_title(
        f"{meta.model}: decode speed vs peak VRAM ({sum(map(is_complete, records))} trials, "
        f"{sum(map(is_feasible, records))} feasible)",
        fontsize=11,
    )
    handles = _tag_handles(colors, records) + _status_handles(front=bool(front), failed=False)
    for kind in ("gpu", "host", "predicted", "other"):
        if kind in kinds:
            marker = _FAIL_MARKERS[kind]
            handles.append(
                Line2D(
                    [],
                    [],
                    color=_GREY,
                    marker=marker,
                    ls="",
                    markersize=6,
                    markerfacecolor="none" if marker == "D" else _GREY,
                    label=_FAIL_WORDS[kind],
                )
            )
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    base = next((r for r in sorted(placed, key=lambda r: r.number) if is_true(r.baseline)), None)
    if chosen or base is not None:
        place_pick_labels(fig, ax, chosen or {}, base)
    return fig


def _memory_marks(ax, meta: StudyMeta, capacity: int | None, x_right: float) -> None:
    """The GPUs' memory (and the user's VRAM limit) as a line inside the axes, or an arrow past its edge."""
    for value, label, style in ((capacity, "GPU memory", "--"), (meta.vram_limit_bytes, "VRAM limit", "-.")):
        if not (finite(value) and value > 0):
            continue
        gib = value / GiB
        text = f"{label} {gib:.1f} GiB"
        if gib <= x_right:
            memory_line(ax, gib, text, style)
        else:
            ax.annotate(
                f"{text} →",
                xy=(1, 0.97 if label == "GPU memory" else 0.91),
                xycoords="axes fraction",
                xytext=(-4, 0),
                textcoords="offset points",
                fontsize=7.5,
                color=_LIMIT,
                ha="right",
                va="top",
            )


def place_pick_labels(fig: Figure, ax, chosen: dict[str, Pick], base: TrialRecord | None = None) -> None:
    """Label each picked point (and the user's current setting), trying positions around it until the
    label overlaps no label placed before, hides no picked point and stays inside the axes. Runs the layout
    first and then freezes it, so the positions hold."""
    by_trial: dict[int, list[str]] = {}
    trials: dict[int, TrialRecord] = {}
    for name, pick in chosen.items():
        if has_vram(pick.trial) and is_measured(pick.trial):
            by_trial.setdefault(pick.trial.number, []).append(name)
            trials[pick.trial.number] = pick.trial
    if base is not None:
        by_trial.setdefault(base.number, []).append("current")
        trials[base.number] = base
    if not by_trial:
        return
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # constrained layout places the axes now
    fig.set_layout_engine("none")
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken: list[Bbox] = [Text.get_window_extent(t, renderer) for t in ax.texts]  # labels already there
    for r in trials.values():  # and the picked points themselves: a label never hides one
        px, py = ax.transData.transform((vram_of(r) / GiB, decode_of(r)))
        taken.append(Bbox.from_extents(px - 6, py - 6, px + 6, py + 6))
    order = sorted(by_trial, key=lambda n: -decode_of(trials[n]))
    candidates = [
        (radius * math.cos(math.radians(a)), radius * math.sin(math.radians(a)))
        for radius in (26, 44, 64, 88, 116)
        for a in (35, -35, 145, -145, 90, -90, 0, 180, 60, -60, 120, -120)
    ]
    for number in order:
        r = trials[number]
        names = [n for n in by_trial[number] if n != "current"]
        words = [SHORT_LABELS.get(n, PICK_TITLES.get(n, n)) for n in names]
        label = "\n+ ".join(" + ".join(words[i : i + 2]) for i in range(0, len(words), 2))  # 2 a line
        if "current" in by_trial[number]:
            label = f"{label} (your current setting)" if label else "your current setting"
        xy = (vram_of(r) / GiB, decode_of(r))
        placed = None
        for dx, dy in candidates:
            ann = _pick_label(ax, label, xy, dx, dy)
            extent = _label_extent(ann, renderer)
            inside = (
                extent.x0 >= frame.x0
                and extent.x1 <= frame.x1
                and extent.y0 >= frame.y0
                and extent.y1 <= frame.y1
            )
            if inside and not any(extent.overlaps(t) for t in taken):
                placed = (ann, extent)
                break
            ann.remove()
        if placed is None:  # nowhere free: the first position, so the label is at least there
            dx, dy = candidates[0]
            ann = _pick_label(ax, label, xy, dx, dy)
            placed = (ann, _label_extent(ann, renderer))
        placed[0].set_gid(f"pick:{number}" if names else f"current:{number}")
        taken.append(placed[1])


def _pick_label(ax, label: str, xy: tuple[float, float], dx: float, dy: float) -> Annotation:
    """A pick's label in a box, offset (dx, dy) points from its point, joined to it by a thin line."""
    return ax.annotate(
        label,
        xy=xy,
        xytext=(dx, dy),
        textcoords="offset points",
        fontsize=8,
        zorder=6,
        ha="center",
        va="center",
        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#888888", "alpha": 0.95},
        arrowprops={"arrowstyle": "-", "color": "#555555", "lw": 0.8, "shrinkA": 0, "shrinkB": 4},
    )


def _label_extent(ann: Annotation, renderer) -> Bbox:
    """The label's box on the canvas: its text's extent plus the box padding (not the arrow)."""
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer).padded(4)
