"""A study's stored trials read back as TrialRecords: the one reader of what study.py writes. Pure.

study.py stores each finished trial's record in its user attributes ("record"); the study itself (resume,
progress, load_records), our search (search.py, which plans from the stored trials) and the report read it
back through record_of. It sits below both the study and the search, so neither imports the other to read
a trial. It reads Optuna's FrozenTrial; it builds no Optuna object.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial

from tuner.backend.base import AUTO
from tuner.schema import TrialRecord


def record_of(trial: FrozenTrial) -> TrialRecord:
    """The trial's stored record; for a trial that stored none (running, failed), what its params say."""
    attrs = trial.user_attrs.get("record")
    if attrs is not None:
        return TrialRecord.from_attrs({**attrs, "number": trial.number, "state": trial.state.name})
    params = trial.params
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        tag=str(params.get("tag", "")),
        num_gpu=int(params.get("num_gpu", AUTO)),
        num_ctx=2 ** int(params["log2_ctx"]) if "log2_ctx" in params else 0,
        num_parallel=int(params["num_parallel"]) if "num_parallel" in params else None,
        gpus=str(params["gpus"]) if "gpus" in params else None,
        num_batch=int(params["num_batch"]) if "num_batch" in params else None,
        main_gpu=int(params["main_gpu"]) if "main_gpu" in params else None,
        num_thread=int(params["num_thread"]) or None if "num_thread" in params else None,
        error=str(trial.user_attrs.get("error", "")),
        attempts=[str(a) for a in trial.user_attrs.get("attempts") or []],
    )
