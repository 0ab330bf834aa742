"""The report's machine sections: which machine measured which trials, each one's fingerprint, the study's
facts, and where peak VRAM came from. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.trials import fmt_gib, is_complete
from tuner.report.cells import tool_name
from tuner.report.render import Block, escape_md
from tuner.schema import StudyMeta, TrialRecord


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
