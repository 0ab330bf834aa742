"""The report's detail sections about the decision, one function each: the picks and their files, the Pareto
front, your current setting, how sure, the memory prediction, and how to use the answer. Pure. The machine
sections are in machines.py, the trial tables in trialtables.py, the table cells in cells.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.decision import noise
from tuner.decision.picks import PICK_TITLES, Decision, deployable, pareto_front, pick_rules
from tuner.decision.trials import (
    fmt_gib,
    fmt_interval,
    fmt_tok_s,
    is_complete,
    is_true,
    own_interval,
    speed_interval,
    was_remeasured,
)
from tuner.report.cells import ctx_text, fmt_seconds, gpu_pct, num_gpu_text, pct, speed_cell
from tuner.report.prediction import summarize
from tuner.report.render import Block, code_md, escape_md
from tuner.schema import StudyMeta, TrialRecord


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
