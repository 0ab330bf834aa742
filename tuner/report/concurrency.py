"""The concurrency curves: aggregate tok/s and p90 latencies against concurrent streams, from a ladder's
JSON (tuner.concurrency.Ladder.to_json), so the report needs no live objects. Agg canvas, no pyplot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _series(levels: list[dict[str, Any]], key: str, pct: str) -> list[float]:
    return [float("nan") if lv[key][pct] is None else lv[key][pct] * 1000 for lv in levels]


def plot_ladder(ladder: dict[str, Any], pick: int | None, path: Path) -> Path:
    """Two panels: throughput (aggregate and per request) and p50/p90 TTFT, ITL, end-to-end (ms)."""
    levels = ladder["levels"]
    xs = [lv["concurrency"] for lv in levels]
    fig = Figure(figsize=(9, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(xs, [lv["aggregate_tok_s"] for lv in levels], "o-", label="aggregate tok/s")
    left.plot(
        xs,
        [float("nan") if lv["per_request_tok_s"] is None else lv["per_request_tok_s"] for lv in levels],
        "s--",
        label="per-request tok/s (p50)",
    )
    if pick is not None:
        left.axvline(pick, color="tab:green", ls=":", lw=1.2)
        left.text(pick, left.get_ylim()[1], " serving pick", color="tab:green", fontsize=8, va="top")
    for lv in levels:
        if lv["saturated"]:
            left.annotate(
                "saturated", (lv["concurrency"], lv["aggregate_tok_s"]), fontsize=8, color="tab:red"
            )
    left.set_xlabel("concurrent streams")
    left.set_ylabel("output tokens / s")
    left.legend(fontsize=8)
    for key, style in (("ttft_s", "o-"), ("itl_s", "s-"), ("e2e_s", "^-")):
        name = key.removesuffix("_s").upper()
        right.plot(xs, _series(levels, key, "p90"), style, label=f"{name} p90")
        right.plot(xs, _series(levels, key, "p50"), style.replace("-", ":"), alpha=0.6, label=f"{name} p50")
    right.set_yscale("log")
    right.set_xlabel("concurrent streams")
    right.set_ylabel("ms")
    right.legend(fontsize=7, ncol=2)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
