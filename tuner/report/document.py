"""The report's text as a list of blocks built from the study (pure); render.py turns them into
Markdown and HTML.

About 500 lines, kept whole: one function per section of the report, in the order the report shows them,
so the file reads like the page it builds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.report.picks import (
    PICK_NAMES,
    PICK_TITLES,
    BaselineComparison,
    Pick,
    did_not_load,
    finite,
    fmt_gib,
    fmt_tok_s,
    is_complete,
    is_feasible,
    is_measured,
    is_spilled,
    is_true,
    pareto_front,
)
from tuner.report.prediction import summarize
from tuner.report.render import Block
from tuner.schema import SCHEMA_VERSION, StudyMeta, TrialRecord

DID_NOT_LOAD = "did not load"
_STATE_WORDS = {
    "FAIL": "failed (error)",
    "RUNNING": "still running",
    "WAITING": "waiting",
    "PRUNED": "pruned",
}


@dataclass(frozen=True)
class Artifact:
    filename: str
    text: str


# ---------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------


def _ctx(num_ctx: int) -> str:
    """num_ctx as shown: 0 means the engine's default (a baseline that did not load)."""
    return str(num_ctx) if num_ctx > 0 else "default"


def build_report(
    meta: StudyMeta,
    records: Sequence[TrialRecord],
    chosen: dict[str, Pick],
    missing: dict[str, str],
    baseline: BaselineComparison,
    artifacts: dict[str, Artifact],
    images: dict[str, tuple[str, bytes]],
    extra_files: Sequence[str] = (),
) -> list[Block]:
    """Every block of the report. `artifacts` maps pick names (and "best") to their files;
    `images` maps "pareto", "speed", "vram" (and "predicted") to (file name, PNG bytes)."""
    blocks = [Block("h1", f"autotune report: {meta.model}")]
    blocks += _summary(meta, records, chosen, missing, artifacts)
    blocks += _machine(meta)
    blocks += _vram_source_note(meta, records)
    blocks += _recommendations(meta, chosen, missing, artifacts)
    blocks.append(Block("h2", "Speed against memory"))
    blocks.append(
        Block(
            "p",
            "Each point is one trial. The black staircase joins the Pareto front: the feasible "
            "settings that no other feasible setting beats on both speed and VRAM.",
        )
    )
    if "pareto" in images:
        blocks.append(
            Block(
                "img", "decode speed against peak VRAM", caption=images["pareto"][0], data=images["pareto"][1]
            )
        )
    blocks += _front_table(records)
    blocks += _baseline(baseline)
    if "speed" in images:
        blocks.append(Block("h2", "Speed against layers on the GPU"))
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
        blocks.append(Block("h2", "Memory against context"))
        blocks.append(
            Block("p", "Peak VRAM grows with num_ctx (the KV cache) and with the layers on the GPU.")
        )
        blocks.append(
            Block("img", "peak VRAM against num_ctx", caption=images["vram"][0], data=images["vram"][1])
        )
    blocks += _prediction(meta, records, images)
    blocks += _infeasible(records)
    blocks += _unfinished(records)
    blocks += _all_trials(records)
    blocks += _how_to_use(meta, artifacts, extra_files)
    blocks.append(
        Block(
            "p",
            f"Written by {_tool(meta)}, study schema {meta.schema_version} "
            f"(reader {SCHEMA_VERSION}). trials.csv holds every measurement.",
        )
    )
    return blocks


def _summary(meta, records, chosen, missing, artifacts) -> list[Block]:
    states: dict[str, int] = {}
    for r in records:
        states[r.state] = states.get(r.state, 0) + 1
    complete = states.get("COMPLETE", 0)
    others = "".join(
        f", {n} {_STATE_WORDS.get(s, s.lower())}" for s, n in sorted(states.items()) if s != "COMPLETE"
    )
    feasible = sum(map(is_feasible, records))
    failed = sum(map(did_not_load, records))
    line = (
        f"Engine **{meta.engine}** · study `{meta.study_name}` · budget {meta.budget} trials · "
        f"{complete} trials done{others} · {feasible} feasible · {failed} did not load."
    )
    blocks = [Block("p", line)]
    if "fastest" in chosen:
        best = chosen["fastest"].trial
        file_note = f" → `{artifacts['best'].filename}`" if "best" in artifacts else ""
        blocks.append(
            Block(
                "p",
                f"**Best setting: {best.tag}, {_num_gpu(best.num_gpu)}, num_ctx {_ctx(best.num_ctx)}: "
                f"{fmt_tok_s(best.decode_tok_s)} tok/s at {fmt_gib(best.peak_vram_bytes)} "
                f"peak VRAM**{file_note}",
            )
        )
    else:
        messages: dict[str, int] = {}
        for r in records:
            if is_complete(r) and not is_feasible(r) and r.error:
                messages[_one_line(r.error)] = messages.get(_one_line(r.error), 0) + 1
        common = sorted(messages.items(), key=lambda kv: -kv[1])[:3]
        quoted = "; ".join(f"'{m}' ({n} trial{'s' if n > 1 else ''})" for m, n in common)
        blocks.append(
            Block(
                "note",
                f"No feasible setting was found. {missing.get('fastest', '')} "
                + (f"The server said: {quoted}. " if quoted else "")
                + "Every failed trial and its message is listed under Infeasible trials; a smaller context, "
                "a smaller quantization or fewer layers on the GPU may fit.",
            )
        )
    return blocks


def _machine(meta: StudyMeta) -> list[Block]:
    fp = meta.fingerprint or {}
    blocks = [Block("h2", "Machine and study")]
    gpus = [g for g in fp.get("gpus") or [] if isinstance(g, dict)]
    if gpus:
        rows = [
            [str(i), str(g.get("name", "?")), fmt_gib(g.get("memory_bytes")), str(g.get("driver", ""))]
            for i, g in enumerate(gpus)
        ]
        blocks.append(Block("table", items=["GPU", "name", "memory", "driver"], rows=rows))
    else:
        blocks.append(Block("p", "No GPU was recorded in the fingerprint."))
    server = fp.get("server") or {}
    host = fp.get("host") or {}
    cpu = str(host.get("cpu", "?")) + (f" ({host['cpu_count']} threads)" if host.get("cpu_count") else "")
    name = f"{host['name']}: " if host.get("name") else ""
    items = []
    if server:
        items.append(
            f"Server: {server.get('engine', meta.engine)} {server.get('version', '?')} at {server.get('host', '?')}"
        )
    if host:
        items.append(f"Host: {name}{cpu}, {fmt_gib(host.get('ram_bytes'))} RAM, {host.get('os', '?')}")
    items += [
        f"Tool: {_tool(meta)}",
        f"Peak VRAM measured with: {_vram_source(meta)}",
        f"Model: {meta.model}; tags: {', '.join(meta.tags) or '?'}",
        f"Context ladder: {', '.join(str(c) for c in meta.ctx_ladder) or '?'}",
        f"Constraints: VRAM limit {fmt_gib(meta.vram_limit_bytes) if meta.vram_limit_bytes else 'none'}, "
        f"min_ctx {meta.min_ctx or 'none'}, GPU only {'yes' if meta.gpu_only else 'no'}",
        f"Measurement: {meta.num_predict} tokens per generation, prompt depth {meta.depth}",
    ]
    blocks.append(Block("ul", items=items))
    return blocks


def _vram_source(meta: StudyMeta) -> str:
    fp = meta.fingerprint or {}
    source = str(fp.get("vram_source") or "unknown")
    words = {
        "nvml": "NVML (the GPU driver)",
        "simulator": "the simulator's GPUs",
        "none": "nothing (see below)",
    }
    note = f" ({fp['vram_note']})" if fp.get("vram_note") else ""
    return words.get(source, source) + note


def _vram_source_note(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[Block]:
    fallback = [r for r in records if r.vram_source == "size_vram"]
    if not fallback:
        return []
    reason = (meta.fingerprint or {}).get("vram_note") or ""
    why = f" ({reason})" if reason else ""
    return [
        Block(
            "note",
            f"Peak VRAM for {len(fallback)} of {len(records)} trials comes from the engine's own "
            f"`size_vram`, not from NVML or the simulator: GPU memory could not be read here{why}. "
            "That happens without an NVIDIA driver, with a non-NVIDIA GPU, or when the server runs on "
            "another host. `size_vram` counts the model's own buffers only (no CUDA context, no other "
            "processes), so read those figures as a lower bound.",
        )
    ]


def _recommendations(meta, chosen: dict[str, Pick], missing: dict[str, str], artifacts) -> list[Block]:
    blocks = [Block("h2", "Recommendations")]
    if not chosen:
        blocks.append(Block("p", f"None. {missing.get('fastest', '')}"))
        return blocks
    for name in PICK_NAMES:
        title = PICK_TITLES[name]
        if name not in chosen:
            blocks.append(Block("p", f"**{title}**: none. {missing.get(name, '')}"))
            continue
        pick = chosen[name]
        r = pick.trial
        blocks.append(Block("h3", title))
        blocks.append(Block("p", pick.reason))
        blocks.append(
            Block(
                "p",
                f"Trial #{r.number}: `{r.tag}`, {_num_gpu(r.num_gpu)}, num_ctx {_ctx(r.num_ctx)} · "
                f"decode {fmt_tok_s(r.decode_tok_s)} tok/s · prefill {fmt_tok_s(r.prefill_tok_s)} "
                f"tok/s · TTFT {_fmt(r.ttft_s, 's')} · peak VRAM {fmt_gib(r.peak_vram_bytes)} · "
                f"on GPU {_gpu_pct(r)}",
            )
        )
        if name in artifacts:
            blocks.append(Block("code", artifacts[name].text, caption=artifacts[name].filename))
    return blocks


def _front_table(records) -> list[Block]:
    front = pareto_front(records)
    if not front:
        return [Block("p", "The Pareto front is empty: no feasible trial with a VRAM measurement.")]
    rows = [
        [
            f"#{r.number}",
            r.tag,
            _num_gpu(r.num_gpu, short=True),
            _ctx(r.num_ctx),
            fmt_tok_s(r.decode_tok_s),
            fmt_gib(r.peak_vram_bytes),
            _gpu_pct(r),
            fmt_tok_s(r.prefill_tok_s),
            _fmt(r.ttft_s, "s"),
        ]
        for r in front
    ]
    headers = [
        "trial",
        "tag",
        "num_gpu",
        "num_ctx",
        "decode tok/s",
        "peak VRAM",
        "on GPU",
        "prefill tok/s",
        "TTFT",
    ]
    return [Block("h3", "Pareto front (least VRAM first)"), Block("table", items=headers, rows=rows)]


def _baseline(comparison: BaselineComparison) -> list[Block]:
    blocks = [Block("h2", "Against the engine's own placement"), Block("p", comparison.summary)]
    rows = []
    for label, r in (("engine's own placement", comparison.baseline), ("fastest pick", comparison.best)):
        if r is not None:
            rows.append(
                [
                    label,
                    f"#{r.number}",
                    r.tag,
                    _num_gpu(r.num_gpu, short=True),
                    _ctx(r.num_ctx),
                    _speed(r),
                    fmt_gib(r.peak_vram_bytes),
                    _gpu_pct(r),
                ]
            )
    if rows:
        headers = ["", "trial", "tag", "num_gpu", "num_ctx", "decode tok/s", "peak VRAM", "on GPU"]
        blocks.append(Block("table", items=headers, rows=rows))
    return blocks


def _prediction(meta: StudyMeta, records, images: dict[str, tuple[str, bytes]]) -> list[Block]:
    s = summarize(records)
    if s is None:
        return []
    blocks = [Block("h2", "Predicted against measured memory")]
    rule = f" (rule: {meta.prediction_rule})" if meta.prediction_rule else ""
    text = (
        f"Before each load, autotune's memory estimator predicted the VRAM of the config{rule}. Over {s.loaded} "
        f"loaded trials, measured/predicted was {s.median_ratio:.3f} at the median "
        f"(from {s.best_ratio:.3f} to {s.worst_ratio:.3f}). "
        if s.loaded
        else f"Before each load, autotune's memory estimator predicted the VRAM of the config{rule}. "
    )
    if s.final_margin is not None:
        text += f"The safety margin learned from these ratios ended at {s.final_margin:.3f}. "
    text += (
        f"{s.skipped} config(s) were not loaded because the prediction times the margin exceeded a GPU's "
        f"free memory; {s.failed_loads} load(s) failed for lack of memory."
    )
    blocks.append(Block("p", text))
    if "predicted" in images:
        blocks.append(
            Block(
                "img",
                "measured peak VRAM against predicted VRAM",
                caption=images["predicted"][0],
                data=images["predicted"][1],
            )
        )
    return blocks


def _infeasible(records) -> list[Block]:
    bad = sorted((r for r in records if is_complete(r) and not is_feasible(r)), key=lambda r: r.number)
    if not bad:
        return [
            Block("h2", "Infeasible trials"),
            Block("p", "None: every finished trial loaded and met the constraints."),
        ]
    rows = []
    for r in bad:
        if is_measured(r):
            result = f"{fmt_tok_s(r.decode_tok_s)} tok/s, broke a constraint"
        else:
            result = DID_NOT_LOAD + (" (out of memory)" if is_true(r.oom) else "")
        rows.append(
            [
                f"#{r.number}",
                r.tag,
                _num_gpu(r.num_gpu, short=True),
                _ctx(r.num_ctx),
                result,
                _one_line(r.error) or "(no message)",
            ]
        )
    headers = ["trial", "tag", "num_gpu", "num_ctx", "result", "message"]
    return [
        Block("h2", "Infeasible trials"),
        Block("p", "Trials that did not load have no speed: the message is the server's own."),
        Block("table", items=headers, rows=rows),
    ]


def _unfinished(records) -> list[Block]:
    rows = [
        [
            f"#{r.number}",
            r.state,
            r.tag,
            _num_gpu(r.num_gpu, short=True),
            _ctx(r.num_ctx),
            _one_line(r.error) or "",
        ]
        for r in sorted(records, key=lambda r: r.number)
        if not is_complete(r)
    ]
    if not rows:
        return []
    return [
        Block("h2", "Unfinished or failed trials"),
        Block("p", "Not COMPLETE, so left out of every pick and plot."),
        Block("table", items=["trial", "state", "tag", "num_gpu", "num_ctx", "message"], rows=rows),
    ]


def _all_trials(records) -> list[Block]:
    rows = []
    for r in sorted(records, key=lambda r: r.number):
        shown = is_complete(r) and is_measured(r)  # nothing measured is shown for the others
        rows.append(
            [
                f"#{r.number}",
                r.state,
                r.tag,
                _num_gpu(r.num_gpu, short=True),
                _ctx(r.num_ctx),
                _speed(r),
                fmt_tok_s(r.prefill_tok_s) if shown else "",
                _fmt(r.ttft_s, "s") if shown else "",
                fmt_gib(r.peak_vram_bytes) if shown and finite(r.peak_vram_bytes) else "",
                _gpu_pct(r) if shown else "",
                ("yes" if is_feasible(r) else "no") if is_complete(r) else "",
            ]
        )
    headers = [
        "trial",
        "state",
        "tag",
        "num_gpu",
        "num_ctx",
        "decode tok/s",
        "prefill tok/s",
        "TTFT",
        "peak VRAM",
        "on GPU",
        "feasible",
    ]
    return [Block("h2", "All trials"), Block("table", items=headers, rows=rows)]


def _how_to_use(meta: StudyMeta, artifacts: dict[str, Artifact], extra_files: Sequence[str]) -> list[Block]:
    blocks = [Block("h2", "How to use")]
    best = artifacts.get("best")
    if best is None:
        blocks.append(Block("p", "There is no recommended setting to apply: no trial was feasible."))
        return blocks
    if meta.engine != "llama-server":
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", meta.model).strip("-") + "-tuned"
        blocks.append(
            Block("code", f"ollama create {name} -f {best.filename}\nollama run {name}", caption="shell")
        )
        blocks.append(
            Block(
                "p",
                f"Or let autotune do it: rerun it with `--apply {name}`. The num_gpu and num_ctx "
                "in the Modelfile become the new model's defaults; a request's own options still "
                "override them. The other picks' Modelfiles (`pick-*.Modelfile`) work the same way.",
            )
        )
    else:
        blocks.append(Block("code", f"sh {best.filename} --host 127.0.0.1 --port 8080", caption="shell"))
        blocks.append(
            Block(
                "p",
                "The script runs the exact llama-server command line that was measured; extra "
                "arguments are passed through. The other picks have their own `pick-*` scripts.",
            )
        )
        for filename in extra_files:
            blocks.append(
                Block(
                    "p",
                    f"Router mode: `{filename}` holds one preset section per pick; start "
                    f"`llama-server --models-preset {filename}` or copy a section into your own "
                    "preset file.",
                )
            )
    return blocks


# ---------------------------------------------------------------------------------------------------------
# Cell formatting
# ---------------------------------------------------------------------------------------------------------


def _speed(r: TrialRecord) -> str:
    if not is_complete(r):
        return ""
    return fmt_tok_s(r.decode_tok_s) if is_measured(r) else DID_NOT_LOAD


def _num_gpu(num_gpu: int, *, short: bool = False) -> str:
    if num_gpu < 0:
        return "auto" if short else "num_gpu auto (the engine decides)"
    return str(num_gpu) if short else f"num_gpu {num_gpu}"


def _gpu_pct(r: TrialRecord) -> str:
    if finite(r.gpu_fraction):
        return f"{100 * r.gpu_fraction:.0f}%" + (" (spill)" if is_spilled(r) else "")
    if r.cpu_spill is not None:
        return "spill" if is_spilled(r) else "100%"
    return ""


def _fmt(value: object, unit: str) -> str:
    return f"{value:.2f} {unit}" if finite(value) else "n/a"


def _one_line(text: str) -> str:
    return " ".join(str(text or "").split())


def _tool(meta: StudyMeta) -> str:
    tool = (meta.fingerprint or {}).get("tool")
    if isinstance(tool, dict):
        text = f"{tool.get('name', 'autotune')} {tool.get('version', '?')}"
        return text + (f" (Python {tool['python']})" if tool.get("python") else "")
    return str(tool) if tool else "autotune (version unknown)"
