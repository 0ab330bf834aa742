"""The report's detail sections, one function each, in the order document.py places them. Pure.

About 450 lines, kept whole: each function is one section of the page and reads best next to the others
it shares its cell formatting with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.decision import noise
from tuner.decision.energy import fmt_energy, has_energy
from tuner.decision.picks import PICK_TITLES, Decision, deployable, pareto_front, pick_rules
from tuner.decision.trials import (
    failure_kind,
    finite,
    fmt_gib,
    fmt_interval,
    fmt_tok_s,
    is_complete,
    is_feasible,
    is_measured,
    is_spilled,
    is_true,
    own_interval,
    speed_interval,
    was_remeasured,
)
from tuner.report.prediction import summarize
from tuner.report.render import Block, code_md, escape_md
from tuner.schema import StudyMeta, TrialRecord

DID_NOT_LOAD = "did not load"
_FAILURE_WORDS = {
    "predicted": "not loaded: predicted not to fit",
    "host": "did not load: host RAM",
    "gpu": "did not load (out of memory)",
    "other": "did not load",
}


@dataclass(frozen=True)
class Artifact:
    filename: str
    text: str


# ---------------------------------------------------------------------------------------------------------
# The picks
# ---------------------------------------------------------------------------------------------------------


def pick_files(decision: Decision, artifacts: dict[str, Artifact], meta: StudyMeta) -> list[Block]:
    rules = pick_rules(meta)
    blocks = [Block("h3", "The picks, defined")]
    blocks.append(
        Block("ul", items=[f"**{PICK_TITLES[name]}**: {escape_md(rules[name])}." for name in decision.names])
    )
    blocks.append(
        Block(
            "p",
            "Never a config that runs entirely on the CPU while any config with layers on the GPU is "
            "feasible. Decode speeds are means over the repeats with their 95% confidence interval "
            "(Student's t); two configs whose intervals overlap are within noise of each other.",
        )
    )
    if not artifacts:
        return blocks
    blocks.append(Block("h3", "Pick files"))
    blocks.append(
        Block(
            "p",
            f"`best` is the {PICK_TITLES[decision.best_name].lower()} pick. Each file records what was "
            "measured for it; "
            "`ollama create NAME -f FILE` (or the script, for llama-server) deploys it.",
        )
    )
    for name in ("best", *decision.names):
        if name in artifacts:
            blocks.append(Block("code", artifacts[name].text, caption=artifacts[name].filename))
    return blocks


def front_tables(meta: StudyMeta, records: Sequence[TrialRecord], decision: Decision) -> list[Block]:
    front = pareto_front(records)
    if not front:
        return [Block("p", "The Pareto front is empty: no feasible trial with a VRAM measurement.")]
    fastest = decision.picks.get("fastest")
    shown = deployable(meta, records, fastest.trial if fastest else None)
    numbers = {r.number for r in shown}
    rest = [r for r in front if r.number not in numbers]
    headers = ["trial", "tag", "num_gpu", "num_ctx", "decode tok/s (95% interval)", "peak VRAM", "on GPU"]
    headers += ["prefill tok/s", "TTFT"]
    blocks = [
        Block("h3", "Deployable configs on the Pareto front (least VRAM first)"),
        Block(
            "p",
            "The speed/VRAM front: feasible configs that no other feasible config beats on both speed and "
            "VRAM. Listed here are the ones a user would deploy: fully on the GPU, or (a partial offload) "
            "within 10% of the fastest pick. TTFT is the streamed time to the first token, never less than "
            "the engine's own prompt time plus one token.",
        ),
    ]
    if shown:
        blocks.append(Block("table", items=headers, rows=[_front_row(r) for r in shown]))
    else:
        blocks.append(Block("p", "None of the front's configs is deployable in that sense."))
    if rest:
        blocks.append(Block("h3", "The rest of the front"))
        blocks.append(
            Block(
                "p",
                f"{len(rest)} more front configs leave part of the model on the CPU (or all of it) and decode "
                "well below the fastest: cheaper in VRAM, rarely worth deploying.",
            )
        )
        blocks.append(Block("table", items=headers, rows=[_front_row(r) for r in rest]))
    return blocks


def _front_row(r: TrialRecord) -> list[str]:
    return [
        f"#{r.number}",
        r.tag,
        num_gpu_text(r.num_gpu, short=True),
        ctx_text(r.num_ctx),
        fmt_interval(speed_interval(r)),
        fmt_gib(r.peak_vram_bytes),
        gpu_pct(r),
        fmt_tok_s(r.prefill_tok_s),
        fmt_seconds(r.ttft_s),
    ]


def your_setting(decision: Decision) -> list[Block]:
    comparison = decision.baseline
    blocks = [Block("h3", "Against your current setting"), Block("p", escape_md(comparison.summary))]
    rows = []
    for label, r in (("your current setting", comparison.baseline), ("fastest pick", comparison.best)):
        if r is not None:
            rows.append(
                [
                    label,
                    f"#{r.number}",
                    r.tag,
                    num_gpu_text(r.num_gpu, short=True),
                    ctx_text(r.num_ctx),
                    speed_cell(r),
                    fmt_gib(r.peak_vram_bytes),
                    gpu_pct(r),
                ]
            )
    if rows:
        headers = ["", "trial", "tag", "num_gpu", "num_ctx", "decode tok/s (95% interval)", "peak VRAM"]
        blocks.append(Block("table", items=[*headers, "on GPU"], rows=rows))
    return blocks


def how_sure(meta: StudyMeta, records: Sequence[TrialRecord], decision: Decision) -> list[Block]:
    blocks = [Block("h3", "Noise and interference")]
    target = getattr(meta, "target_rse", 0.02) or 0.02
    blocks.append(
        Block(
            "p",
            f"Each trial repeats its timed generation until the relative standard error (RSE) of decode "
            f"tok/s is below {100 * target:.0f}% (at least 3, at most the --max-repeats); a trial that never "
            "gets there is marked noisy. Before and during each trial autotune records what else used the "
            "machine: other processes' CPU, other processes on the GPUs (NVML) and clock throttling. "
            + escape_md(noise.summary(records)),
        )
    )
    tied = decision.tied
    if len(tied) > 1 or any(was_remeasured(r) for r in records):
        rows = []
        for r in tied:
            own = own_interval(r)
            rows.append(
                [
                    f"#{r.number}",
                    r.tag,
                    num_gpu_text(r.num_gpu, short=True),
                    ctx_text(r.num_ctx),
                    f"{fmt_interval(own)} ({own.n if own else 0} runs)",
                    (
                        f"{fmt_interval(speed_interval(r))} ({len(r.remeasure_samples)} visits)"
                        if was_remeasured(r)
                        else "not re-measured"
                    ),
                    pct(r.decode_rse),
                    "yes" if is_true(r.noisy) else "no",
                    "; ".join(noise.causes(r.interference)) or "none seen",
                ]
            )
        headers = ["trial", "tag", "num_gpu", "num_ctx", "own repeats", "interleaved re-measure", "RSE"]
        blocks.append(Block("p", "The configs within noise of the fastest:"))
        blocks.append(Block("table", items=[*headers, "noisy", "interference"], rows=rows))
    disturbed = [r for r in records if is_complete(r) and (is_true(r.noisy) or noise.disturbed(r))]
    if disturbed:
        rows = [
            [
                f"#{r.number}",
                r.tag,
                num_gpu_text(r.num_gpu, short=True),
                ctx_text(r.num_ctx),
                fmt_interval(own_interval(r)),
                pct(r.decode_rse),
                "yes" if is_true(r.noisy) else "no",
                "; ".join(noise.causes(r.interference)) or "none seen",
            ]
            for r in sorted(disturbed, key=lambda r: r.number)
        ]
        headers = ["trial", "tag", "num_gpu", "num_ctx", "decode tok/s", "RSE", "noisy", "interference"]
        blocks.append(Block("p", "Noisy or disturbed trials:"))
        blocks.append(Block("table", items=headers, rows=rows))
    return blocks


def prediction(meta: StudyMeta, records, images: dict[str, tuple[str, bytes]]) -> list[Block]:
    s = summarize(records)
    if s is None:
        return []
    blocks = [Block("h3", "Predicted against measured memory")]
    rule = f" (rule: {escape_md(meta.prediction_rule)})" if meta.prediction_rule else ""
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


def infeasible(records) -> list[Block]:
    bad = sorted((r for r in records if is_complete(r) and not is_feasible(r)), key=lambda r: r.number)
    if not bad:
        return [
            Block("h3", "Infeasible trials"),
            Block("p", "None: every finished trial loaded and met the constraints."),
        ]
    rows = []
    for r in bad:
        if is_measured(r):
            result = f"{fmt_tok_s(r.decode_tok_s)} tok/s, broke a constraint"
        else:
            result = _FAILURE_WORDS[failure_kind(r) or "other"]
        predicted = fmt_gib(r.predicted_vram_bytes) if finite(r.predicted_vram_bytes) else ""
        rows.append(
            [
                f"#{r.number}",
                r.tag,
                num_gpu_text(r.num_gpu, short=True),
                ctx_text(r.num_ctx),
                result,
                predicted,
                " ".join(str(r.error or "").split()) or "(no message)",
            ]
        )
    headers = ["trial", "tag", "num_gpu", "num_ctx", "result", "predicted VRAM", "message"]
    return [
        Block("h3", "Infeasible trials"),
        Block(
            "p",
            "Trials that did not load have no speed: the message is the server's own. A host-RAM failure "
            "(the part of the model left on the CPU did not fit in system memory) needs more layers on the "
            "GPU or a smaller context; a GPU failure needs fewer layers, a smaller context or quantization.",
        ),
        Block("table", items=headers, rows=rows),
    ]


def unfinished(records) -> list[Block]:
    rows = [
        [
            f"#{r.number}",
            r.state,
            r.tag,
            num_gpu_text(r.num_gpu, short=True),
            ctx_text(r.num_ctx),
            " ".join(str(r.error or "").split()),
        ]
        for r in sorted(records, key=lambda r: r.number)
        if not is_complete(r)
    ]
    if not rows:
        return []
    return [
        Block("h3", "Unfinished or failed trials"),
        Block("p", "Not COMPLETE, so left out of every pick and plot."),
        Block("table", items=["trial", "state", "tag", "num_gpu", "num_ctx", "message"], rows=rows),
    ]


# ---------------------------------------------------------------------------------------------------------
# Machines
# ---------------------------------------------------------------------------------------------------------


def machine_groups(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[tuple[str, dict, list[int]]]:
    """[(fingerprint id, fingerprint, trial numbers)], the study's first machine first. Trials without an
    id (schema 1, or never measured) belong to the study's own fingerprint."""
    prints = dict(meta.fingerprints or {})
    first = next(iter(prints), "")
    groups: dict[str, list[int]] = {}
    for r in sorted(records, key=lambda r: r.number):
        if not is_complete(r):
            continue
        groups.setdefault(r.fingerprint_id or first, []).append(r.number)
    ids = list(dict.fromkeys([first, *groups])) if groups else [first]
    return [(i, prints.get(i) or (meta.fingerprint if i == first else {}), groups.get(i, [])) for i in ids]


def machines_note(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[Block]:
    groups = [g for g in machine_groups(meta, records) if g[2]]
    if len(groups) < 2:
        return []
    parts = "; ".join(f"`{i or 'study'}`: {len(numbers)} trials" for i, _, numbers in groups)
    return [
        Block(
            "note",
            f"This study's trials were measured on {len(groups)} different machines or servers ({parts}), "
            "mixed with --allow-other-machine. Speeds are comparable only within one machine; see Machines.",
        )
    ]


def machine(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[Block]:
    blocks = [Block("h3", "Machines")]
    groups = machine_groups(meta, records)
    for index, (ident, fp, numbers) in enumerate(groups):
        if len(groups) > 1:
            trials = ", ".join(f"#{n}" for n in numbers) or "none"
            blocks.append(Block("p", f"**Machine `{ident or 'study'}`** measured trials {trials}."))
        blocks += _fingerprint(meta, fp)
        if index == 0:
            blocks += _study_facts(meta)
    return blocks


def _fingerprint(meta: StudyMeta, fp: dict) -> list[Block]:
    blocks = []
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
    items = []
    if server:
        items.append(
            "Server: "
            + escape_md(
                f"{server.get('engine', meta.engine)} {server.get('version', '?')} at {server.get('host', '?')}"
            )
        )
    if host:
        cpu = str(host.get("cpu", "?")) + (f" ({host['cpu_count']} threads)" if host.get("cpu_count") else "")
        name = f"{host['name']}: " if host.get("name") else ""
        items.append(
            "Host: " + escape_md(f"{name}{cpu}, {fmt_gib(host.get('ram_bytes'))} RAM, {host.get('os', '?')}")
        )
    if items:
        blocks.append(Block("ul", items=items))
    return blocks


def _study_facts(meta: StudyMeta) -> list[Block]:
    return [
        Block(
            "ul",
            items=[
                f"Tool: {escape_md(tool_name(meta))}",
                f"Peak VRAM measured with: {escape_md(_vram_source(meta))}",
                f"Model: {escape_md(meta.model)}; tags: {escape_md(', '.join(meta.tags) or '?')}",
                f"Context ladder: {', '.join(str(c) for c in meta.ctx_ladder) or '?'}",
                f"Constraints: VRAM limit {fmt_gib(meta.vram_limit_bytes) if meta.vram_limit_bytes else 'none'}, "
                f"min_ctx {meta.min_ctx or 'none'}, GPU only {'yes' if meta.gpu_only else 'no'}",
                f"Measurement: {meta.num_predict} tokens per generation, prompt depth {meta.depth}",
            ],
        )
    ]


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


def vram_source_note(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[Block]:
    fallback = [r for r in records if r.vram_source == "size_vram"]
    if not fallback:
        return []
    reason = (meta.fingerprint or {}).get("vram_note") or ""
    why = f" ({escape_md(reason)})" if reason else ""
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


# ---------------------------------------------------------------------------------------------------------
# Every trial, and how to use the answer
# ---------------------------------------------------------------------------------------------------------


def all_trials(meta: StudyMeta, records: Sequence[TrialRecord]) -> list[Block]:
    groups = machine_groups(meta, records)
    many = len([g for g in groups if g[2]]) > 1
    by_number = {r.number: r for r in records}
    grouped = {n for _, _, numbers in groups for n in numbers}
    headers = ["trial", "state", "tag", "num_gpu", "num_ctx", "decode tok/s (95% interval)", "noisy"]
    headers += ["prefill tok/s", "TTFT", "peak VRAM", "on GPU", "feasible"]
    energy = has_energy(records)
    if energy:
        headers.insert(-1, "J/token")
    blocks = [Block("h3", "All trials")]
    sections: list[tuple[str, list[TrialRecord]]] = []
    if many:
        for ident, _, numbers in groups:
            if numbers:
                sections.append(
                    (f"Measured on machine `{ident or 'study'}`", [by_number[n] for n in numbers])
                )
        others = [r for r in records if r.number not in grouped]
        if others:
            sections.append(("Not measured", others))
    else:
        sections.append(("", list(records)))
    for title, rows_of in sections:
        if title:
            blocks.append(Block("p", f"**{title}**"))
        blocks.append(
            Block(
                "table",
                items=headers,
                rows=[_trial_row(r, energy) for r in sorted(rows_of, key=lambda r: r.number)],
            )
        )
    return blocks


def _trial_row(r: TrialRecord, energy: bool = False) -> list[str]:
    shown = is_complete(r) and is_measured(r)  # nothing measured is shown for the others
    joules = [fmt_energy(r) if shown and finite(r.energy_j_per_token) else ""] if energy else []
    return [
        f"#{r.number}",
        r.state,
        r.tag,
        num_gpu_text(r.num_gpu, short=True),
        ctx_text(r.num_ctx),
        speed_cell(r),
        ("yes" if is_true(r.noisy) else "no") if shown else "",
        fmt_tok_s(r.prefill_tok_s) if shown else "",
        fmt_seconds(r.ttft_s) if shown else "",
        fmt_gib(r.peak_vram_bytes) if shown and finite(r.peak_vram_bytes) else "",
        gpu_pct(r) if shown else "",
        *joules,
        ("yes" if is_feasible(r) else "no") if is_complete(r) else "",
    ]


def how_to_use(meta: StudyMeta, artifacts: dict[str, Artifact], extra_files: Sequence[str]) -> list[Block]:
    blocks = [Block("h3", "How to use")]
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
                    f"Router mode: {code_md(filename)} holds one preset section per pick; start "
                    f"`llama-server --models-preset {filename}` or copy a section into your own "
                    "preset file.",
                )
            )
    return blocks


# ---------------------------------------------------------------------------------------------------------
# Cell formatting
# ---------------------------------------------------------------------------------------------------------


def ctx_text(num_ctx: int) -> str:
    """num_ctx as shown: 0 means the engine's default (a baseline that did not load)."""
    return str(num_ctx) if num_ctx > 0 else "default"


def speed_cell(r: TrialRecord) -> str:
    if not is_complete(r):
        return ""
    if is_measured(r):
        return fmt_interval(speed_interval(r))
    return _FAILURE_WORDS[failure_kind(r) or "other"]


def num_gpu_text(num_gpu: int, *, short: bool = False) -> str:
    if num_gpu < 0:
        return "auto" if short else "num_gpu auto (the engine decides)"
    return str(num_gpu) if short else f"num_gpu {num_gpu}"


def gpu_pct(r: TrialRecord) -> str:
    if finite(r.gpu_fraction):
        return f"{100 * r.gpu_fraction:.0f}%" + (" (spill)" if is_spilled(r) else "")
    if r.cpu_spill is not None:
        return "spill" if is_spilled(r) else "100%"
    return ""


def fmt_seconds(value: object) -> str:
    return f"{value:.2f} s" if finite(value) else "n/a"


def pct(value: object) -> str:
    return f"{100 * value:.1f}%" if finite(value) else "n/a"


def tool_name(meta: StudyMeta) -> str:
    tool = (meta.fingerprint or {}).get("tool")
    if isinstance(tool, dict):
        text = f"{tool.get('name', 'autotune')} {tool.get('version', '?')}"
        return text + (f" (Python {tool['python']})" if tool.get("python") else "")
    return str(tool) if tool else "autotune (version unknown)"
