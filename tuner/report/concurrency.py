"""The concurrency curves and the report's serving section, from a ladder's JSON (tuner.concurrency
Ladder.to_json plus "serving_pick", as `autotune MODEL --concurrency N` stores it on the study), so the
report needs no live objects and `autotune report` rebuilds it from storage. Agg canvas, no pyplot.

    ladder_figure(block)            four panels: tok/s (aggregate, per request), TTFT, ITL, end-to-end latency
                                    (p50/p90/p99, ms), the SLA lines, the serving pick and the saturated level
    plot_ladder(ladder, pick, path) the same figure as a PNG file (serve-bench's concurrency*.png)
    concurrency_section(block, img) the report's "Serving under concurrent load" blocks ([] without a ladder)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tuner.report.render import Block, code_md, escape_md
from tuner.report.slotsplot import has_slot_ladders, slots_blocks, slots_figure

IMAGE = "concurrency.png"
PICK_COLOR = "tab:green"
SATURATED_COLOR = "tab:red"
SLA_COLOR = "tab:purple"
_PCTS = (("p50", "-", 1.0), ("p90", "--", 0.85), ("p99", ":", 0.7))


def has_ladder(block: dict[str, Any] | None) -> bool:
    """A stored ladder with at least one level."""
    levels = (block or {}).get("levels")
    return isinstance(levels, list) and bool(levels)


def _ms(value: float | None) -> float:
    return float("nan") if value is None else value * 1000


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _latency_panel(
    ax: Axes, xs: list[int], levels: list[dict[str, Any]], key: str, title: str, sla_s: float | None
) -> None:
    values = []
    for pct, style, alpha in _PCTS:
        ys = [_ms(lv[key][pct]) for lv in levels]
        values += [y for y in ys if not math.isnan(y)]
        ax.plot(xs, ys, "o" + style, ms=4, alpha=alpha, label=pct)
    if sla_s is not None:
        ax.axhline(sla_s * 1000, color=SLA_COLOR, lw=1.4, ls="-.", label=f"SLA: p90 ≤ {sla_s * 1000:.0f} ms")
        values.append(sla_s * 1000)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("ms")
    ax.set_ylim(0, _top(values))
    ax.legend(fontsize=7, loc="best")


def _top(values: list[float]) -> float:
    """The y axis' top: room above the highest point for its marker and label."""
    return max(values, default=1.0) * 1.18 or 1.0


def ladder_figure(block: dict[str, Any]) -> Figure:
    """Throughput and the three latencies against concurrent streams, one panel each (one curve per slot
    count where the study sized OLLAMA_NUM_PARALLEL)."""
    if has_slot_ladders(block):
        return slots_figure(block)
    levels = block["levels"]
    xs = [int(lv["concurrency"]) for lv in levels]
    pick = block.get("serving_pick")
    fig = Figure(figsize=(10, 6.4), dpi=110)
    FigureCanvasAgg(fig)
    (tput, ttft), (itl, e2e) = fig.subplots(2, 2, sharex=True)
    tput.plot(xs, [lv["aggregate_tok_s"] for lv in levels], "o-", label="aggregate tok/s (all streams)")
    per = [float("nan") if lv["per_request_tok_s"] is None else lv["per_request_tok_s"] for lv in levels]
    tput.plot(xs, per, "s--", label="per-request tok/s (p50)")
    tput.set_title("throughput", fontsize=10)
    tput.set_ylabel("output tokens / s")
    tput.set_ylim(0, _top([lv["aggregate_tok_s"] for lv in levels] + [y for y in per if not math.isnan(y)]))
    tput.legend(fontsize=7, loc="best")
    _latency_panel(ttft, xs, levels, "ttft_s", "time to first token", block.get("sla_ttft_s"))
    _latency_panel(itl, xs, levels, "itl_s", "inter-token latency", block.get("sla_itl_s"))
    _latency_panel(e2e, xs, levels, "e2e_s", "end-to-end latency", None)
    lo, hi = min(xs) / 1.35, max(xs) * 1.35
    for ax in (tput, ttft, itl, e2e):
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo, hi)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        if pick is not None:
            ax.axvline(pick, color=PICK_COLOR, ls=":", lw=1.6)
        for lv in levels:
            if lv.get("saturated"):
                ax.axvspan(lv["concurrency"] / 1.2, hi, color=SATURATED_COLOR, alpha=0.07, lw=0)
    if pick is not None:
        tput.text(pick, tput.get_ylim()[1] * 0.02, " serving pick", color=PICK_COLOR, fontsize=8, rotation=90)
    for lv in levels:
        if lv.get("saturated"):
            tput.plot([lv["concurrency"]], [lv["aggregate_tok_s"]], "X", color=SATURATED_COLOR, ms=10)
            tput.annotate(
                "over-saturated",
                (lv["concurrency"], lv["aggregate_tok_s"]),
                textcoords="offset points",
                xytext=(-8, -16),
                ha="right",
                fontsize=8,
                color=SATURATED_COLOR,
            )
    for ax in (itl, e2e):
        ax.set_xlabel("concurrent streams")
    title = f"{block.get('model', '')}: serving under concurrent load".lstrip(": ")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_ladder(
    ladder: dict[str, Any],
    pick: int | None,
    path: Path,
    sla_ttft_s: float | None = None,
    sla_itl_s: float | None = None,
) -> Path:
    """ladder_figure as a PNG file."""
    block = {**ladder, "serving_pick": pick, "sla_ttft_s": sla_ttft_s, "sla_itl_s": sla_itl_s}
    ladder_figure(block).savefig(path)
    return path


def _level_rows(block: dict[str, Any]) -> list[list[str]]:
    rows = []
    pick = block.get("serving_pick")
    for lv in block["levels"]:
        per = lv["per_request_tok_s"]
        mark = (
            "serving pick" if lv["concurrency"] == pick else ("over-saturated" if lv.get("saturated") else "")
        )
        rows.append(
            [
                str(lv["concurrency"]),
                f"{lv['ok']}/{lv['requests']}",
                str(lv["errors"]),
                f"{lv['aggregate_tok_s']:.1f}",
                "-" if per is None else f"{per:.1f}",
                f"{lv['req_s']:.2f}",
                *(
                    "/".join(_fmt_ms(lv[k][p]) for p in ("p50", "p90", "p99"))
                    for k in ("ttft_s", "itl_s", "e2e_s")
                ),
                mark,
            ]
        )
    return rows


def _sla_text(block: dict[str, Any]) -> str:
    parts = [
        f"p90 {name} ≤ {value * 1000:.0f} ms"
        for name, value in (("TTFT", block.get("sla_ttft_s")), ("ITL", block.get("sla_itl_s")))
        if value is not None
    ]
    return " and ".join(parts)


def _pick_text(block: dict[str, Any]) -> str:
    pick = block.get("serving_pick")
    sla = _sla_text(block)
    within = f" within {sla}" if sla else ""
    chosen = next((lv for lv in block["levels"] if lv["concurrency"] == pick), None)
    if chosen is None:
        why = "missed the SLA, " if sla else ""
        return (
            f"**Serving pick: none.** Every level had errors, {why}or was over-saturated; serve fewer "
            "concurrent requests or relax the targets."
        )
    per = chosen["per_request_tok_s"]
    per_text = "" if per is None else f", {per:.1f} tok/s per request"
    return (
        f"**Serving pick: {pick} concurrent streams**: {chosen['aggregate_tok_s']:.1f} tok/s in all{per_text}, "
        f"p90 TTFT {_fmt_ms(chosen['ttft_s']['p90'])} ms, p90 ITL {_fmt_ms(chosen['itl_s']['p90'])} ms: the "
        f"most aggregate throughput with no errors{within}, short of over-saturation."
    )


def _config_text(block: dict[str, Any]) -> str:
    trial = block.get("trial")
    options = block.get("options") or {}
    knobs = ", ".join(f"{k} {v}" for k, v in options.items() if k in ("num_ctx", "num_gpu"))
    env = block.get("env") or {}
    server = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    text = f"Measured on {code_md(block.get('model', '?'))}"
    if trial is not None:
        text += f" (trial #{trial}, the fastest config{', ' + knobs if knobs else ''})"
    elif knobs:
        text += f" ({knobs})"
    text += f", {block.get('requests_per_stream', 2)} requests per stream, {options.get('num_predict', '?')} tokens each"
    if server:
        text += f", server environment {code_md(server)}"
    return text + "."


def concurrency_section(block: dict[str, Any] | None, image: tuple[str, bytes] | None) -> list[Block]:
    """The serving section: the pick, what was measured, the saturation, the curves and the table."""
    if block is None or not has_ladder(block):
        return []
    if has_slot_ladders(block):
        blocks = [Block("h3", "Serving under concurrent load"), *slots_blocks(block)]
        if image is not None:
            blocks.append(
                Block("img", "throughput and p90 latencies per slot count", caption=image[0], data=image[1])
            )
        return [*blocks, Block("p", _DEFINITIONS)]
    blocks = [
        Block("h3", "Serving under concurrent load"),
        Block("p", _pick_text(block)),
        Block("p", _config_text(block)),
    ]
    saturated = [lv["concurrency"] for lv in block["levels"] if lv.get("saturated")]
    if saturated:
        blocks.append(
            Block(
                "p",
                f"Over-saturated at {saturated[0]} streams: aggregate throughput grew less than 10% over the level "
                "before while the median end-to-end latency rose more than 25% (requests only queue); the ladder "
                "stopped there.",
            )
        )
    else:
        blocks.append(Block("p", f"The ladder stopped at {escape_md(block.get('stopped', 'its top rung'))}."))
    if image is not None:
        blocks.append(
            Block("img", "throughput and latency against concurrent streams", caption=image[0], data=image[1])
        )
    headers = [
        "streams",
        "ok",
        "errors",
        "aggregate tok/s",
        "per-request tok/s (p50)",
        "req/s",
        "TTFT p50/p90/p99 ms",
        "ITL p50/p90/p99 ms",
        "E2E p50/p90/p99 ms",
        "",
    ]
    blocks.append(Block("table", items=headers, rows=_level_rows(block)))
    blocks.append(Block("p", _DEFINITIONS))
    return blocks


_DEFINITIONS = (
    "TTFT: request sent to first token (queueing for a slot included); ITL: the mean gap between tokens "
    "after the first; E2E: request sent to last token; per-request tok/s = 1 / ITL (AIPerf's and "
    "GuideLLM's definitions). concurrency.json holds every figure."
)


def plot_layouts(layouts: list[dict[str, Any]], best: str | None, path: Path) -> Path:
    """serve-bench --layouts: aggregate tok/s and p90 TTFT against the total concurrent streams, one line
    per instance layout, each serving pick starred, the chosen layout drawn bold."""
    fig = Figure(figsize=(10, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    tput, ttft = fig.subplots(1, 2, sharex=True)
    xs_all: set[int] = set()
    tops: list[float] = []
    for lay in layouts:
        levels = lay["levels"]
        xs = [int(lv["concurrency"]) for lv in levels]
        xs_all.update(xs)
        bold = lay["name"] == best
        insts = lay["instances"]
        each = len(insts[0]["gpus"]) if insts else 0
        label = f"{lay['name']}: {len(insts)} instance{'s' if len(insts) > 1 else ''} x {each} GPU{'s' if each > 1 else ''}"
        label += " (chosen)" if bold else ""
        tops += [lv["aggregate_tok_s"] for lv in levels]
        width = 2.4 if bold else 1.2
        (line,) = tput.plot(xs, [lv["aggregate_tok_s"] for lv in levels], "o-", lw=width, label=label)
        ttft.plot(xs, [_ms(lv["ttft_s"]["p90"]) for lv in levels], "o-", lw=width, color=line.get_color())
        for lv in levels:
            if lv["concurrency"] == lay.get("serving_pick"):
                tput.plot([lv["concurrency"]], [lv["aggregate_tok_s"]], "*", ms=14, color=line.get_color())
    tput.set_title("aggregate throughput (★ serving pick)", fontsize=10)
    tput.set_ylabel("output tokens / s")
    tput.set_ylim(0, _top(tops))
    tput.legend(fontsize=8, loc="best")
    ttft.set_title("time to first token, p90", fontsize=10)
    ttft.set_ylabel("ms")
    ttft.set_ylim(bottom=0)
    xs = sorted(xs_all)
    for ax in (tput, ttft):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("concurrent streams, all instances together")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
