"""The soak at a model's recommended config: load it once, generate without pause, and after each generation
read the probe's telemetry (tuner.probe.telemetry_of: clocks, temperature, power, energy counter, violation
counters, clock event reasons).

Its minutes are measured on the telemetry clock (Telemetry.time_s: monotonic for NVML, the simulated clock
for the simulator, so a 30-minute soak takes seconds in CI), falling back to time.monotonic where the probe
has no telemetry (a CPU engine) or its clock does not move. Three phases: the heat soak (discarded), the soak
proper (the plan's minutes), then the depth soak (prompts filling the context in steps). The analysis of the
series is tuner.qualify.soakstats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.backend.base import Backend, EngineOptions, Generation
from tuner.errors import BackendError
from tuner.measure import make_prompt
from tuner.probe import Probe, Telemetry, telemetry_of
from tuner.qualify import soakstats

STUCK_AFTER = 20  # generations without the telemetry clock moving: measure on time.monotonic instead
RUN_BASE = 900_000
PROGRESS_STEPS = 10  # a progress line at each tenth of the soak
DEPTH_PROBE_WORDS = 256  # the filler prompt that measures the engine's tokens per filler word  # prompt run numbers of the soak (unique prefixes: no prompt cache hit)


@dataclass(frozen=True)
class SoakSample:
    time_s: float  # since the soak's start, on the soak's clock
    phase: str  # "heat" | "soak" | "depth"
    depth_tokens: int
    decode_tok_s: float
    eval_tokens: int
    telemetry: tuple[dict[str, Any], ...] = ()  # one Telemetry (as a dict) per GPU, read after the generation

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "telemetry": list(self.telemetry)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SoakSample:
        return cls(
            float(d["time_s"]),
            str(d["phase"]),
            int(d["depth_tokens"]),
            float(d["decode_tok_s"]),
            int(d["eval_tokens"]),
            tuple(d.get("telemetry") or ()),
        )


@dataclass(frozen=True)
class SoakSettings:
    heat_s: float
    soak_s: float
    depth_steps: int
    num_predict: int
    drift_pct_per_h: float = 5.0
    collapse_fraction: float = 0.7
    hot_c: float = 83.0


@dataclass(frozen=True)
class SoakResult:
    """The soak's samples and what they say (the figures the criteria judge)."""

    clock: str  # "telemetry" | "monotonic"
    tag: str
    options: dict[str, Any]
    samples: list[SoakSample] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clock": self.clock,
            "tag": self.tag,
            "options": self.options,
            "figures": self.figures,
            "samples": [s.to_dict() for s in self.samples],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SoakResult:
        return cls(
            str(d.get("clock", "")),
            str(d.get("tag", "")),
            dict(d.get("options") or {}),
            [SoakSample.from_dict(s) for s in d.get("samples") or []],
            dict(d.get("figures") or {}),
        )


class _Clock:
    """The soak's clock: the first GPU's telemetry time, else (no telemetry, or stuck) time.monotonic."""

    def __init__(self, probe: Probe, monotonic: Callable[[], float]) -> None:
        self.probe = probe
        self.monotonic = monotonic
        self.source = "telemetry" if telemetry_of(probe) else "monotonic"
        self._last: float | None = None
        self._still = 0

    def read(self) -> tuple[float, list[Telemetry]]:
        readings = telemetry_of(self.probe)
        if self.source == "telemetry" and readings:
            now = readings[0].time_s
            self._still = self._still + 1 if now == self._last else 0
            self._last = now
            if self._still < STUCK_AFTER:
                return now, readings
        self.source = "monotonic"
        return self.monotonic(), readings


def run_soak(
    backend: Backend,
    probe: Probe,
    tag: str,
    options: EngineOptions,
    settings: SoakSettings,
    *,
    on_phase: Callable[[str], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> SoakResult:
    """Load `tag` with `options`, run the three phases, unload. A BackendError in the heat soak or the soak
    propagates (the caller records the model's soak as failed); one in the depth soak ends only that phase
    (figures["depth_error"]), the soak's figures kept.

    The depth soak fills the context in `depth_steps` steps up to nearly num_ctx. Filler words are not
    one token each in every tokenizer, so it first measures the engine's tokens per filler word (a prompt of
    DEPTH_PROBE_WORDS, against the soak's own prompt) and sizes each step's prompt from that."""
    backend.unload_all()
    backend.load(tag, options)
    residency = backend.residency(tag)
    num_ctx = options.num_ctx or (residency.context_length if residency else 0) or 4096
    clock = _Clock(probe, monotonic)
    start, _ = clock.read()
    samples: list[SoakSample] = []
    run = RUN_BASE

    def generate(phase: str, words: int) -> Generation:
        nonlocal run
        run += 1
        g = backend.generate(tag, make_prompt(run, words), options, num_predict=settings.num_predict)
        now, readings = clock.read()
        samples.append(
            SoakSample(
                now - start,
                phase,
                g.prompt_tokens if g.prompt_tokens > 0 else words,
                g.decode_tok_s,
                g.eval_tokens,
                tuple(asdict(t) for t in readings),
            )
        )
        return g

    depth_error = ""
    try:
        base_tokens = 0
        for phase, until in (("heat", settings.heat_s), ("soak", settings.heat_s + settings.soak_s)):
            if phase == "heat" and settings.heat_s <= 0:
                continue
            if on_phase is not None:
                on_phase(phase)
            begin = samples[-1].time_s if samples else 0.0
            marks = [begin + (until - begin) * k / PROGRESS_STEPS for k in range(1, PROGRESS_STEPS)]
            while True:
                base_tokens = generate(phase, 0).prompt_tokens
                if samples[-1].time_s >= until:
                    break
                if phase == "soak" and marks and samples[-1].time_s >= marks[0] and on_phase is not None:
                    while marks and samples[-1].time_s >= marks[0]:
                        marks.pop(0)
                    on_phase(progress_line(samples, begin, until))
        if settings.depth_steps > 0:
            if on_phase is not None:
                on_phase("depth")
            try:
                _depth_soak(generate, num_ctx, base_tokens, settings)
            except BackendError as exc:
                depth_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    finally:
        backend.unload_all()
    opts: dict[str, Any] = {"num_gpu": options.num_gpu, "num_ctx": num_ctx}
    opts |= {
        k: v for k, v in (("flash_attn", options.flash_attn), ("kv_cache_type", options.kv_cache_type)) if v
    }
    found = figures(samples, settings)
    if depth_error:
        found["depth_error"] = depth_error
    return SoakResult(clock.source, tag, opts, samples, found)


def progress_line(samples: list[SoakSample], begin_s: float, until_s: float) -> str:
    """'soak 12.0/30 min: decode 158.2 tok/s, GPU0 2520 MHz 62 °C 330 W, throttle 0.0 s so far'."""
    last = samples[-1]
    soak = [s for s in samples if s.phase == "soak"]
    window = [s.decode_tok_s for s in soak[-20:]]
    line = (
        f"soak {(last.time_s - begin_s) / 60:.1f}/{(until_s - begin_s) / 60:.0f} min: decode "
        f"{sorted(window)[len(window) // 2]:.1f} tok/s"
    )
    first = soak[0].telemetry if soak else ()
    throttle = 0.0
    for g in last.telemetry:
        parts = [
            f"{g[k]:.0f} {unit}"
            for k, unit in (("sm_clock_mhz", "MHz"), ("temperature_c", "°C"), ("power_w", "W"))
            if g.get(k) is not None
        ]
        line += f", GPU{g.get('gpu', 0)} " + " ".join(parts)
        before = next((b for b in first if b.get("gpu") == g.get("gpu")), {})
        throttle += sum(
            soakstats.counter_delta(before.get("violation_s") or {}, g.get("violation_s") or {}).values()
        )
    return line + (f", throttle {throttle:.1f} s so far" if last.telemetry else "")


def _depth_soak(
    generate: Callable[[str, int], Generation], num_ctx: int, base_tokens: int, settings: SoakSettings
) -> None:
    """Two generations at each of `depth_steps` depths, the last filling the context but for the answer."""
    probe_words = max(1, min(DEPTH_PROBE_WORDS, num_ctx // 8))
    probe = generate("depth", probe_words)
    per_word = (probe.prompt_tokens - base_tokens) / probe_words if probe.prompt_tokens > base_tokens else 1.0
    room = num_ctx - settings.num_predict - 64 - base_tokens  # what the filler may take at the last step
    for step in range(1, settings.depth_steps + 1):
        words = max(0, int(0.95 * room * step / settings.depth_steps / per_word))
        for _ in range(2):
            generate("depth", words)


def figures(samples: list[SoakSample], settings: SoakSettings) -> dict[str, Any]:
    """What the soak proper (and the depth soak) say; the heat soak is left out."""
    soak = [s for s in samples if s.phase == "soak"]
    out: dict[str, Any] = {"samples": len(soak), "heat_samples": sum(1 for s in samples if s.phase == "heat")}
    if not soak:
        return out
    heat_end = max((s.time_s for s in samples if s.phase == "heat"), default=0.0)
    out["minutes"] = (soak[-1].time_s - heat_end) / 60.0
    rates = [s.decode_tok_s for s in soak]
    out["soak_decode_tok_s"] = sorted(rates)[len(rates) // 2]
    t = soakstats.trend([s.time_s for s in soak], rates, settings.drift_pct_per_h)
    if t is not None:
        out["soak_drift_pct_per_h"] = t.pct_per_h
        out["drift_noise_pct_per_h"] = t.noise_pct_per_h
        out["drift"] = t.drift
    first = _last_heat(samples)
    last = soak[-1]
    gpus = [g for g in last.telemetry if isinstance(g, dict)]
    out["telemetry"] = bool(gpus)
    if gpus:
        readings = [
            (s.time_s, int(g["gpu"]), g.get("sm_clock_mhz"), g.get("temperature_c"))
            for s in soak
            for g in s.telemetry
        ]
        collapses = soakstats.clock_collapses(readings, settings.collapse_fraction, settings.hot_c)
        out["clock_collapses"] = len(collapses)
        out["collapse_spans_s"] = soakstats.spans([s.time_s for s in soak], {c.time_s for c in collapses})
        temps = [r[3] for r in readings if r[3] is not None]
        if temps:
            out["max_temperature_c"] = max(temps)
        throttle: dict[str, float] = {}
        before = {int(g["gpu"]): g for g in first.telemetry} if first else {}
        energy_first = energy_last = 0.0
        energy_known = bool(before)
        for g in gpus:
            b = before.get(int(g["gpu"]))
            if b is None:
                energy_known = False
                continue
            for cause, s in soakstats.counter_delta(
                b.get("violation_s") or {}, g.get("violation_s") or {}
            ).items():
                throttle[cause] = throttle.get(cause, 0.0) + s
            if b.get("energy_j") is None or g.get("energy_j") is None:
                energy_known = False
            else:
                energy_first += float(b["energy_j"])
                energy_last += float(g["energy_j"])
        out["throttle_by_cause_s"] = throttle
        out["throttle_s"] = sum(throttle.values())
        out["thermal_throttle_s"] = throttle.get("thermal", 0.0)
        out["power_capped_s"] = throttle.get("power", 0.0)
        reasons: dict[str, int] = {}
        for sample in soak:
            for g in sample.telemetry:
                for reason in g.get("throttle") or ():
                    reasons[reason] = reasons.get(reason, 0) + 1
        out["throttle_reasons"] = reasons
        tokens = sum(s.eval_tokens for s in soak)
        if energy_known:
            out["soak_energy_j"] = energy_last - energy_first
            out["soak_j_per_token"] = soakstats.energy_per_token(energy_first, energy_last, tokens)
    depth = [(s.depth_tokens, s.decode_tok_s) for s in samples if s.phase == "depth"]
    if depth:
        by: dict[int, list[float]] = {}
        for d, v in depth:
            by.setdefault(d, []).append(v)
        out["depth_decode_tok_s"] = {str(d): max(v) for d, v in sorted(by.items())}
        ratio = soakstats.depth_ratio([(d, max(v)) for d, v in by.items()])
        if ratio is not None:
            out["depth_decode_ratio"] = ratio
    return out


def _last_heat(samples: list[SoakSample]) -> SoakSample | None:
    """The reading the soak's counters start from: the last heat-soak sample (else the first soak one)."""
    heat = [s for s in samples if s.phase == "heat"]
    if heat:
        return heat[-1]
    soak = [s for s in samples if s.phase == "soak"]
    return soak[0] if soak else None
