"""The report's text as a list of blocks built from the study (pure); render.py turns them into
Markdown and HTML.

The report reads as a decision. Its first screen is the answer: one sentence, one table (each pick and
your current setting: tag, num_gpu, num_ctx, decode tok/s with its 95% interval, VRAM, what it changes
against your current setting, why), the speed/memory plot and how sure the ranking is. Everything else
(the pick files, the deployable front, noise and interference, the other plots, failed trials, the
machines, every trial) follows under "Details", in sections.py, machines.py and trialtables.py.

Text from outside (a server's message, a tag, a host name) enters Markdown only through escape_md or
code_md; the strings the picks produce are plain text and are escaped the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.energy import ENERGY_TABLE_TITLES, fmt_energy, has_energy
from tuner.decision.picks import Decision, change_against
from tuner.decision.quality import QUALITY_TABLE_TITLES, fmt_quality, has_quality
from tuner.decision.trials import (
    did_not_load,
    fmt_gib,
    fmt_interval,
    is_complete,
    is_feasible,
    speed_interval,
)
from tuner.report.cells import num_gpu_text, tool_name
from tuner.report.concurrency import concurrency_section
from tuner.report.machines import machine, machines_note, vram_source_note
from tuner.report.qualitysection import quality_cost_line, quality_section
from tuner.report.render import Block, escape_md
from tuner.report.sections import (
    Artifact,
    front_tables,
    how_sure,
    how_to_use,
    pick_files,
    prediction,
    your_setting,
)
from tuner.report.slotsplot import serving_row
from tuner.report.trialtables import all_trials, infeasible, unfinished
from tuner.schema import SCHEMA_VERSION, StudyMeta, TrialRecord

__all__ = ["Artifact", "build_report"]

TABLE_TITLES = {
    "fastest": "fastest",
    "largest_ctx_on_gpu": "largest context",
    "balanced": "balanced",
    "leanest": "leanest",
    **QUALITY_TABLE_TITLES,
    **ENERGY_TABLE_TITLES,
}


def build_report(
    meta: StudyMeta,
    records: Sequence[TrialRecord],
    decision: Decision,
    artifacts: dict[str, Artifact],
    images: dict[str, tuple[str, bytes]],
    extra_files: Sequence[str] = (),
) -> list[Block]:
    """Every block of the report. `artifacts` maps pick names (and "best") to their files;
    `images` maps "pareto", "speed", "vram" (and "predicted") to (file name, PNG bytes)."""
    blocks = [Block("h1", f"autotune report: {escape_md(meta.model)}")]
    blocks += _verdict(meta, records, decision, artifacts)
    blocks += quality_cost_line(meta, records, decision)
    blocks += _decision_table(decision, artifacts, has_quality(records), has_energy(records))
    serving = serving_row(meta.concurrency)
    if serving is not None:  # a concurrency ladder ran (--concurrency N)
        blocks.append(
            Block(
                "p",
                f"**Serving pick (concurrent load):** {escape_md(serving)}; see Serving under concurrent load.",
            )
        )
    if "pareto" in images:
        blocks.append(
            Block(
                "img",
                "decode speed against peak VRAM",
                caption=images["pareto"][0],
                data=images["pareto"][1],
                css="first-plot",
            )
        )
    if decision.certainty:
        blocks.append(Block("p", f"**How sure:** {escape_md(decision.certainty)}"))
    blocks += machines_note(meta, records)

    blocks.append(Block("h2", "Details"))
    blocks.append(_study_line(meta, records))
    blocks += pick_files(decision, artifacts, meta)
    blocks += front_tables(meta, records, decision)
    blocks += your_setting(decision)
    blocks += concurrency_section(meta.concurrency, images.get("concurrency"))
    blocks += quality_section(meta, records, decision)
    blocks += how_sure(meta, records, decision)
    blocks += _plots(images)
    blocks += prediction(meta, records, images)
    blocks += infeasible(records)
    blocks += unfinished(records)
    blocks += machine(meta, records)
    blocks += vram_source_note(meta, records)
    blocks += all_trials(meta, records)
    blocks += how_to_use(meta, artifacts, extra_files)
    blocks.append(
        Block(
            "p",
            f"Written by {escape_md(tool_name(meta))}, study schema {meta.schema_version} "
            f"(reader {SCHEMA_VERSION}). trials.csv holds every measurement.",
        )
    )
    return blocks


def _study_line(meta: StudyMeta, records: Sequence[TrialRecord]) -> Block:
    states: dict[str, int] = {}
    for r in records:
        states[r.state] = states.get(r.state, 0) + 1
    complete = states.get("COMPLETE", 0)
    others = "".join(f", {n} {s.lower()}" for s, n in sorted(states.items()) if s != "COMPLETE")
    return Block(
        "p",
        f"Engine **{escape_md(meta.engine)}** · study `{meta.study_name}` · budget {meta.budget} trials · "
        f"{complete} trials done{others} · {sum(map(is_feasible, records))} feasible · "
        f"{sum(map(did_not_load, records))} did not load.",
    )


def _verdict(meta, records, decision: Decision, artifacts) -> list[Block]:
    blocks = []
    fastest = decision.best
    file_note = f" → `{artifacts['best'].filename}`" if "best" in artifacts else ""
    if fastest is None:
        messages: dict[str, int] = {}
        for r in records:
            if is_complete(r) and not is_feasible(r) and r.error:
                text = " ".join(str(r.error).split())
                messages[text] = messages.get(text, 0) + 1
        common = sorted(messages.items(), key=lambda kv: -kv[1])[:3]
        quoted = "; ".join(f"'{escape_md(m)}' ({n} trial{'s' if n > 1 else ''})" for m, n in common)
        blocks.append(
            Block(
                "note",
                f"No feasible setting was found. {escape_md(decision.missing.get('fastest', ''))} "
                + (f"The server said: {quoted}. " if quoted else "")
                + "Every failed trial and its message is listed under Infeasible trials; a smaller context, "
                "a smaller quantization or fewer layers on the GPU may fit.",
            )
        )
    elif decision.baseline.within_noise:
        best = fastest.trial
        blocks.append(
            Block(
                "p",
                "**Your current setting is already within noise of the fastest.** Keep it: "
                f"`{best.tag}`, {num_gpu_text(best.num_gpu)}, num_ctx {best.num_ctx}, "
                f"{escape_md(fmt_interval(speed_interval(best)))} tok/s{file_note}. The other picks "
                "give more context or less memory at nearly the same speed.",
            )
        )
    else:
        best = fastest.trial
        gain = decision.baseline.speedup
        against = f", {gain:.2f}x your current setting" if gain else ""
        blocks.append(
            Block(
                "p",
                f"**Deploy `{best.tag}`, {num_gpu_text(best.num_gpu)}, num_ctx {best.num_ctx}: "
                f"{escape_md(fmt_interval(speed_interval(best)))} tok/s at {fmt_gib(best.peak_vram_bytes)} "
                f"peak VRAM{against}**{file_note}.",
            )
        )
    return blocks


def _decision_table(
    decision: Decision, artifacts, quality: bool = False, energy: bool = False
) -> list[Block]:
    base = decision.baseline.baseline
    rows = []
    if base is not None:
        speed = fmt_interval(speed_interval(base)) if not did_not_load(base) and is_complete(base) else ""
        rows.append(
            [
                "your current setting",
                f"#{base.number}",
                base.tag,
                num_gpu_text(base.num_gpu, short=True),
                str(base.num_ctx or "default"),
                speed or "did not load",
                fmt_gib(base.peak_vram_bytes),
                *([fmt_quality(base)] if quality else []),
                *([fmt_energy(base)] if energy else []),
                "",
                "the engine's own placement" + ("" if speed else f": {' '.join(str(base.error).split())}"),
            ]
        )
    for name in decision.names:
        pick = decision.picks.get(name)
        title = TABLE_TITLES[name]
        if name == decision.best_name and "best" in artifacts:
            title += " (best)"
        if pick is None:
            blank = ["", "", "", "", "", "", "", *([""] if quality else []), *([""] if energy else [])]
            rows.append([title, *blank, f"none: {decision.missing.get(name, '')}"])
            continue
        r = pick.trial
        rows.append(
            [
                title,
                f"#{r.number}",
                r.tag,
                num_gpu_text(r.num_gpu, short=True),
                str(r.num_ctx),
                fmt_interval(speed_interval(r)),
                fmt_gib(r.peak_vram_bytes),
                *([fmt_quality(r)] if quality else []),
                *([fmt_energy(r)] if energy else []),
                change_against(base if base is not None and not did_not_load(base) else None, r),
                pick.reason,
            ]
        )
    headers = [
        "pick",
        "trial",
        "tag",
        "num_gpu",
        "num_ctx",
        "decode tok/s (95% interval)",
        "peak VRAM",
        *(["quality loss (KL vs the most precise tag)"] if quality else []),
        *(["energy (J/token)"] if energy else []),
        "change against your current setting",
        "why",
    ]
    return [Block("table", items=headers, rows=rows, css="decision")]


def _plots(images: dict[str, tuple[str, bytes]]) -> list[Block]:
    blocks: list[Block] = []
    if "speed" in images:
        blocks.append(Block("h3", "Speed against layers on the GPU"))
        blocks.append(
            Block(
                "p",
                "One panel per tag, one line per context. Speed usually jumps once the last "
                "layer fits on the GPU (triangles: part of the model still on the CPU).",
            )
        )
        blocks.append(
            Block("img", "decode speed against num_gpu", caption=images["speed"][0], data=images["speed"][1])
        )
    if "vram" in images:
        blocks.append(Block("h3", "Memory against context"))
        blocks.append(
            Block("p", "Peak VRAM grows with num_ctx (the KV cache) and with the layers on the GPU.")
        )
        blocks.append(
            Block("img", "peak VRAM against num_ctx", caption=images["vram"][0], data=images["vram"][1])
        )
    return blocks
