"""The report's figures. With prediction.py, the only modules that import matplotlib; it draws on the Agg canvas directly
(matplotlib.figure.Figure, no pyplot), so importing it changes no global backend state.

Conventions in every plot: one colour per tag (or per context), filled markers = feasible and fully on
the GPU, triangles = part of the model spilled to the CPU, hollow markers = loaded but broke a constraint,
x = did not load (drawn in a shaded "did not load" band, never at 0 tok/s).

About 500 lines, kept whole: three figure functions and the styling helpers they share (markers, capacity
lines, pick labels, legends); split by figure, each file would import the same helpers back.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import PurePath

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tuner.decision.trials import (
    decode_of,
    did_not_load,
    finite,
    has_vram,
    is_complete,
    is_measured,
    is_on_gpu,
    is_spilled,
    is_true,
    vram_of,
)
from tuner.schema import StudyMeta, TrialRecord
from tuner.units import GiB

DPI = 110
MAX_PANELS = 9
MAX_LEGEND_TAGS = 16
_GREY = "#555555"
_FAIL_BAND = "#f2dede"
_LIMIT = "#8a6d3b"
_PICK_LABELS = {
    "fastest": "fastest",
    "leanest": "leanest",
    "balanced": "balanced",
    "largest_ctx_on_gpu": "largest ctx on GPU",
}


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def short_tag(tag: str, limit: int = 34) -> str:
    """A tag for a title: GGUF paths by their file name, long names shortened in the middle (the end,
    where the quantization is, stays)."""
    name = PurePath(tag).name if ("/" in tag or "\\" in tag) else tag
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep // 2] + "…" + name[len(name) - (keep - keep // 2) :]


_TAG_PARTS = re.compile(r"([:/\\.-])")


def tag_labels(tags: Sequence[str]) -> dict[str, str]:
    """Legend labels: the part of each tag that differs from the others ('q4_K_M', 'Q8_0'), found by
    dropping the parts (split at : / . -) that every tag starts and ends with; one tag keeps its name."""
    unique = list(dict.fromkeys(tags))
    names = {t: PurePath(t).name if ("/" in t or "\\" in t) else t for t in unique}
    if len(unique) < 2:
        return {t: short_tag(t) for t in unique}
    split = {t: _TAG_PARTS.split(n) for t, n in names.items()}
    parts = list(split.values())
    head = 0
    while all(len(p) > head for p in parts) and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while all(len(p) - head > tail for p in parts) and len({p[len(p) - 1 - tail] for p in parts}) == 1:
        tail += 1
    labels = {}
    for t, p in split.items():
        middle = "".join(p[head : len(p) - tail]).strip(":/\\.-")
        labels[t] = short_tag(middle or names[t])
    if len(set(labels.values())) < len(labels):  # the differing parts collide: show whole names
        return {t: short_tag(names[t]) for t in unique}
    return labels


def tag_colors(meta: StudyMeta, records: Sequence[TrialRecord]) -> dict[str, tuple]:
    tags = list(dict.fromkeys([*(meta.tags or []), *(r.tag for r in records)]))
    cmap = matplotlib.colormaps["tab10" if len(tags) <= 10 else "tab20"]
    return {tag: cmap(i % cmap.N) for i, tag in enumerate(tags)}


def gpu_memory_bytes(meta: StudyMeta) -> int | None:
    gpus = (meta.fingerprint or {}).get("gpus") or []
    total = sum(g.get("memory_bytes") or 0 for g in gpus if isinstance(g, dict))
    return total or None


# ---------------------------------------------------------------------------------------------------------
# Speed against layers on the GPU, one panel per tag, one line per context
# ---------------------------------------------------------------------------------------------------------


def plot_speed_vs_num_gpu(meta: StudyMeta, records: Sequence[TrialRecord]) -> Figure:
    """Decode tok/s against num_gpu, a panel per tag and a line per num_ctx: where the CPU spill ends."""
    tags = _tags_by_trials(meta, records)
    shown = tags[:MAX_PANELS]
    ctxs = sorted({r.num_ctx for r in records if r.tag in shown and is_complete(r) and r.num_ctx > 0})
    ctx_colors = _ctx_colors(ctxs)
    ncols = min(3, max(1, len(shown)))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = Figure(figsize=(max(9.5, 4.2 * ncols + 2.6), 3.8 * nrows + 0.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    top = max((decode_of(r) for r in records if is_complete(r) and is_measured(r)), default=1.0) * 1.12
    any_failed = any(did_not_load(r) and r.num_gpu >= 0 and r.tag in shown for r in records)
    band = 0.13 * top if any_failed else 0.0
    for index, ax in enumerate(axes.flat):
        if index >= len(shown):
            ax.set_visible(False)
            continue
        tag = shown[index]
        mine = [r for r in records if r.tag == tag and is_complete(r)]
        for ctx in ctxs:
            runs = sorted(
                (r for r in mine if r.num_ctx == ctx and r.num_gpu >= 0 and is_measured(r)),
                key=lambda r: r.num_gpu,
            )
            if runs:
                ax.plot(
                    [r.num_gpu for r in runs],
                    [r.decode_tok_s for r in runs],
                    color=ctx_colors[ctx],
                    lw=1.2,
                    alpha=0.8,
                    zorder=2,
                )
            for r in runs:
                _scatter_trial(ax, r.num_gpu, decode_of(r), r, ctx_colors[ctx])
            for r in mine:
                if r.num_ctx == ctx and r.num_gpu < 0 and is_measured(r):
                    ax.axhline(r.decode_tok_s, color=ctx_colors[ctx], ls=":", lw=1.4, zorder=1)
        if any_failed:
            ax.axhspan(-band, 0, color=_FAIL_BAND, zorder=0)
            failed = sorted((r for r in mine if did_not_load(r) and r.num_gpu >= 0), key=lambda r: r.num_ctx)
            for r in failed:
                level = ctxs.index(r.num_ctx) / max(1, len(ctxs) - 1) if r.num_ctx in ctxs else 0.5
                ax.scatter(
                    [r.num_gpu],
                    [-band * (0.25 + 0.5 * level)],
                    marker="x",
                    s=50,
                    color=ctx_colors.get(r.num_ctx, _GREY),
                    linewidths=1.8,
                    zorder=3,
                )
        ax.set_ylim(-band, top)
        layers = (meta.block_count or {}).get(tag)
        if finite(layers):
            ax.axvline(layers + 1, color=_GREY, ls="--", lw=0.9, zorder=1)
            ax.annotate(
                "all layers",
                xy=(layers + 1, 0.5),
                xycoords=("data", "axes fraction"),
                xytext=(-3, 0),
                textcoords="offset points",
                fontsize=7,
                color=_GREY,
                ha="right",
                va="center",
                rotation=90,
            )
        ax.set_title(short_tag(tag, 48), fontsize=10)
        ax.set_xlabel("num_gpu (layers on the GPU)")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=-0.5)
    for row in axes:
        row[0].set_ylabel("decode speed (tokens/s)")
        row[0].set_yticks([t for t in row[0].get_yticks() if 0 <= t <= top])
    title = f"{meta.model}: decode speed vs layers on the GPU"
    if len(tags) > len(shown):
        title += f" ({len(tags) - len(shown)} more tags in trials.csv)"
    fig.suptitle(
        title + (" (shaded band: did not load)" if any_failed else ""), fontsize=11, x=0.02, ha="left"
    )
    handles = [Line2D([], [], color=ctx_colors[c], marker="o", lw=1.2, label=f"num_ctx {c}") for c in ctxs]
    handles += [
        Line2D([], [], color="none", label=" "),
        Line2D([], [], color=_GREY, marker="o", ls="", markerfacecolor=_GREY, label="feasible, on the GPU"),
        Line2D([], [], color=_GREY, marker="v", ls="", markerfacecolor=_GREY, label="spilled to the CPU"),
        Line2D([], [], color=_GREY, marker="o", ls="", markerfacecolor="white", label="broke a constraint"),
        Line2D([], [], color=_GREY, ls=":", lw=1.4, label="engine's own placement"),
    ]
    if any_failed:
        handles.append(Line2D([], [], color=_GREY, marker="x", ls="", label="did not load"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Memory against context
# ---------------------------------------------------------------------------------------------------------


def plot_vram_vs_num_ctx(meta: StudyMeta, records: Sequence[TrialRecord]) -> Figure:
    """Peak VRAM (GiB) against num_ctx (log scale), one colour per tag; failed loads in a band on top.

    A line per tag joins the trials that ran fully on the GPU: the KV cache's growth with context."""
    records = [r for r in records if r.num_ctx > 0]  # 0: a failed baseline at the engine's default context
    colors = tag_colors(meta, records)
    fig = Figure(figsize=(10.5, 5.6), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    placed = [r for r in records if is_complete(r) and is_measured(r) and has_vram(r)]
    failed = sorted((r for r in records if did_not_load(r)), key=lambda r: (r.num_ctx, r.number))
    capacity = gpu_memory_bytes(meta)
    for tag, color in colors.items():
        full: dict[int, TrialRecord] = {}
        for r in placed:
            if (
                r.tag == tag
                and is_on_gpu(r)
                and (r.num_ctx not in full or r.num_gpu > full[r.num_ctx].num_gpu)
            ):
                full[r.num_ctx] = r
        if len(full) > 1:
            ctx_sorted = sorted(full)
            ax.plot(
                ctx_sorted,
                [vram_of(full[c]) / GiB for c in ctx_sorted],
                color=color,
                lw=1.2,
                alpha=0.7,
                zorder=2,
            )
    for r in placed:
        _scatter_trial(ax, r.num_ctx, vram_of(r) / GiB, r, colors[r.tag])
    ceiling = max([vram_of(r) / GiB for r in placed] + [(capacity or 0) / GiB, 1.0]) * 1.08
    if failed:
        band = 0.12 * ceiling
        ax.axhspan(ceiling, ceiling + band, color=_FAIL_BAND, zorder=0)
        ax.text(
            0.005,
            ceiling + band * 0.92,
            f"did not load ({len(failed)})",
            transform=ax.get_yaxis_transform(),
            fontsize=8,
            color="#a94442",
            va="top",
        )
        seen: dict[int, int] = {}
        for r in failed:
            k = seen[r.num_ctx] = seen.get(r.num_ctx, -1) + 1  # spread failures at the same context
            ax.scatter(
                [r.num_ctx * (1 + 0.04 * ((k + 1) // 2) * (-1) ** k)],
                [ceiling + band * 0.4],
                marker="x",
                s=50,
                color=colors[r.tag],
                linewidths=1.8,
                zorder=3,
            )
        ax.set_ylim(0, ceiling + band)
    else:
        ax.set_ylim(0, ceiling)
    ax.set_yticks([t for t in ax.get_yticks() if 0 <= t <= ceiling])
    _capacity_lines(ax, meta, capacity, vertical=False)
    ctxs = sorted({r.num_ctx for r in records if is_complete(r)})
    if ctxs:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ctxs)
        ax.set_xticklabels([_ctx_label(c) for c in ctxs], fontsize=8)
        ax.minorticks_off()
        ax.set_xlim(ctxs[0] / 1.3, ctxs[-1] * 1.3)
    ax.set_xlabel("num_ctx (context tokens, log scale)")
    ax.set_ylabel("peak VRAM (GiB)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{meta.model}: peak VRAM vs context, every num_gpu (lines: fully on the GPU)", fontsize=11)
    handles = _tag_handles(colors, records) + _status_handles(front=False, failed=bool(failed))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def _scatter_trial(ax, x: float, y: float, r: TrialRecord, color) -> None:
    marker = "v" if is_spilled(r) else "o"
    face = color if is_true(r.feasible) else "white"
    ax.scatter([x], [y], marker=marker, s=48, facecolors=[face], edgecolors=[color], linewidths=1.5, zorder=3)


def memory_line(ax, gib: float, text: str, style: str) -> None:
    """A memory limit at x = `gib`, labelled at the top of the axes, just left of the line."""
    ax.axvline(gib, color=_LIMIT, ls=style, lw=1.0, zorder=1)
    ax.annotate(
        text,
        xy=(gib, 1),
        xycoords=("data", "axes fraction"),
        xytext=(-4, -4),
        textcoords="offset points",
        fontsize=7,
        color=_LIMIT,
        ha="right",
        va="top",
    )


def _capacity_lines(ax, meta: StudyMeta, capacity: int | None, *, vertical: bool) -> None:
    """The GPUs' total memory and the user's VRAM limit, labelled beside the line."""
    for value, label, style in ((capacity, "GPU memory", "--"), (meta.vram_limit_bytes, "VRAM limit", "-.")):
        if not (finite(value) and value > 0):
            continue
        text = f"{label} {value / GiB:.1f} GiB"
        if vertical:
            memory_line(ax, value / GiB, text, style)
        else:
            ax.axhline(value / GiB, color=_LIMIT, ls=style, lw=1.0, zorder=1)
            ax.annotate(
                text,
                xy=(1, value / GiB),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                fontsize=7,
                color=_LIMIT,
                ha="right",
                va="bottom",
            )


def _tag_handles(colors: dict[str, tuple], records: Sequence[TrialRecord]) -> list[Line2D]:
    """One legend entry per tag with trials, at most MAX_LEGEND_TAGS (then a "+N more" line)."""
    used = [t for t in colors if any(r.tag == t for r in records)]
    labels = tag_labels(used)
    handles = [
        Line2D([], [], color=colors[t], marker="o", ls="", markersize=7, label=labels[t])
        for t in used[:MAX_LEGEND_TAGS]
    ]
    if len(used) > MAX_LEGEND_TAGS:
        handles.append(Line2D([], [], color="none", label=f"+{len(used) - MAX_LEGEND_TAGS} more tags"))
    return handles


def _status_handles(*, front: bool, failed: bool) -> list[Line2D]:
    handles = [
        Line2D([], [], color="none", label=" "),
        Line2D([], [], color=_GREY, marker="o", ls="", markerfacecolor=_GREY, label="feasible, on the GPU"),
        Line2D([], [], color=_GREY, marker="v", ls="", markerfacecolor=_GREY, label="spilled to the CPU"),
        Line2D([], [], color=_GREY, marker="o", ls="", markerfacecolor="white", label="broke a constraint"),
    ]
    if front:
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker="o",
                markersize=11,
                markerfacecolor="none",
                lw=1.4,
                label="Pareto front",
            )
        )
    if failed:
        handles.append(Line2D([], [], color=_GREY, marker="x", ls="", markersize=7, label="did not load"))
    return handles


def _tags_by_trials(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[str]:
    tags = list(dict.fromkeys([*(meta.tags or []), *(r.tag for r in records)]))
    counts = {t: sum(1 for r in records if r.tag == t and is_complete(r)) for t in tags}
    ranked = [t for t in tags if counts[t] > 0] or tags[:1] or ["(no trials)"]
    return sorted(ranked, key=lambda t: -counts.get(t, 0)) if len(ranked) > MAX_PANELS else ranked


def _ctx_colors(ctxs: list[int]) -> dict[int, tuple]:
    cmap = matplotlib.colormaps["viridis"]
    if len(ctxs) == 1:
        return {ctxs[0]: cmap(0.35)}
    return {c: cmap(0.9 * i / (len(ctxs) - 1)) for i, c in enumerate(ctxs)}


def _ctx_label(ctx: int) -> str:
    return f"{ctx // 1024}k" if ctx >= 1024 and ctx % 1024 == 0 else str(ctx)
