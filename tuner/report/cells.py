"""The report's table cells: context, speed, num_gpu, share on the GPU, seconds, percentages, the tool. Pure."""

from __future__ import annotations

from tuner.decision.trials import (
    failure_kind,
    finite,
    fmt_interval,
    is_complete,
    is_measured,
    is_spilled,
    speed_interval,
)
from tuner.schema import StudyMeta, TrialRecord

DID_NOT_LOAD = "did not load"
FAILURE_WORDS = {
    "predicted": "not loaded: predicted not to fit",
    "host": "did not load: host RAM",
    "gpu": "did not load (out of memory)",
    "other": "did not load",
}


def ctx_text(num_ctx: int) -> str:
    """num_ctx as shown: 0 means the engine's default (a baseline that did not load)."""
    return str(num_ctx) if num_ctx > 0 else "default"


def speed_cell(r: TrialRecord) -> str:
    if not is_complete(r):
        return ""
    if is_measured(r):
        return fmt_interval(speed_interval(r))
    return FAILURE_WORDS[failure_kind(r) or "other"]


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
