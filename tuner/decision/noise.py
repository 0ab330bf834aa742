"""Judging a trial's recorded interference (tuner.interference's block on TrialRecord.interference). Pure.

A trial counts as disturbed when, during it, other processes used at least BUSY_CORES of CPU, another
process held memory on a GPU, or a GPU throttled its clocks for heat or a hardware reason (an instant reason
read, or the thermal violation counter growing over the measured generations). The power cap (SwPowerCap, and
the power violation counter) is common under load on many cards and is reported but not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuner.schema import TrialRecord
from tuner.units import GiB

BUSY_CORES = 0.5
SLOWDOWN_REASONS = ("HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown")


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def causes(block: dict[str, Any] | None) -> list[str]:
    """What disturbed a trial, in a few words each ([] for a quiet one or no record)."""
    if not block:
        return []
    out = []
    cpu = _number(block.get("other_cpu_during"))
    if cpu >= BUSY_CORES:
        top = block.get("top_cpu") or []
        names = ", ".join(f"{row[0]} {_number(row[2]):.1f}" for row in top[:2] if len(row) >= 3)
        out.append(f"other processes used {cpu:.1f} CPU cores" + (f" ({names})" if names else ""))
    gpu = block.get("gpu_processes_during") or []
    if gpu:
        held = sum(_number(row[3]) for row in gpu if len(row) >= 4)
        names = ", ".join(sorted({str(row[2]) for row in gpu if len(row) >= 3}))
        size = f", {held / GiB:.1f} GiB" if held else ""
        out.append(f"{len(gpu)} other process{'es' if len(gpu) > 1 else ''} on the GPU ({names}{size})")
    slow = [t for t in block.get("throttle_during") or [] if t in SLOWDOWN_REASONS]
    if slow:
        out.append("GPU clocks throttled: " + ", ".join(slow))
    held = _thermal_s(block)
    if held > 0:
        out.append(f"GPU clocks held down for heat {held:.1f} s during the measured generations")
    return out


def _thermal_s(block: dict[str, Any]) -> float:
    """Thermal violation seconds over the measured generations (NVML's counter; 0 where not read)."""
    counters = block.get("throttle_s_during")
    return _number(counters.get("thermal")) if isinstance(counters, dict) else 0.0


def disturbed(record: TrialRecord) -> bool:
    return bool(causes(record.interference))


def summary(records: Sequence[TrialRecord]) -> str:
    """One sentence over the measured trials: how many were noisy, how many were disturbed, and by what."""
    measured = [r for r in records if r.interference or r.decode_samples]
    if not measured:
        return ""
    noisy = sum(1 for r in measured if r.noisy)
    blocks = [r.interference or {} for r in measured]
    busy = sum(1 for b in blocks if _number(b.get("other_cpu_during")) >= BUSY_CORES)
    shared = sum(1 for b in blocks if b.get("gpu_processes_during"))
    throttled = sum(
        1
        for b in blocks
        if any(t in SLOWDOWN_REASONS for t in b.get("throttle_during") or []) or _thermal_s(b) > 0
    )
    peak = max((_number(b.get("other_cpu_during")) for b in blocks), default=0.0)
    simulated = any(b.get("source") == "simulator" for b in blocks)
    parts = [
        f"{noisy} of {len(measured)} measured trials were noisy (relative standard error at or above the "
        "target after every repeat)",
        f"other processes used {BUSY_CORES} CPU cores or more during {busy} (at most {peak:.1f} cores"
        + (", the simulator's injected neighbour)" if simulated else ")"),
        f"another process held GPU memory during {shared}",
        f"the GPU throttled its clocks during {throttled}",
    ]
    return "; ".join(parts) + "."
