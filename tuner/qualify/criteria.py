"""The plan's pass criteria judged per model: pass, fail or no data, with the number behind each verdict.

A trial metric is judged on the model's trials that qualify (finished, feasible under the plan's
constraints, num_ctx at least the criterion's, fully on the GPU if it asks): the best value among them
(the highest for a higher-is-better metric, else the lowest). A soak metric is the soak's own figure
(tuner.qualify.soak.figures). No qualifying trial is a fail (nothing met the conditions); a figure the
machine cannot give (no telemetry, no soak) is "no data", which does not pass either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuner.qualify.metrics import METRICS
from tuner.qualify.plan import Criterion
from tuner.qualify.soakstats import MIN_SAMPLES
from tuner.schema import TrialRecord, fully_on_gpu
from tuner.units import GiB

PASS, FAIL, NO_DATA = "pass", "fail", "no data"


@dataclass(frozen=True)
class Verdict:
    criterion: str  # Criterion.id
    model: str
    verdict: str  # PASS | FAIL | NO_DATA
    value: float | None
    detail: str  # the number behind it in words: which trial, or why there is none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trial_value(metric: str, r: TrialRecord) -> float | None:
    if metric == "peak_vram_gib":
        return r.peak_vram_bytes / GiB if r.peak_vram_bytes is not None else None
    if metric == "num_ctx":
        return float(r.num_ctx or r.context_length_loaded or 0) or None
    value = getattr(r, metric, None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _ctx(r: TrialRecord) -> int:
    return r.num_ctx or r.context_length_loaded or 0


def qualifying(c: Criterion, records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The trials a trial criterion is judged on."""
    return [
        r
        for r in records
        if r.state == "COMPLETE"
        and r.feasible
        and r.decode_tok_s is not None
        and (c.num_ctx_at_least is None or _ctx(r) >= c.num_ctx_at_least)
        and (not c.fully_on_gpu or fully_on_gpu(r.gpu_fraction))
    ]


def _judge(c: Criterion, value: float) -> str:
    if c.min is not None:
        return PASS if value >= c.min else FAIL
    assert c.max is not None
    return PASS if value <= c.max else FAIL


_TELEMETRY = {
    "throttle_s",
    "thermal_throttle_s",
    "power_capped_s",
    "clock_collapses",
    "max_temperature_c",
    "soak_j_per_token",
}


def _why_missing(metric: str, soak: Mapping[str, Any]) -> str:
    if metric in _TELEMETRY and not soak.get("telemetry"):
        return (
            "this machine's probe gives no GPU telemetry (a CPU engine, or NVML cannot see the server's GPUs)"
        )
    if metric == "soak_j_per_token":
        return "the GPU has no energy counter"
    if metric == "soak_drift_pct_per_h":
        n = int(soak.get("samples") or 0)
        return (
            f"{n} soak samples, too few to judge a trend (at least {MIN_SAMPLES})"
            if n < MIN_SAMPLES
            else "the samples span no time"
        )
    if metric == "depth_decode_ratio":
        return soak.get("depth_error") or "the depth soak did not run (depth_steps = 0)"
    return "not measured"


def evaluate(
    c: Criterion, model: str, records: Sequence[TrialRecord], soak: Mapping[str, Any] | None
) -> Verdict:
    metric = METRICS[c.metric]
    if metric.source == "soak":
        if soak is None:
            return Verdict(c.id, model, NO_DATA, None, "no soak was run for this model")
        value = soak.get(c.metric)
        if value is None:
            return Verdict(
                c.id, model, NO_DATA, None, f"the soak has no {c.metric}: {_why_missing(c.metric, soak)}"
            )
        v = float(value)
        return Verdict(
            c.id, model, _judge(c, v), v, f"soak: {v:.4g} {metric.unit} over {soak.get('samples', 0)} samples"
        )
    pool = qualifying(c, records)
    scored = [(x, r) for r in pool if (x := _trial_value(c.metric, r)) is not None]
    if not scored:
        return Verdict(c.id, model, FAIL, None, f"no feasible trial {c.conditions() or 'at all'}")
    value, best = (max if metric.higher_is_better else min)(scored, key=lambda p: p[0])
    gpu = "" if best.gpu_fraction is None else f", {best.gpu_fraction:.0%} on GPU"
    detail = f"trial #{best.number}: {best.tag} num_gpu {best.num_gpu} num_ctx {_ctx(best)}{gpu}: {value:.4g} {metric.unit}"
    return Verdict(c.id, model, _judge(c, value), value, detail)


def evaluate_all(
    criteria: Sequence[Criterion], model: str, records: Sequence[TrialRecord], soak: Mapping[str, Any] | None
) -> list[Verdict]:
    return [evaluate(c, model, records, soak) for c in criteria if c.applies_to(model)]
