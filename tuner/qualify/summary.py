"""The morning's summary of a plan: summary.json (the machine-readable whole, what --compare and a fleet
summary read), summary.csv (one row per model and criterion), summary.md and summary.html (the same blocks,
rendered by tuner.report.render; the HTML embeds the soak plots, the Markdown links plots/<model>.soak.png).

summary.json is keyed for a fleet: its "fingerprint_id" names the machine and server that produced it,
"fingerprint" describes them, and every model and verdict carries the plan's model name and criterion id, so
several hosts' summaries of one plan combine by (fingerprint_id, model, criterion).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.fingerprint import describe
from tuner.qualify.criteria import PASS, evaluate_all
from tuner.qualify.plan import Plan
from tuner.qualify.state import DONE, ModelOutcome, PlanState, study_name, write_json
from tuner.redact import redact
from tuner.report.render import Block, escape_md, render_html, render_markdown
from tuner.schema import TrialRecord
from tuner.study import load_records
from tuner.units import GiB

FORMAT = "autotune-qualify-summary"
VERSION = 1
NOT_RUN = "not run"
INTERRUPTED = "interrupted"  # its study has trials but it has no outcome yet: the plan stopped inside it


def _records(storage: str, study: str) -> list[TrialRecord]:
    try:
        return load_records(storage, study)[1]
    except TunerError:
        return []


def redacted(value: Any) -> Any:
    """Every string in a JSON-like value with the known secrets and URL passwords masked (tuner.redact):
    what the summary files hold leaks no credential of --host or --storage."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


def build(
    plan: Plan,
    fingerprint: dict[str, Any],
    fp_id: str,
    storage: str,
    out_dir: Path,
    fleet_id: str | None = None,
) -> dict[str, Any]:
    """The summary as a dict (summary.json), from the plan, the stored studies and the state folder. With
    `fleet_id` (what names this machine's studies), a model the plan stopped inside is "interrupted", with the
    trials its study holds, rather than "not run"."""
    state = PlanState(out_dir)
    models: list[dict[str, Any]] = []
    for entry in plan.models:
        o = state.outcome(entry.key)
        records: list[TrialRecord] = []
        if o is None or o.fingerprint_id != fp_id:
            o = ModelOutcome(entry.model, entry.key, "", NOT_RUN, fp_id)
            if fleet_id is not None:
                name = study_name(plan, entry, fleet_id)
                stored = _records(storage, name)
                finished = sum(1 for r in stored if r.state == "COMPLETE")
                if finished:
                    records = stored
                    o = dataclasses.replace(
                        o, study=name, status=INTERRUPTED, trials=finished, budget=plan.budget_of(entry)
                    )
        elif o.study:
            records = _records(storage, o.study)
        verdicts = evaluate_all(plan.criteria, entry.model, records, o.soak)
        row = o.to_dict()
        if row.get("soak"):
            row["soak"] = {k: v for k, v in row["soak"].items() if k != "collapse_spans_s"}
        row["verdicts"] = [v.to_dict() for v in verdicts]
        row["passed"] = bool(verdicts) and o.status == DONE and all(v.verdict == PASS for v in verdicts)
        models.append(row)
    return redacted(
        {
            "format": FORMAT,
            "version": VERSION,
            "plan": {
                "name": plan.name,
                "path": plan.path,
                "engine": plan.engine,
                "budget_per_model": plan.budget_per_model,
                "time_budget_h": plan.time_budget_h,
                "soak_minutes": plan.soak_minutes,
                "heat_soak_minutes": plan.heat_soak_minutes,
                "models": [e.model for e in plan.models],
            },
            "criteria": [
                {**dataclasses.asdict(c), "models": list(c.models), "text": c.text()} for c in plan.criteria
            ],
            "fingerprint_id": fp_id,
            "fingerprint": fingerprint,
            "machine": describe(fingerprint),
            "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "complete": all(m["status"] not in (NOT_RUN, INTERRUPTED) for m in models),
            "totals": {
                "models": len(models),
                "done": sum(1 for m in models if m["status"] == DONE),
                "failed": sum(1 for m in models if m["status"] == "failed"),
                "not_run": sum(1 for m in models if m["status"] == NOT_RUN),
                "interrupted": sum(1 for m in models if m["status"] == INTERRUPTED),
                "passed": sum(1 for m in models if m["passed"]),
            },
            "models": models,
        }
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def to_csv(summary: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "fingerprint_id",
            "model",
            "status",
            "criterion",
            "criterion_text",
            "verdict",
            "value",
            "detail",
            "error",
        ]
    )
    texts = {c["id"]: c["text"] for c in summary["criteria"]}
    for m in summary["models"]:
        if not m["verdicts"]:
            writer.writerow(
                [summary["fingerprint_id"], m["model"], m["status"], "", "", "", "", "", m["error"]]
            )
        for v in m["verdicts"]:
            writer.writerow(
                [
                    summary["fingerprint_id"],
                    m["model"],
                    m["status"],
                    v["criterion"],
                    texts.get(v["criterion"], ""),
                    v["verdict"],
                    "" if v["value"] is None else repr(v["value"]),
                    v["detail"],
                    m["error"],
                ]
            )
    return buffer.getvalue()


def blocks(summary: dict[str, Any], plots: dict[str, bytes], compare: Sequence[Block] = ()) -> list[Block]:
    """The summary's document: verdicts first, then each model's soak, the machine, and the comparison."""
    t = summary["totals"]
    out = [
        Block("h1", f"Qualification {escape_md(summary['plan']['name'])}"),
        Block(
            "p",
            f"{escape_md(summary['machine'])} (fingerprint {summary['fingerprint_id']}). "
            f"{t['models']} models: {t['done']} done, {t['failed']} failed, "
            + (f"{t['interrupted']} interrupted, " if t.get("interrupted") else "")
            + f"{t['not_run']} not run; "
            f"**{t['passed']} passed every criterion**. Written {summary['written']}.",
        ),
    ]
    if not summary["complete"]:
        out.append(
            Block(
                "note",
                "The plan has not finished: run the same command again to continue it (raise time_budget_h first if the time budget stopped it).",
            )
        )
    criteria = summary["criteria"]
    if criteria:
        out.append(Block("h2", "Models x criteria"))
        out.append(
            Block(
                "ul",
                items=[
                    f"**{c['id']}**: "
                    + (f"{escape_md(c['name'])}: " if c["name"] else "")
                    + escape_md(c["text"])
                    for c in criteria
                ],
            )
        )
        rows = []
        for m in summary["models"]:
            cells = {v["criterion"]: v for v in m["verdicts"]}
            row = [m["model"], m["status"]]
            for c in criteria:
                v = cells.get(c["id"])
                row.append("n/a" if v is None else f"{v['verdict'].upper()} {_fmt(v['value'])}".strip())
            row.append("PASS" if m["passed"] else "FAIL")
            rows.append(row)
        out.append(Block("table", items=["model", "status", *[c["id"] for c in criteria], "all"], rows=rows))
        details = [
            f"{escape_md(m['model'])} {v['criterion']}: {v['verdict']}: {escape_md(v['detail'])}"
            for m in summary["models"]
            for v in m["verdicts"]
        ]
        if details:
            out.append(Block("h3", "The numbers behind each verdict"))
            out.append(Block("ul", items=details))
    out.append(Block("h2", "Models"))
    rows = []
    for m in summary["models"]:
        b, s = m.get("best") or {}, m.get("soak") or {}
        vram = b.get("peak_vram_bytes")
        rows.append(
            [
                m["model"],
                m["status"] + (" (time budget)" if m.get("cut_by_time") else ""),
                f"{m.get('trials', 0)}/{m.get('budget', 0)}",
                f"{b.get('tag', '')} num_gpu {b.get('num_gpu')} num_ctx {b.get('num_ctx')}" if b else "–",
                _fmt(b.get("decode_tok_s")),
                _fmt(vram / GiB if isinstance(vram, (int, float)) else None),
                _fmt(s.get("soak_decode_tok_s")),
                _fmt(s.get("soak_drift_pct_per_h")) + (" DRIFT" if s.get("drift") else ""),
                _fmt(s.get("throttle_s")),
                _fmt(s.get("clock_collapses")),
                _fmt(s.get("max_temperature_c")),
                _fmt(s.get("soak_j_per_token")),
                _fmt(s.get("depth_decode_ratio")),
                m.get("modelfile") or "–",
            ]
        )
    out.append(
        Block(
            "table",
            items=[
                "model",
                "status",
                "trials",
                "recommended config",
                "decode tok/s",
                "peak VRAM GiB",
                "soak tok/s",
                "drift %/h",
                "throttle s",
                "clock collapses",
                "max °C",
                "J/token",
                "depth ratio",
                "install",
            ],
            rows=rows,
        )
    )
    problems = []
    for m in summary["models"]:
        depth_error = (m.get("soak") or {}).get("depth_error")
        for what, text in (("", m["error"]), ("soak: ", m.get("soak_error")), ("depth soak: ", depth_error)):
            if text:
                problems.append(f"{escape_md(m['model'])}: {what}{escape_md(text)}")
    if problems:
        out.append(Block("h3", "Failures"))
        out.append(Block("ul", items=problems))
    if plots:
        out.append(Block("h2", "Soak"))
        for key, png in plots.items():
            model = next((m for m in summary["models"] if m["key"] == key), None)
            s = (model or {}).get("soak") or {}
            reasons = ", ".join(f"{r} ({n})" for r, n in (s.get("throttle_reasons") or {}).items()) or "none"
            out.append(Block("h3", escape_md(model["model"] if model else key)))
            out.append(
                Block(
                    "p",
                    f"Clock: {escape_md((model or {}).get('soak_clock', ''))}; throttle reasons seen: {escape_md(reasons)}.",
                )
            )
            out.append(Block("img", text=f"soak of {key}", caption=f"plots/{key}.soak.png", data=png))
    out.append(Block("h2", "Machine"))
    out.append(Block("code", text=_fingerprint_text(summary["fingerprint"]), caption="fingerprint"))
    out.extend(compare)
    return out


def _fingerprint_text(fp: dict[str, Any], indent: str = "") -> str:
    lines = []
    for k, v in fp.items():
        if isinstance(v, dict):
            lines.append(f"{indent}{k}:")
            lines.append(_fingerprint_text(v, indent + "  "))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                lines.append(f"{indent}{k}[{i}]:")
                lines.append(_fingerprint_text(x, indent + "  "))
        else:
            lines.append(f"{indent}{k}: {v}")
    return "\n".join(lines)


def write(summary: dict[str, Any], out_dir: Path, compare: Sequence[Block] = ()) -> dict[str, Path]:
    """summary.json, .csv, .md, .html and plots/<model>.soak.png into out_dir."""
    from tuner.report.soakplot import soak_png  # noqa: PLC0415 (matplotlib: only when writing)

    state = PlanState(out_dir)
    plots: dict[str, bytes] = {}
    for m in summary["models"]:
        soak = state.soak(m["key"]) if m["status"] == DONE and m.get("soak") else None
        if soak and soak.get("samples"):
            spans = (soak.get("figures") or {}).get("collapse_spans_s") or []
            tag = soak.get("tag", "")
            title = m["model"] if tag in ("", m["model"]) else f"{m['model']}: {tag}"
            plots[m["key"]] = soak_png(soak["samples"], title, [tuple(s) for s in spans])
    paths = {name: out_dir / name for name in ("summary.json", "summary.csv", "summary.md", "summary.html")}
    write_json(paths["summary.json"], summary)
    doc = blocks(summary, plots, compare)
    _write_text(paths["summary.csv"], to_csv(summary))
    _write_text(paths["summary.md"], render_markdown(doc))
    _write_text(paths["summary.html"], render_html(doc, f"Qualification {summary['plan']['name']}"))
    for key, png in plots.items():
        target = out_dir / "plots" / f"{key}.soak.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
        paths[target.name] = target
    return paths


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
