"""The fleet's view of one plan: every host that ran it against the shared storage, hosts x models x
criteria, from the storage alone (`autotune qualify PLAN --summary --storage URL`).

Each host's studies are named q-<plan>-<fleet id>-<model> (tuner.qualify.state.study_name; the fleet id is
the physical machine, tuner.fingerprint.fleet_id). A study holds the host's fingerprint (its study meta) and
its trials; a finished model also holds its outcome (tuner.qualify.shared: the recommended config and the
soak's figures). The criteria are judged here again from those, as the host's own summary judges them.

Written to the plan's report folder: fleet.json (the whole), fleet.csv (one row per host, model and
criterion), fleet.md and fleet.html; fleet_lines() gives the terminal's table.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

from tuner.errors import OutputError, TunerError
from tuner.fingerprint import describe, detail_lines
from tuner.qualify.criteria import PASS, evaluate_all
from tuner.qualify.plan import Plan
from tuner.qualify.shared import shared_outcome
from tuner.qualify.state import DONE, write_json
from tuner.qualify.summary import redacted
from tuner.redact import mask_url
from tuner.report.render import Block, escape_md, render_html, render_markdown
from tuner.storage import study_names
from tuner.study import load_records

FORMAT = "autotune-qualify-fleet"
_FLEET_ID = re.compile(r"[0-9a-f]{8}")


def host_studies(plan: Plan, names: list[str]) -> dict[str, dict[str, str]]:
    """{fleet id: {model: study name}} for the plan's studies among `names`."""
    prefix = f"q-{plan.name}-"
    out: dict[str, dict[str, str]] = {}
    for entry in plan.models:
        suffix = f"-{entry.key}"
        for name in names:
            if not (name.startswith(prefix) and name.endswith(suffix)):
                continue
            host = name[len(prefix) : len(name) - len(suffix)]
            if _FLEET_ID.fullmatch(host):  # not a longer model key that ends the same way
                out.setdefault(host, {})[entry.model] = name
    return out


def build(plan: Plan, storage: str) -> dict[str, Any]:
    """fleet.json: the plan, its criteria, and per host its fingerprint and per model the verdicts."""
    hosts = []
    for host, studies in sorted(host_studies(plan, study_names(storage)).items()):
        fingerprint: dict[str, Any] = {}
        models = []
        for entry in plan.models:
            name = studies.get(entry.model)
            row: dict[str, Any] = {"model": entry.model, "study": name or "", "status": "not run"}
            if name is not None:
                try:
                    meta, records = load_records(storage, name)
                except TunerError as exc:  # a study another tool made under this name, or half-created
                    row["error"] = str(exc).splitlines()[0]
                    models.append(row)
                    continue
                fingerprint = fingerprint or meta.fingerprint
                outcome = shared_outcome(storage, name)
                soak = outcome.soak if outcome is not None else None
                verdicts = evaluate_all(plan.criteria, entry.model, records, soak)
                done = [r for r in records if r.state == "COMPLETE"]
                row.update(
                    status=DONE if outcome is not None else "running or stopped",
                    trials=len(done),
                    budget=plan.budget_of(entry),
                    best=outcome.best if outcome is not None else {},
                    soak=soak or {},
                    verdicts=[v.to_dict() for v in verdicts],
                    passed=outcome is not None
                    and bool(verdicts)
                    and all(v.verdict == PASS for v in verdicts),
                )
            models.append(row)
        hosts.append(
            {
                "fleet_id": host,
                "machine": describe(fingerprint) if fingerprint else "?",
                "host_name": (fingerprint.get("host") or {}).get("name", ""),
                "details": detail_lines(fingerprint) if fingerprint else [],
                "fingerprint": fingerprint,
                "models": models,
                "passed": sum(1 for m in models if m.get("passed")),
            }
        )
    return redacted(  # every string with the known secrets masked, as the host's own summary
        {
            "format": FORMAT,
            "plan": {"name": plan.name, "models": [e.model for e in plan.models]},
            "criteria": [{"id": c.id, "name": c.name, "text": c.text()} for c in plan.criteria],
            "storage": mask_url(storage),
            "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "hosts": hosts,
        }
    )


def _cell(model: dict[str, Any], criterion: str) -> str:
    v = next((v for v in model.get("verdicts") or [] if v["criterion"] == criterion), None)
    if v is None:
        return model["status"] if model["status"] != DONE else "n/a"
    value = "" if v["value"] is None else f" {v['value']:.3g}"
    return f"{v['verdict'].upper()}{value}"


def _num(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def table(fleet: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows: model x criterion; columns: each host ('PASS 41.2', 'FAIL 12.0', 'NO DATA', 'not run')."""
    hosts = fleet["hosts"]
    head = ["model", "criterion", *[f"{h['fleet_id']} {h['host_name']}".strip() for h in hosts]]
    rows = []
    for i, model in enumerate(fleet["plan"]["models"]):
        for c in fleet["criteria"]:
            rows.append([model, c["id"], *[_cell(h["models"][i], c["id"]) for h in hosts]])
        cells = [h["models"][i] for h in hosts]
        rows.append(
            [model, "trials", *[f"{m['trials']}/{m['budget']}" if "budget" in m else "–" for m in cells]]
        )
        rows.append(
            [model, "recommended tok/s", *[_num((m.get("best") or {}).get("decode_tok_s")) for m in cells]]
        )
        rows.append(
            [model, "soak tok/s", *[_num((m.get("soak") or {}).get("soak_decode_tok_s")) for m in cells]]
        )
    return head, rows


def _criterion(c: dict[str, Any]) -> str:
    return f"{c['name']} ({c['text']})" if c["name"] else c["text"]


def fleet_lines(fleet: dict[str, Any]) -> list[str]:
    """The terminal's view: the hosts, then the table."""
    if not fleet["hosts"]:
        return [f"no host has run plan '{fleet['plan']['name']}' in {fleet['storage']}"]
    lines = [f"plan {fleet['plan']['name']}: {len(fleet['hosts'])} host(s) in {fleet['storage']}"]
    for h in fleet["hosts"]:
        lines.append(
            f"  {h['fleet_id']} {h['host_name'] or '?'}: {h['machine']}; "
            f"{h['passed']} of {len(h['models'])} models passed every criterion"
        )
    lines += [f"  {c['id']}: {_criterion(c)}" for c in fleet["criteria"]]
    head, rows = table(fleet)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    return lines


def to_csv(fleet: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["fleet_id", "host", "machine", "model", "status", "criterion", "verdict", "value", "detail"]
    )
    for h in fleet["hosts"]:
        for m in h["models"]:
            for v in m.get("verdicts") or [{}]:
                value = v.get("value")
                writer.writerow(
                    [
                        h["fleet_id"],
                        h["host_name"],
                        h["machine"],
                        m["model"],
                        m["status"],
                        v.get("criterion", ""),
                        v.get("verdict", ""),
                        "" if value is None else repr(value),
                        v.get("detail", ""),
                    ]
                )
    return buffer.getvalue()


def blocks(fleet: dict[str, Any]) -> list[Block]:
    out = [
        Block("h1", f"Fleet qualification {escape_md(fleet['plan']['name'])}"),
        Block(
            "p",
            f"{len(fleet['hosts'])} host(s) in {escape_md(fleet['storage'])}. Written {fleet['written']}.",
        ),
    ]
    if fleet["criteria"]:
        items = [f"**{c['id']}**: {escape_md(_criterion(c))}" for c in fleet["criteria"]]
        out.append(Block("ul", items=items))
    head, rows = table(fleet)
    out.append(Block("h2", "Hosts x models x criteria"))
    out.append(Block("table", items=head, rows=rows))
    out.append(Block("h2", "Hosts"))
    for h in fleet["hosts"]:
        out.append(Block("h3", f"{h['fleet_id']} {escape_md(h['host_name'])}".strip()))
        out.append(Block("p", escape_md(h["machine"])))
        out.append(Block("ul", items=[escape_md(line) for line in h["details"]] or ["no fingerprint stored"]))
        details = [
            f"{escape_md(m['model'])} {v['criterion']}: {v['verdict']}: {escape_md(v['detail'])}"
            for m in h["models"]
            for v in m.get("verdicts") or []
        ]
        if details:
            out.append(Block("ul", items=details))
    return out


def write(fleet: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """fleet.json, .csv, .md and .html into out_dir."""
    paths = {name: out_dir / name for name in ("fleet.json", "fleet.csv", "fleet.md", "fleet.html")}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths["fleet.json"], fleet)
    doc = blocks(fleet)
    for name, text in (
        ("fleet.csv", to_csv(fleet)),
        ("fleet.md", render_markdown(doc)),
        ("fleet.html", render_html(doc, f"Fleet qualification {fleet['plan']['name']}")),
    ):
        tmp = paths[name].with_name(f".{name}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(paths[name])
        except OSError as exc:
            raise OutputError(
                f"Cannot write '{paths[name]}' ({exc.strerror or exc}); free some space or fix the folder."
            ) from exc
    return paths
