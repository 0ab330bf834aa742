"""The simulated GPUs' power, temperature and clocks, on a simulated clock. Mutable; no HTTP.

Each card draws its idle power, or under work a demand that depends on the phase (decode is memory-bound
and draws part of the board power; prompt processing is compute-bound and asks for more than the board
allows). The draw is CAPPED at the enforced power limit: above it the SM clock falls until the draw fits
(dynamic power goes with the clock squared here, a middle ground between f and f*V^2), with SwPowerCap.
The temperature follows the draw with a first-order lag: it tends to ambient + power x thermal resistance
with time constant `tau_s`. Above the card's slowdown temperature the SM clock falls THERMAL_SLOPE per degree
(SwThermalSlowdown). The memory clock stays at its maximum under work and drops to its idle clock where
the card has one (GDDR cards; HBM parts hold theirs).

Time is simulated: `time_s` advances by the work the scheduler bills (loads, prompts, generations, unloads)
and by idle time (the wall-clock gap between two pieces of work that no billed work covers, or POST
/sim/power {"advance_s": N}), so a 30-minute soak runs in seconds. Energy (J) and the violation counters
(seconds held down by "power" and by "thermal", like NVML's nvmlDeviceGetViolationStatus) integrate over it.

Faults for testing what autotune does with them:
    throttle   from simulated second `at_s`, for `duration_s` (None: for good), the SM clock collapses to
               `clock_fraction` of its maximum while the temperature stays normal (a power brake or a
               hardware thermal slowdown: HwPowerBrakeSlowdown / HwThermalSlowdown)
    drift      decode speed falls by `drift_pct_per_hour` percent per simulated hour (clocks unchanged)

Card figures: board power (TDP) from NVIDIA's spec pages (RTX 4090 450 W, RTX 3090 350 W, A100 SXM 400 W,
H100 SXM 700 W, L4 72 W, ...), idle draw and clocks as nvidia-smi typically shows them for the family, thermal
resistance chosen so the card settles near 70-75 C at its board power in 30 C air. The decode share of board
power is an estimate (llama.cpp token generation on a 4090 is commonly reported at 250-350 W); an L4 sits at
its 72 W cap under any load. The H100 SXM's figures are checked against a real NVML capture (see CARDS);
the other cards' are public spec values and estimates, not measured here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.hardware import GpuSpec

AMBIENT_C = 30.0  # air at the card's intake
THERMAL_SLOPE = 0.04  # SM clock fraction lost per degree above the slowdown temperature
MIN_CLOCK_FRACTION = 0.25  # no throttle takes the SM clock below this
STEP_S = 1.0  # integration step under work
ACTIVITY_WINDOW_S = 1.0  # telemetry shows the last work for this long after it (NVML's sample period)
PREFILL_DEMAND = 1.15  # prompt processing asks for this share of board power (compute-bound): capped
LOAD_SHARE = 0.15  # a model load (PCIe copies) draws this share of the way from idle to board power
THROTTLE_KINDS = {"power": "HwPowerBrakeSlowdown", "thermal": "HwThermalSlowdown"}
PHASES = ("decode", "prefill", "load")


@dataclass(frozen=True)
class CardPower:
    tdp_w: float  # board power limit (the default enforced limit)
    idle_w: float
    decode_share: float  # a decode at full clock draws this share of tdp_w
    sm_max_mhz: float
    sm_idle_mhz: float
    mem_max_mhz: float
    mem_idle_mhz: float  # == mem_max_mhz for HBM parts, which hold their memory clock
    c_per_w: float  # thermal resistance to ambient
    tau_s: float = 60.0  # thermal time constant
    slowdown_c: float = 87.0
    offset_c: float = 0.0  # the card's intake above room ambient (a server chassis pre-heats its air)
    prefill_share: float = PREFILL_DEMAND  # prompt processing at full clock asks this share of tdp_w


def _consumer(tdp: float, idle: float, sm: float, mem: float, share: float = 0.72) -> CardPower:
    return CardPower(tdp, idle, share, sm, 210.0, mem, 405.0, 45.0 / tdp, 60.0, 87.0)


def _datacenter(tdp: float, idle: float, sm: float, mem: float, share: float = 0.6) -> CardPower:
    return CardPower(tdp, idle, share, sm, 345.0, mem, mem, 40.0 / tdp, 45.0, 87.0)


# By the card's NVML name (tuner.hardware.KNOWN_CARDS). Board power and boost clocks: NVIDIA spec pages;
# memory clocks as NVML reports them (GDDR6X 21 Gbps -> 10501 MHz, HBM3 on H100 SXM -> 2619 MHz).
CARDS: dict[str, CardPower] = {
    "NVIDIA GeForce RTX 4090": _consumer(450, 22, 2520, 10501),
    "NVIDIA GeForce RTX 4090 D": _consumer(425, 22, 2520, 10501),
    "NVIDIA GeForce RTX 3090": _consumer(350, 28, 1695, 9751),
    "NVIDIA GeForce RTX 3090 Ti": _consumer(450, 30, 1860, 10501),
    "NVIDIA GeForce RTX 5090": _consumer(575, 30, 2407, 14001),
    "NVIDIA GeForce RTX 5080": _consumer(360, 20, 2617, 15001),
    "NVIDIA GeForce RTX 5070 Ti": _consumer(300, 18, 2452, 14001),
    "NVIDIA GeForce RTX 5060 Ti": _consumer(180, 12, 2572, 14001),
    "NVIDIA GeForce RTX 4080 SUPER": _consumer(320, 16, 2550, 11501),
    "NVIDIA GeForce RTX 4080": _consumer(320, 16, 2505, 11201),
    "NVIDIA GeForce RTX 4070 Ti SUPER": _consumer(285, 15, 2610, 10501),
    "NVIDIA GeForce RTX 4070 Ti": _consumer(285, 15, 2610, 10501),
    "NVIDIA GeForce RTX 4070": _consumer(200, 12, 2475, 10501),
    "NVIDIA GeForce RTX 4060 Ti": _consumer(165, 10, 2535, 9001),
    "NVIDIA GeForce RTX 4060": _consumer(115, 9, 2460, 8501),
    "NVIDIA GeForce RTX 4060 Laptop GPU": _consumer(115, 8, 2370, 8001),
    "NVIDIA GeForce RTX 3080": _consumer(320, 25, 1710, 9501),
    "NVIDIA GeForce RTX 3070": _consumer(220, 18, 1725, 7001),
    "NVIDIA GeForce RTX 3060": _consumer(170, 14, 1777, 7501),
    "NVIDIA GeForce RTX 2080 Ti": _consumer(250, 18, 1545, 7000),
    "NVIDIA GeForce RTX 2080": _consumer(215, 15, 1710, 7000),
    "NVIDIA GeForce GTX 1070 Ti": _consumer(180, 10, 1683, 4004),
    "NVIDIA RTX 6000 Ada Generation": _consumer(300, 25, 2505, 10001, 0.8),
    "NVIDIA RTX A6000": _consumer(300, 25, 1800, 8001, 0.8),
    "NVIDIA RTX A5000": _consumer(230, 20, 1695, 8001, 0.8),
    "Quadro RTX 6000": _consumer(260, 20, 1770, 7001, 0.8),
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": _consumer(600, 30, 2617, 14001),
    "NVIDIA RTX PRO 4000 Blackwell": _consumer(140, 12, 2617, 14001, 0.85),
    "NVIDIA L4": _datacenter(72, 16, 2040, 6251, 1.05),  # memory-bound decode alone reaches the 72 W cap
    "NVIDIA L40S": _datacenter(350, 35, 2520, 9001, 0.7),
    "NVIDIA L40": _datacenter(300, 35, 2490, 9001, 0.7),
    "NVIDIA A40": _datacenter(300, 30, 1740, 7251, 0.7),
    "NVIDIA A10": _datacenter(150, 18, 1695, 6251, 0.85),
    "NVIDIA A30": _datacenter(165, 30, 1440, 1215),
    "NVIDIA A100-SXM4-80GB": _datacenter(400, 55, 1410, 1593),
    "NVIDIA A100 80GB PCIe": _datacenter(300, 45, 1410, 1512),
    "NVIDIA A800-SXM4-80GB": _datacenter(400, 55, 1410, 1593),
    # Checked against a real H100 SXM capture (reports/examples/h100-nvml, NVML at 4 Hz, driver 580):
    # idle 75 W at 40 C and 345/2619 MHz; a memory-bound load 406-412 W at the full 1980 MHz (decode's
    # share: 0.59); a dense compute burn held at the 700 W cap with the SM clock at 1335 MHz median (so at
    # full clock it would ask ~2.1x the board power), power violation time growing with wall time; 41 -> 72 C
    # at 695 W. The best first-order fit of the whole temperature trace: 5 s time constant, 0.046 C/W, 38 C
    # at no load (30 C room + 8 C), 2.5 C RMS (20 s fits at 5.8 C RMS: the die jumps 20 C in 6 s, then the
    # heatsink creeps 10 C more over ~40 s, a second, slower term this model leaves out). Slowdown 89 C as
    # its NVML reports it. tests/sim/test_sim_power.py replays the capture's phases.
    "NVIDIA H100 80GB HBM3": CardPower(
        700, 75, 0.59, 1980, 345, 2619, 2619, 0.046, 5.0, 89.0, offset_c=8.0, prefill_share=2.1
    ),
    "NVIDIA H200": _datacenter(700, 75, 1980, 3201, 0.55),
    "Tesla V100-SXM2-32GB": _datacenter(300, 40, 1530, 877),
    "Tesla V100-PCIE-16GB": _datacenter(250, 35, 1380, 877),
    "Tesla P40": _datacenter(250, 50, 1531, 3615, 0.75),
    "Tesla M40 24GB": _datacenter(250, 60, 1114, 3004, 0.75),
    "NVIDIA GB10": _datacenter(140, 10, 2418, 4266, 0.7),
}


def card_power(gpu: GpuSpec) -> CardPower:
    """The figures of a known card; for a card known only by its size, a board power that grows with its
    bandwidth (75-450 W) and the usual idle share."""
    known = CARDS.get(gpu.name)
    if known is not None:
        return known
    tdp = min(450.0, max(75.0, 50.0 + 0.3 * gpu.bandwidth_gbps))
    if gpu.compute_capability in ((8, 0), (9, 0), (7, 0)):
        return _datacenter(tdp, 0.1 * tdp, 1600, 1600)
    return _consumer(tdp, 0.07 * tdp, 2200, 9001)


@dataclass(frozen=True)
class Throttle:
    """An injected clock collapse: from simulated second `at_s`, for `duration_s` (None: for good)."""

    at_s: float
    duration_s: float | None = None
    kind: str = "power"  # "power" | "thermal": the NVML reason and the violation counter it feeds
    clock_fraction: float = 0.4

    def active(self, t: float) -> bool:
        return t >= self.at_s and (self.duration_s is None or t < self.at_s + self.duration_s)

    @classmethod
    def parse(cls, text: str, now_s: float = 0.0) -> Throttle:
        """'AT_S[:DURATION_S[:KIND]]', e.g. '600:120:thermal'; AT_S may be 'now' or '+SECONDS' (from now)."""
        parts = [p.strip() for p in str(text).split(":")]
        try:
            if not parts[0] or len(parts) > 3:
                raise ValueError(text)
            at = parts[0]
            at_s = now_s if at == "now" else now_s + float(at[1:]) if at.startswith("+") else float(at)
            duration = float(parts[1]) if len(parts) > 1 and parts[1] else None
            kind = parts[2] if len(parts) > 2 else "power"
            if kind not in THROTTLE_KINDS or not math.isfinite(at_s) or at_s < 0:
                raise ValueError(text)
            if duration is not None and not duration > 0:
                raise ValueError(text)
        except ValueError:
            raise ValueError(
                f"Invalid throttle {text!r}: use AT_S[:DURATION_S[:KIND]] in simulated seconds, e.g. '600:120' "
                f"or 'now:60:thermal' (KIND {' or '.join(THROTTLE_KINDS)})"
            ) from None
        return cls(at_s, duration, kind)

    def to_json(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "duration_s": self.duration_s, "kind": self.kind}


def parse_drift(value: object) -> float:
    try:
        pct = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pct = math.nan
    if not (math.isfinite(pct) and 0 <= pct < 100):
        raise ValueError(f"Invalid drift {value!r}: percent of decode speed lost per simulated hour, 0 to 99")
    return pct


@dataclass
class _Gpu:
    card: CardPower
    limit_w: float
    temperature_c: float
    energy_j: float = 0.0
    violation_s: dict[str, float] = field(default_factory=lambda: {"power": 0.0, "thermal": 0.0})
    busy_until_s: float = -math.inf  # simulated time the last work ended
    shown: dict[str, Any] = field(default_factory=dict)  # the last work's clocks, draw and reasons


@dataclass(frozen=True)
class _Operating:
    ratio: float  # SM clock / its maximum
    power_w: float
    reasons: tuple[str, ...]
    held_by: tuple[str, ...]  # violation counters this state feeds


class PowerModel:
    """Power, temperature, clocks and energy of every simulated GPU on the simulated clock."""

    def __init__(
        self,
        gpus: Sequence[GpuSpec],
        ambient_c: float = AMBIENT_C,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ambient_c = float(ambient_c)
        self.wall = wall
        self.realtime = False  # the server sleeps the billed work (SimServer(realtime=True))
        self.time_s = 0.0
        self.throttles: list[Throttle] = []
        self.drift_pct_per_hour = 0.0
        self._gpus = []
        for g in gpus:
            card = card_power(g)
            self._gpus.append(_Gpu(card, card.tdp_w, self._steady(card, card.idle_w)))
        self._last_wall: float | None = None
        self._work_since_wall_s = 0.0

    # --- settings ------------------------------------------------------------------------------------
    def set_power_limit(self, watts: float | None) -> None:
        """The enforced limit on every GPU (None: back to each card's board power)."""
        if watts is not None and not (math.isfinite(watts) and watts > 0):
            raise ValueError(f"Invalid power limit {watts!r}: watts > 0 (null: the card's board power)")
        for g in self._gpus:
            g.limit_w = g.card.tdp_w if watts is None else min(float(watts), g.card.tdp_w)

    def set_ambient(self, celsius: float) -> None:
        if not (math.isfinite(celsius) and -20 <= celsius <= 80):
            raise ValueError(f"Invalid ambient temperature {celsius!r}: degrees C from -20 to 80")
        self.ambient_c = float(celsius)

    # --- the clock -----------------------------------------------------------------------------------
    def sync(self) -> None:
        """Count the wall-clock time since the last call as idle time: all of it where the server bills work
        without sleeping it, what no billed work covered where it sleeps the work (realtime)."""
        now = self.wall()
        if self._last_wall is not None:
            covered = self._work_since_wall_s if self.realtime else 0.0
            balance = (now - self._last_wall) - covered
            if balance > 0:  # longer than the work billed since: the rest was idle
                self.idle(balance)
            self._work_since_wall_s = max(0.0, -balance)  # billed work the wall clock has yet to cover
        self._last_wall = now

    def idle(self, seconds: float) -> None:
        """Every GPU idles for `seconds` of simulated time (exact: the draw is constant)."""
        if not seconds > 0:
            return
        for g in self._gpus:
            steady = self._steady(g.card, g.card.idle_w)
            g.temperature_c = steady + (g.temperature_c - steady) * math.exp(-seconds / g.card.tau_s)
            g.energy_j += g.card.idle_w * seconds
        self.time_s += seconds

    def work(self, seconds: float, gpus: Iterable[int], phase: str = "decode", duty: float = 1.0) -> None:
        """`seconds` of simulated work on `gpus` (the others idle meanwhile), in STEP_S steps. `duty` < 1:
        the GPUs work that share of the time and wait the rest (on the CPU's layers), drawing the average."""
        if phase not in PHASES:
            raise ValueError(f"Invalid phase {phase!r}: one of {', '.join(PHASES)}")
        self.sync()
        if not seconds > 0:
            return
        busy = {i for i in gpus if 0 <= i < len(self._gpus)} if duty > 0 else set()
        duty = min(1.0, duty)
        left = float(seconds)
        while left > 1e-12:
            dt = min(STEP_S, left)
            for i, g in enumerate(self._gpus):
                if i in busy:
                    op = self._operating(g, phase)
                    power = g.card.idle_w + duty * (op.power_w - g.card.idle_w)
                    self._heat(g, power, dt)
                    for cause in op.held_by:
                        g.violation_s[cause] += dt * duty
                    g.busy_until_s = self.time_s + dt
                    g.shown = {
                        "ratio": op.ratio,
                        "power_w": power,
                        "reasons": op.reasons,
                        "mem": g.card.mem_max_mhz,
                    }
                else:
                    self._heat(g, g.card.idle_w, dt)
            self.time_s += dt
            left -= dt
        self._work_since_wall_s += seconds

    def _steady(self, card: CardPower, power_w: float) -> float:
        return self.ambient_c + card.offset_c + power_w * card.c_per_w

    def _heat(self, g: _Gpu, power_w: float, dt: float) -> None:
        steady = self._steady(g.card, power_w)
        g.temperature_c = steady + (g.temperature_c - steady) * math.exp(-dt / g.card.tau_s)
        g.energy_j += power_w * dt

    # --- the operating point -------------------------------------------------------------------------
    def _throttle(self) -> Throttle | None:
        active = [t for t in self.throttles if t.active(self.time_s)]
        return min(active, key=lambda t: t.clock_fraction) if active else None

    def _operating(self, g: _Gpu, phase: str) -> _Operating:
        card = g.card
        share = {"decode": card.decode_share, "prefill": card.prefill_share, "load": 0.0}[phase]
        demand = (
            card.tdp_w * share if phase != "load" else card.idle_w + LOAD_SHARE * (card.tdp_w - card.idle_w)
        )
        dynamic = max(0.0, demand - card.idle_w)
        ratio, reasons, held = 1.0, [], []
        fault = self._throttle()
        if fault is not None:
            ratio = fault.clock_fraction
            reasons.append(THROTTLE_KINDS[fault.kind])
            held.append(fault.kind)
        if g.temperature_c > card.slowdown_c:
            hot = max(MIN_CLOCK_FRACTION, 1.0 - THERMAL_SLOPE * (g.temperature_c - card.slowdown_c))
            if hot < 1.0:
                reasons.append("SwThermalSlowdown")
                held.append("thermal")
                ratio = min(ratio, hot)
        power = card.idle_w + dynamic * ratio**2
        if power > g.limit_w and dynamic > 0:
            ratio = max(MIN_CLOCK_FRACTION, math.sqrt(max(0.0, g.limit_w - card.idle_w) / dynamic))
            power = min(g.limit_w, card.idle_w + dynamic * ratio**2)
            reasons.append("SwPowerCap")
            held.append("power")
        return _Operating(ratio, power, tuple(dict.fromkeys(reasons)), tuple(dict.fromkeys(held)))

    def _nominal(self, g: _Gpu, phase: str) -> float:
        """The SM clock fraction of this phase on a cool card at its board power with no fault: what the
        speed model's calibration (measured cards under their usual cap) already includes."""
        cool = _Gpu(g.card, g.card.tdp_w, self._steady(g.card, g.card.idle_w))
        saved, self.throttles = self.throttles, []
        try:
            return self._operating(cool, phase).ratio
        finally:
            self.throttles = saved

    def slowdown(self, gpus: Iterable[int]) -> tuple[float, float]:
        """(prompt, decode) time factors for work on `gpus` now: the slowest GPU's usual SM clock fraction in
        that phase over its fraction now, the decode one also divided by the drift's speed fraction. 1 on a
        card running as usual; (1, 1 / drift) with no GPU."""
        used = [self._gpus[i] for i in gpus if 0 <= i < len(self._gpus)]
        drift = max(0.05, 1.0 - self.drift_pct_per_hour / 100.0 * self.time_s / 3600.0)
        if not used:
            return 1.0, 1.0 / drift
        prompt = max(self._nominal(g, "prefill") / self._operating(g, "prefill").ratio for g in used)
        decode = max(self._nominal(g, "decode") / self._operating(g, "decode").ratio for g in used)
        return max(1.0, prompt), max(1.0, decode) / drift

    # --- what NVML would say -------------------------------------------------------------------------
    def telemetry(self) -> list[dict[str, Any]]:
        """One entry per GPU, in the shape GET /sim/state serves as "telemetry"."""
        fault = self._throttle()
        out = []
        for g in self._gpus:
            recent = self.time_s - g.busy_until_s < ACTIVITY_WINDOW_S and g.shown
            if recent:
                sm, mem = g.card.sm_max_mhz * g.shown["ratio"], g.shown["mem"]
                power, reasons = g.shown["power_w"], list(g.shown["reasons"])
            else:
                sm, mem, power, reasons = g.card.sm_idle_mhz, g.card.mem_idle_mhz, g.card.idle_w, ["GpuIdle"]
                if fault is not None:
                    reasons.append(THROTTLE_KINDS[fault.kind])
            out.append(
                {
                    "time_s": round(self.time_s, 6),
                    "sm_clock_mhz": round(sm, 1),
                    "mem_clock_mhz": round(mem, 1),
                    "temperature_c": round(g.temperature_c, 2),
                    "power_w": round(power, 2),
                    "power_limit_w": round(g.limit_w, 2),
                    "energy_j": round(g.energy_j, 4),
                    "throttle_reasons": reasons,
                    "violation_s": {k: round(v, 6) for k, v in g.violation_s.items()},
                }
            )
        return out

    def slowdown_reasons(self) -> list[str]:
        """The reasons in effect that slow a GPU beyond its power cap (for /sim/state "throttle_reasons",
        which the interference monitor reads): injected faults and thermal slowdown, never SwPowerCap."""
        names: list[str] = []
        for entry in self.telemetry():
            names += [r for r in entry["throttle_reasons"] if r not in ("GpuIdle", "SwPowerCap")]
        return list(dict.fromkeys(names))

    def to_json(self) -> dict[str, Any]:
        return {
            "time_s": round(self.time_s, 6),
            "ambient_c": self.ambient_c,
            "drift_pct_per_hour": self.drift_pct_per_hour,
            "throttles": [t.to_json() for t in self.throttles],
        }


def gpus_of(layer_gpu: Iterable[int]) -> list[int]:
    """The GPUs that hold layers (what a generation keeps busy)."""
    return sorted({d for d in layer_gpu if d >= 0})
