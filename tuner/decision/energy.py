"""The pick that weighs energy: the fewest joules per generated token. Pure.

Each trial record carries the GPUs' energy over its measured generations when the probe has an energy
counter (NVML's total energy, or the simulator's power model): TrialRecord.energy_j_per_token. One pick
uses it:

    most_efficient   the least J/token among the feasible configs fully on the GPU at your context or more
                     (at any context when none reaches yours). Configs within noise of the least are a tie,
                     which goes to the faster config.

Within noise: J/token is power over speed, so it carries the decode speed's relative uncertainty (the half
width of its 95% interval), and never less than ENERGY_TOLERANCE (the power counter's own spread between
windows). A study measured without an energy counter has no such pick and reports as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.trials import (
    decode_of,
    effective_ctx,
    finite,
    fmt_percent,
    is_on_gpu,
    speed_interval,
)
from tuner.schema import TrialRecord

ENERGY_TOLERANCE = 0.03  # J/token this close (relative) counts as equal, whatever the speed interval says
ENERGY_PICK_NAMES = ("most_efficient",)
ENERGY_PICK_TITLES = {"most_efficient": "Most energy-efficient"}
ENERGY_TABLE_TITLES = {"most_efficient": "least energy"}
ENERGY_RULES = {
    "most_efficient": (
        "the fewest joules per generated token (the GPUs' energy counters over the measured generations) among "
        "the configs fully on the GPU at your context or more; configs within noise of the least are a tie, "
        "which goes to the faster one"
    )
}


def has_energy(records: Sequence[TrialRecord]) -> bool:
    return any(finite(r.energy_j_per_token) and r.energy_j_per_token > 0 for r in records)


def fmt_energy(r: TrialRecord | None) -> str:
    """'1.23 J/token' or 'n/a'."""
    if r is None or not finite(r.energy_j_per_token):
        return "n/a"
    value = float(r.energy_j_per_token)
    return f"{value:.3g} J/token"


def relative_noise(r: TrialRecord) -> float:
    """The relative uncertainty of a trial's J/token: its speed interval's, at least ENERGY_TOLERANCE."""
    interval = speed_interval(r)
    spread = interval.relative_half_width if interval is not None and interval.known else 0.0
    return max(ENERGY_TOLERANCE, spread if finite(spread) else 0.0)


def energy_picks(
    pool: Sequence[TrialRecord], user_ctx: int
) -> tuple[dict[str, tuple[TrialRecord, str]], dict[str, str]]:
    """{pick name: (trial, reason)} and {pick name: why none} for the energy pick; both empty when no trial
    carries an energy measurement. `pool` is the eligible trials (feasible, within the study's limits)."""
    if not has_energy(pool):
        return {}, {}
    known = [r for r in pool if finite(r.energy_j_per_token) and r.energy_j_per_token > 0]
    on_gpu = [r for r in known if is_on_gpu(r)]
    if not on_gpu:
        return {}, {"most_efficient": "No feasible config with an energy measurement runs fully on the GPU."}
    at_ctx = [r for r in on_gpu if effective_ctx(r) >= user_ctx]
    candidates = at_ctx or on_gpu
    least = min(candidates, key=lambda r: (float(r.energy_j_per_token or 0.0), -decode_of(r), r.number))
    ceiling = float(least.energy_j_per_token or 0.0) * (1 + relative_noise(least))
    tied = [r for r in candidates if float(r.energy_j_per_token or 0.0) * (1 - relative_noise(r)) <= ceiling]
    pick = max(tied, key=lambda r: (decode_of(r), -float(r.energy_j_per_token or 0.0), -r.number))
    where = f"at your context ({user_ctx}) or more" if at_ctx else "(none reaches your context)"
    reason = f"The fewest joules per token fully on the GPU {where}: {fmt_energy(pick)}"
    if len(tied) > 1:
        reason += (
            f"; tied within noise with {len(tied) - 1} other config{'s' if len(tied) > 2 else ''}, so the "
            "faster one"
        )
    if finite(pick.mean_power_w):
        reason += f" (mean draw {float(pick.mean_power_w):.0f} W)"
    fastest = max(known, key=decode_of)
    if fastest.number != pick.number and finite(fastest.energy_j_per_token) and decode_of(fastest) > 0:
        saving = 1 - float(pick.energy_j_per_token or 0.0) / float(fastest.energy_j_per_token or 1.0)
        if saving > 0:
            reason += (
                f"; {fmt_percent(saving)} less energy per token than the fastest measured config, at "
                f"{fmt_percent(decode_of(pick) / decode_of(fastest))} of its speed"
            )
    return {"most_efficient": (pick, reason + ".")}, {}
