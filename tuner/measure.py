"""One trial: unload, load with the options, warm up, timed generations, summary. Engine-agnostic.

The order is fixed (the issue's protocol): unload everything; start the VRAM sampler (its first sample
is the pre-load baseline); load and time it; read what the engine says is resident; one warm-up
generation; then measured generations, each with a unique prefix so no prompt cache is reused, until
the relative standard error of decode tok/s is under `target_rse` (at least `min_repeats`, at most
`max_repeats`); unload. A memory failure at load or during generation is a result, not an exception.

Before every generation and after the last one the engine must still hold our model alone, as loaded
(`Backend.check_alone`): otherwise ServerStateChanged, and the measurement is discarded, never recorded.
Whatever ends the trial (an error, Ctrl-C, SIGTERM), the model is unloaded on the way out.

Decode tok/s is the mean of the repeats, with a 95% t-interval (tuner.stats); a trial that stops at
`max_repeats` without reaching `target_rse` is marked noisy. An InterferenceMonitor, when given, records
what else used the machine before and during the trial. Time to first token is the streamed wall clock, but
never less than what the engine itself reports for the prompt and the first token: a server that reports
its durations without taking them (the simulator) gets a TTFT consistent with its prefill and decode speed.

Energy is read like the VRAM peak, from the probe: its telemetry (tuner.probe.telemetry_of) just before the
first measured generation and just after the last; the energy counters' deltas summed over the GPUs, over
the tokens generated in between, give J/token. A probe without an energy counter gives none. The same two
readings' violation counters give the seconds the clocks were held down, by cause, over that window: they go
into the interference block ("throttle_s_during"), since a throttle between two instant readings is missed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from tuner.backend.base import Backend, Generation, Residency
from tuner.config import MeasureSettings
from tuner.errors import OutOfMemory, TunerError
from tuner.interference import InterferenceMonitor
from tuner.probe import PeakSampler, Probe, Telemetry, telemetry_of
from tuner.space import Config
from tuner.stats import Interval, coefficient_of_variation, relative_standard_error, t_interval

__all__ = [
    "Energy",
    "Measurement",
    "coefficient_of_variation",
    "energy_between",
    "throttle_between",
    "engine_ttft_s",
    "make_prompt",
    "measure",
    "relative_standard_error",
]

PROMPT = "Write a detailed story about a lighthouse keeper who finds a message in a bottle."
# Short common words, close to one token each in the usual tokenizers: used to fill a context depth.
_FILLER_WORDS = (
    " the sea was calm and the light turned slowly over the dark water while the keeper wrote"
    " in his book about ships that passed far from the rocks on the long cold night"
).split()


def make_prompt(run: int, depth_tokens: int = 0) -> str:
    """A prompt with a unique prefix (defeats prompt caching) and about `depth_tokens` of filler."""
    prefix = f"[run {run}] "
    if depth_tokens <= 0:
        return prefix + PROMPT
    words = [_FILLER_WORDS[i % len(_FILLER_WORDS)] for i in range(depth_tokens)]
    return prefix + " ".join(words) + "\n\n" + PROMPT


def engine_ttft_s(g: Generation) -> float:
    """Time to first token as the engine reports it: its prompt time plus one token's decode time."""
    per_token = g.eval_s / g.eval_tokens if g.eval_tokens > 0 and g.eval_s > 0 else 0.0
    return max(0.0, g.prompt_s) + per_token


def _median(values: list[float]) -> float | None:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else None


@dataclass(frozen=True)
class Measurement:
    config: Config
    loaded: bool
    oom: bool = False
    error: str = ""
    load_s: float | None = None
    residency: Residency | None = None
    generations: list[Generation] = field(default_factory=list)
    peak_vram_per_gpu: list[int] = field(default_factory=list)
    vram_source: str = ""
    target_rse: float = 0.02
    interference: dict[str, Any] = field(default_factory=dict)
    energy: Energy | None = None  # over the measured generations; None: the probe has no energy counter

    @property
    def decode_rates(self) -> list[float]:
        return [g.decode_tok_s for g in self.generations if not math.isnan(g.decode_tok_s)]

    @property
    def decode_interval(self) -> Interval | None:
        return t_interval(self.decode_rates)

    @property
    def decode_tok_s(self) -> float | None:
        """The mean of the repeats (the centre of decode_interval)."""
        rates = self.decode_rates
        return statistics.fmean(rates) if rates else None

    @property
    def decode_rse(self) -> float | None:
        rse = relative_standard_error(self.decode_rates)
        return rse if math.isfinite(rse) else None

    @property
    def noisy(self) -> bool:
        """The repeats stopped without reaching the RSE target (at max_repeats, or cut short)."""
        rse = self.decode_rse
        return bool(self.decode_rates) and (rse is None or rse >= self.target_rse)

    @property
    def decode_cv(self) -> float | None:
        return coefficient_of_variation(self.decode_rates)

    @property
    def prefill_tok_s(self) -> float | None:
        return _median([g.prefill_tok_s for g in self.generations])

    @property
    def ttft_s(self) -> float | None:
        return _median([max(g.ttft_s, engine_ttft_s(g)) for g in self.generations])

    @property
    def peak_vram_bytes(self) -> int | None:
        if self.peak_vram_per_gpu:
            return sum(self.peak_vram_per_gpu)
        return None


@dataclass(frozen=True)
class Energy:
    """What the GPUs drew over the measured generations (the counters' deltas, summed over GPUs)."""

    energy_j: float
    window_s: float  # on the probe's clock (the simulator's: simulated seconds)
    tokens: int  # generated in the window

    @property
    def energy_j_per_token(self) -> float | None:
        return self.energy_j / self.tokens if self.tokens > 0 else None

    @property
    def mean_power_w(self) -> float | None:
        return self.energy_j / self.window_s if self.window_s > 0 else None


def energy_between(before: list[Telemetry], after: list[Telemetry], tokens: int) -> Energy | None:
    """The energy of a window from two telemetry readings: None unless every GPU reports its energy counter
    both times (a counter that went backwards, e.g. a driver reload, voids the window)."""
    first = {t.gpu: t for t in before}
    last = {t.gpu: t for t in after}
    if not first or set(first) != set(last):
        return None
    total = 0.0
    for gpu, a in first.items():
        b = last[gpu]
        if a.energy_j is None or b.energy_j is None or b.energy_j < a.energy_j:
            return None
        total += b.energy_j - a.energy_j
    window = max(b.time_s for b in last.values()) - min(a.time_s for a in first.values())
    return Energy(total, max(0.0, window), tokens)


def throttle_between(before: list[Telemetry], after: list[Telemetry]) -> dict[str, float]:
    """Seconds the clocks were held down in a window, by cause (the violation counters' deltas; the most
    of any GPU): {} where the probe has no such counters."""
    first = {t.gpu: t.violation_s for t in before}
    out: dict[str, float] = {}
    for t in after:
        for cause, seconds in t.violation_s.items():
            start = first.get(t.gpu, {}).get(cause)
            if start is not None and seconds >= start:
                out[cause] = round(max(out.get(cause, 0.0), seconds - start), 6)
    return out


def measure(
    backend: Backend,
    probe: Probe,
    config: Config,
    settings: MeasureSettings,
    *,
    run_offset: int = 0,
    sample_interval_s: float = 0.05,
    monitor: InterferenceMonitor | None = None,
) -> Measurement:
    """Run the trial protocol for `config`. Raises only for infrastructure errors (server gone, a timeout,
    the server changed under the trial...), after unloading the model as well as it can."""
    try:
        return _measure(backend, probe, config, settings, run_offset, sample_interval_s, monitor)
    except BaseException:
        _unload_quietly(backend)
        raise


def _unload_quietly(backend: Backend) -> None:
    """Unload on the way out of a trial that failed; a server that cannot be reached keeps nothing loaded
    that we could unload, so its error is not the one to report."""
    try:
        backend.unload_all()
    except (TunerError, OSError):
        pass


def _measure(
    backend: Backend,
    probe: Probe,
    config: Config,
    settings: MeasureSettings,
    run_offset: int,
    sample_interval_s: float,
    monitor: InterferenceMonitor | None,
) -> Measurement:
    options = config.options
    backend.unload_all()
    if monitor is not None:
        monitor.start()
    sampler = PeakSampler(probe, interval_s=sample_interval_s)
    sampler.start()
    residency: Residency | None = None
    generations: list[Generation] = []
    load_s: float | None = None
    failure: OutOfMemory | None = None
    energy: Energy | None = None
    throttle_s: dict[str, float] = {}
    try:
        load_s = backend.load(config.tag, options)
        sampler.mark()
        if monitor is not None:
            monitor.mark()
        residency = backend.residency(config.tag)
        num_ctx = config.num_ctx or (residency.context_length if residency else 0) or 0
        depth_tokens = max(0, int(settings.depth * num_ctx) - settings.num_predict - 64)
        run = run_offset
        for _ in range(settings.warmup):
            run += 1
            backend.check_alone(config.tag, residency)
            backend.generate(
                config.tag, make_prompt(run, depth_tokens), options, num_predict=settings.num_predict
            )
            sampler.mark()
        before = telemetry_of(probe)  # the energy counters, like the VRAM peak, around the measured window
        while len(generations) < settings.max_repeats:
            run += 1
            backend.check_alone(config.tag, residency)
            generations.append(
                backend.generate(
                    config.tag, make_prompt(run, depth_tokens), options, num_predict=settings.num_predict
                )
            )
            sampler.mark()
            rates = [g.decode_tok_s for g in generations]
            if (
                len(generations) >= settings.min_repeats
                and relative_standard_error(rates) < settings.target_rse
            ):
                break
        after = telemetry_of(probe)
        energy = energy_between(before, after, sum(g.eval_tokens for g in generations))
        throttle_s = throttle_between(before, after)
        backend.check_alone(config.tag, residency)  # nothing changed during the last generation either
    except OutOfMemory as exc:
        failure = exc
    finally:
        peak = sampler.stop()
        interference = monitor.stop() if monitor is not None else {}
        if interference:  # what the instant throttle readings can miss: the counters over the window
            interference["throttle_s_during"] = throttle_s
    backend.unload_all()
    common: dict[str, Any] = {"target_rse": settings.target_rse, "interference": interference}
    if failure is not None:
        return Measurement(
            config,
            loaded=load_s is not None,
            oom=True,
            error=failure.server_message + (f"\n{failure.log_tail}" if failure.log_tail else ""),
            load_s=load_s,
            residency=residency,
            generations=generations,
            peak_vram_per_gpu=peak.peak_bytes,
            vram_source=probe.source,
            **common,
        )
    per_gpu = peak.peak_bytes
    source = probe.source
    if source == "none":  # NVML cannot see this server's GPUs: use what the engine reports
        per_gpu = [residency.size_vram_bytes] if residency else []
        source = "size_vram"
    return Measurement(
        config,
        loaded=True,
        load_s=load_s,
        residency=residency,
        generations=generations,
        peak_vram_per_gpu=per_gpu,
        vram_source=source,
        energy=energy,
        **common,
    )
