"""The serving section when a study sized OLLAMA_NUM_PARALLEL (tuner.serveslots): one ladder per slot
count, stored under the block's "settings", and "chosen", the slot count the server files carry.

    has_slot_ladders(block)   two or more slot counts measured
    slots_figure(block)       aggregate tok/s and p90 TTFT / ITL / end-to-end against concurrent streams,
                              one curve per slot count, each count's serving pick marked, the chosen one bold
    slots_blocks(block)       the choice across slot counts, which pick the server files follow, one table
"""

from __future__ import annotations

import math
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tuner.report.render import Block, code_md

SLA_COLOR = "tab:purple"


def has_slot_ladders(block: dict[str, Any] | None) -> bool:
    settings = (block or {}).get("settings")
    return isinstance(settings, list) and len(settings) >= 2


def _ms(value: float | None) -> float:
    return float("nan") if value is None else value * 1000


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _level(setting: dict[str, Any], concurrency: Any) -> dict[str, Any] | None:
    return next((lv for lv in setting["levels"] if lv["concurrency"] == concurrency), None)


def slots_figure(block: dict[str, Any]) -> Figure:
    settings = block["settings"]
    chosen = block.get("chosen")
    fig = Figure(figsize=(10, 6.4), dpi=110)
    FigureCanvasAgg(fig)
    (tput, ttft), (itl, e2e) = fig.subplots(2, 2, sharex=True)
    panels = (
        (tput, "aggregate_tok_s", None, "aggregate throughput", "output tokens / s", None),
        (ttft, "ttft_s", "p90", "time to first token, p90", "ms", block.get("sla_ttft_s")),
        (itl, "itl_s", "p90", "inter-token latency, p90", "ms", block.get("sla_itl_s")),
        (e2e, "e2e_s", "p90", "end-to-end latency, p90", "ms", None),
    )
    xs_all: list[int] = []
    for ax, key, pct, title, unit, sla in panels:
        tops: list[float] = []
        for s in settings:
            xs = [int(lv["concurrency"]) for lv in s["levels"]]
            xs_all += xs
            ys = [lv[key] if pct is None else _ms(lv[key][pct]) for lv in s["levels"]]
            tops += [y for y in ys if not math.isnan(y)]
            bold = s["num_parallel"] == chosen
            label = f"{s['num_parallel']} slot{'s' if s['num_parallel'] != 1 else ''}" + (
                " (chosen)" if bold else ""
            )
            (line,) = ax.plot(xs, ys, "o-", lw=2.4 if bold else 1.2, ms=5 if bold else 3.5, label=label)
            pick = _level(s, s.get("serving_pick"))
            if pick is not None:
                y = pick[key] if pct is None else _ms(pick[key][pct])
                ax.plot([pick["concurrency"]], [y], "*", ms=13 if bold else 9, color=line.get_color())
        if sla is not None:
            ax.axhline(sla * 1000, color=SLA_COLOR, lw=1.4, ls="-.", label=f"SLA: p90 ≤ {sla * 1000:.0f} ms")
            tops.append(sla * 1000)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(tops, default=1.0) * 1.18 or 1.0)
        ax.legend(fontsize=7, loc="best")
    xs = sorted(set(xs_all))
    for ax in (tput, ttft, itl, e2e):
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(xs) / 1.35, max(xs) * 1.35)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in (itl, e2e):
        ax.set_xlabel("concurrent streams (★ each slot count's serving pick)")
    fig.suptitle(f"{block.get('model', '')}: serving against OLLAMA_NUM_PARALLEL".lstrip(": "), fontsize=11)
    fig.tight_layout()
    return fig


def _choice_text(block: dict[str, Any]) -> str:
    settings = block["settings"]
    counts = ", ".join(str(s["num_parallel"]) for s in settings)
    chosen = block.get("chosen")
    if chosen is None:
        return (
            f"**{code_md('OLLAMA_NUM_PARALLEL')}: no serving pick** at any of the slot counts measured ({counts}); the server "
            "files follow the fastest config (best.Modelfile's), as without --concurrency."
        )
    s = next(s for s in settings if s["num_parallel"] == chosen)
    lv = _level(s, s.get("serving_pick")) or {}
    return (
        f"**{code_md(f'OLLAMA_NUM_PARALLEL={chosen}')}** of the slot counts measured ({counts}): its serving pick, "
        f"{s.get('serving_pick')} concurrent streams at {lv.get('aggregate_tok_s', 0.0):.1f} tok/s in all, has "
        "the most aggregate throughput within the targets, or the fewest slots within 5% of it (each slot "
        f"holds its own KV cache). server.env, the systemd drop-in and docker-run-flags.txt carry "
        f"{code_md(f'OLLAMA_NUM_PARALLEL={chosen}')} (this serving pick); best.Modelfile stays the fastest "
        "config for one request at a time."
    )


def slots_blocks(block: dict[str, Any]) -> list[Block]:
    """The choice across slot counts and one table of every slot count's levels."""
    rows = []
    for s in block["settings"]:
        for lv in s["levels"]:
            per = lv["per_request_tok_s"]
            mark = "serving pick" if lv["concurrency"] == s.get("serving_pick") else ""
            if mark and s["num_parallel"] == block.get("chosen"):
                mark = "serving pick, chosen"
            elif lv.get("saturated"):
                mark = "over-saturated"
            rows.append(
                [
                    str(s["num_parallel"]),
                    f"#{s.get('trial', '?')}",
                    str(lv["concurrency"]),
                    f"{lv['ok']}/{lv['requests']}",
                    f"{lv['aggregate_tok_s']:.1f}",
                    "-" if per is None else f"{per:.1f}",
                    *(
                        "/".join(_fmt_ms(lv[k][p]) for p in ("p50", "p90", "p99"))
                        for k in ("ttft_s", "itl_s")
                    ),
                    mark,
                ]
            )
    headers = ["slots", "trial", "streams", "ok", "aggregate tok/s", "per-request tok/s (p50)"]
    headers += ["TTFT p50/p90/p99 ms", "ITL p50/p90/p99 ms", ""]
    return [Block("p", _choice_text(block)), Block("table", items=headers, rows=rows)]


def serving_row(block: dict[str, Any] | None) -> str | None:
    """One line for the report's first screen: the serving pick, or None when no ladder ran."""
    levels = (block or {}).get("levels")
    if not isinstance(levels, list) or not levels:
        return None
    assert block is not None
    lv = _level(block, block.get("serving_pick"))
    if "settings" in block:  # sized across slot counts: the chosen count, none when none was chosen
        slots = block.get("chosen")
    else:
        slots = (block.get("env") or {}).get("OLLAMA_NUM_PARALLEL")
    slot_text = f", OLLAMA_NUM_PARALLEL={slots}" if slots else ""
    trial = f" (trial #{block['trial']})" if block.get("trial") is not None else ""
    if lv is None:
        return f"none: no level met the targets without errors or over-saturation{slot_text}{trial}"
    return (
        f"{lv['concurrency']} concurrent streams{slot_text}{trial}: {lv['aggregate_tok_s']:.1f} tok/s in all, "
        f"p90 TTFT {_fmt_ms(lv['ttft_s']['p90'])} ms, p90 ITL {_fmt_ms(lv['itl_s']['p90'])} ms"
    )
