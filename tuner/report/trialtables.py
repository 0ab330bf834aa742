"""The report's trial tables: every trial (by machine where several measured them), the infeasible ones and
the unfinished ones. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.energy import fmt_energy, has_energy
from tuner.decision.trials import (
    failure_kind,
    finite,
    fmt_gib,
    fmt_tok_s,
    is_complete,
    is_feasible,
    is_measured,
    is_true,
)
from tuner.report.cells import FAILURE_WORDS, ctx_text, fmt_seconds, gpu_pct, num_gpu_text, speed_cell
from tuner.report.machines import machine_groups
from tuner.report.render import Block
from tuner.schema import StudyMeta, TrialRecord


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
            result = FAILURE_WORDS[failure_kind(r) or "other"]
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
