"""`--compare PLAN|DIR`: this qualification against an earlier one (its summary.json), of the same machine
or another: per model and criterion what changed (numbers and verdicts), per model the recommended config's
speed and the soak's figures, and what differs in the fingerprint (driver, server version, GPUs...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.qualify.summary import FORMAT
from tuner.report import REPORTS, safe_name
from tuner.report.render import Block, escape_md

_FIGURES = (
    ("best decode tok/s", ("best", "decode_tok_s")),
    ("soak tok/s", ("soak", "soak_decode_tok_s")),
    ("drift %/h", ("soak", "soak_drift_pct_per_h")),
    ("throttle s", ("soak", "throttle_s")),
    ("J/token", ("soak", "soak_j_per_token")),
    ("max °C", ("soak", "max_temperature_c")),
)


def find_summary(target: str) -> Path:
    """The summary.json that `target` names: a plan file (reports/<its name>/), a report folder, or the file."""
    path = Path(target).expanduser()
    if path.is_file() and path.suffix == ".toml":
        from tuner.qualify.plan import load_plan  # noqa: PLC0415

        try:
            name = load_plan(path).name
        except ConfigError:
            name = safe_name(path.stem)
        path = REPORTS / name / "summary.json"
    elif path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise ConfigError(
            f"--compare '{target}': no summary.json at '{path}'; pass an earlier plan, its report folder or its "
            "summary.json."
        )
    return path


def load_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--compare: cannot read '{path}' ({exc}); pass another summary.json.") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(
            f"--compare: '{path}' is not a qualification summary; pass a summary.json of 'autotune qualify'."
        )
    return data


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out |= _flat(v, f"{prefix}[{i}]")
    else:
        out[prefix] = d
    return out


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, earlier, now) for every fingerprint field that differs (the host's name and URL included)."""
    a, b = _flat(old), _flat(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _get(model: dict[str, Any], path: tuple[str, str]) -> Any:
    block = model.get(path[0]) or {}
    return block.get(path[1]) if isinstance(block, dict) else None


def _change(old: Any, new: Any) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        pct = f" ({(new - old) / old:+.1%})" if old else ""
        return f"{old:.4g} -> {new:.4g}{pct}"
    return f"{'–' if old is None else old} -> {'–' if new is None else new}"


def compare(earlier: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """What changed: {"fingerprint": [(field, old, new)], "verdicts": [...], "figures": [...], "models": {...}}."""
    old_models = {m["model"]: m for m in earlier.get("models", [])}
    verdicts: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    for m in now.get("models", []):
        o = old_models.get(m["model"])
        if o is None:
            continue
        old_v = {v["criterion"]: v for v in o.get("verdicts", [])}
        for v in m.get("verdicts", []):
            p = old_v.get(v["criterion"])
            if p is None:
                continue
            verdicts.append(
                {
                    "model": m["model"],
                    "criterion": v["criterion"],
                    "verdict_before": p["verdict"],
                    "verdict_now": v["verdict"],
                    "value_before": p["value"],
                    "value_now": v["value"],
                    "changed": p["verdict"] != v["verdict"],
                }
            )
        for label, path in _FIGURES:
            a, b = _get(o, path), _get(m, path)
            if a is not None or b is not None:
                figures.append({"model": m["model"], "figure": label, "before": a, "now": b})
    return {
        "earlier": {k: earlier.get(k) for k in ("fingerprint_id", "machine", "written")}
        | {"plan": (earlier.get("plan") or {}).get("name")},
        "fingerprint": fingerprint_changes(earlier.get("fingerprint") or {}, now.get("fingerprint") or {}),
        "verdicts": verdicts,
        "figures": figures,
        "only_before": sorted(old_models.keys() - {m["model"] for m in now.get("models", [])}),
        "only_now": sorted({m["model"] for m in now.get("models", [])} - old_models.keys()),
    }


def lines(diff: dict[str, Any]) -> list[str]:
    """The comparison for the terminal, one fact a line."""
    e = diff["earlier"]
    out = [
        f"compared with {e.get('plan')} on {e.get('machine')} ({e.get('fingerprint_id')}, {e.get('written')})"
    ]
    out += [f"  fingerprint {k}: {_change(a, b)}" for k, a, b in diff["fingerprint"]] or [
        "  fingerprint: the same"
    ]
    for v in diff["verdicts"]:
        mark = "CHANGED " if v["changed"] else ""
        out.append(
            f"  {v['model']} {v['criterion']}: {mark}{v['verdict_before']} -> {v['verdict_now']}, "
            f"{_change(v['value_before'], v['value_now'])}"
        )
    out += [f"  {f['model']} {f['figure']}: {_change(f['before'], f['now'])}" for f in diff["figures"]]
    out += [f"  {m}: only in the earlier qualification" for m in diff["only_before"]]
    out += [f"  {m}: new in this one" for m in diff["only_now"]]
    return out


def blocks(diff: dict[str, Any]) -> list[Block]:
    e = diff["earlier"]
    out = [
        Block("h2", "Compared with an earlier qualification"),
        Block(
            "p",
            f"{escape_md(e.get('plan'))} on {escape_md(e.get('machine'))} (fingerprint {escape_md(e.get('fingerprint_id'))}), written {escape_md(e.get('written'))}.",
        ),
    ]
    if diff["fingerprint"]:
        rows = [[k, str(a), str(b)] for k, a, b in diff["fingerprint"]]
        out.append(Block("table", items=["fingerprint field", "before", "now"], rows=rows))
    else:
        out.append(Block("p", "The fingerprint is the same."))
    if diff["verdicts"]:
        rows = [
            [
                v["model"],
                v["criterion"],
                v["verdict_before"],
                v["verdict_now"],
                _change(v["value_before"], v["value_now"]),
            ]
            for v in diff["verdicts"]
        ]
        out.append(Block("table", items=["model", "criterion", "before", "now", "value"], rows=rows))
    if diff["figures"]:
        rows = [[f["model"], f["figure"], _change(f["before"], f["now"])] for f in diff["figures"]]
        out.append(Block("table", items=["model", "figure", "before -> now"], rows=rows))
    return out
