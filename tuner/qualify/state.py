"""What a qualification keeps on disk between runs, under reports/<plan>/state/: one outcome per model
(written last, atomically: a model is finished when its outcome says so) and its soak's samples.

A rerun of the same plan skips the models whose outcome is "done" on this machine (same fingerprint id);
a "failed" one is tried again (its finished trials are kept in the study and resume), since what failed
(a server down, a model not pulled yet) may be fixed by morning.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tuner.errors import OutputError
from tuner.qualify.plan import ModelEntry, Plan
from tuner.redact import redact

DONE, FAILED = "done", "failed"


@dataclass(frozen=True)
class ModelOutcome:
    model: str
    key: str  # the model's folder name (plan.ModelEntry.key)
    study: str  # the Optuna study name
    status: str  # DONE | FAILED
    fingerprint_id: str
    error: str = ""
    tags: list[str] = field(default_factory=list)
    budget: int = 0
    trials: int = 0  # finished (COMPLETE) trials
    oom_trials: int = 0
    cut_by_time: bool = False  # the plan's time budget stopped the study before its trial budget
    best: dict[str, Any] = field(default_factory=dict)  # the recommended config and its figures
    soak: dict[str, Any] | None = None  # soak.figures(); None: no soak ran
    soak_error: str = ""
    soak_clock: str = ""  # "telemetry" | "monotonic"
    report: str = ""  # the model's report.html, relative to the plan's folder
    modelfile: str = ""  # the Modelfile (or llama-server script) to install, relative to the plan's folder
    started: str = ""  # ISO 8601, UTC
    finished: str = ""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelOutcome:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def write_json(path: Path, data: Any) -> None:
    """Write atomically (a temporary file renamed over the target): a kill leaves the old file or the new."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(
            f"Cannot write '{path}' ({exc.strerror or exc}); free some space or fix the folder."
        ) from exc


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class PlanState:
    """The state folder of one plan's report folder."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / "state"

    def outcome(self, key: str) -> ModelOutcome | None:
        data = read_json(self.dir / f"{key}.json")
        return ModelOutcome.from_dict(data) if isinstance(data, dict) else None

    def save(self, outcome: ModelOutcome) -> None:
        write_json(self.dir / f"{outcome.key}.json", {**outcome.to_dict(), "error": redact(outcome.error)})

    def save_soak(self, key: str, soak: dict[str, Any]) -> None:
        write_json(self.dir / f"{key}.soak.json", soak)

    def soak(self, key: str) -> dict[str, Any] | None:
        data = read_json(self.dir / f"{key}.soak.json")
        return data if isinstance(data, dict) else None


def study_name(plan: Plan, entry: ModelEntry, fp_id: str) -> str:
    """The model's study: one per plan, machine (its fleet id: the physical machine, tuner.fingerprint) and
    model, so hosts sharing a storage each keep their own, and workers on one machine share theirs."""
    return f"q-{plan.name}-{fp_id}-{entry.key}"
