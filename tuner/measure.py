"""One trial: unload, load with the options, warm up, timed generations, summary. Engine-agnostic.

The order is fixed (the issue's protocol): unload everything; start the VRAM sampler (its first sample
is the pre-load baseline); load and time it; read what the engine says is resident; one warm-up
generation; then measured generations, each with a unique prefix so no prompt cache is reused, until
the relative standard error of decode tok/s is under `target_rse` (at least `min_repeats`, at most
`max_repeats`); unload. A memory failure at load or during generation is a result, not an exception.

Before every generation and after the last one the engine must still hold our model alone, as loaded
(`Backend.check_alone`): otherwise ServerStateChanged, and the measurement is discarded, never recorded.
Whatever ends the trial (an error, Ctrl-C, SIGTERM), the model is unloaded on the way out.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from tuner.backend.base import Backend, Generation, Residency
from tuner.config import MeasureSettings
from tuner.errors import OutOfMemory, TunerError
from tuner.probe import PeakSampler, Probe
from tuner.space import Config

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


def relative_standard_error(values: list[float]) -> float:
    if len(values) < 2:
        return math.inf
    mean = statistics.fmean(values)
    if mean <= 0:
        return math.inf
    return statistics.stdev(values) / math.sqrt(len(values)) / mean


def coefficient_of_variation(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


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

    @property
    def decode_rates(self) -> list[float]:
        return [g.decode_tok_s for g in self.generations if not math.isnan(g.decode_tok_s)]

    @property
    def decode_tok_s(self) -> float | None:
        return _median(self.decode_rates)

    @property
    def decode_cv(self) -> float | None:
        return coefficient_of_variation(self.decode_rates)

    @property
    def prefill_tok_s(self) -> float | None:
        return _median([g.prefill_tok_s for g in self.generations])

    @property
    def ttft_s(self) -> float | None:
        return _median([g.ttft_s for g in self.generations])

    @property
    def peak_vram_bytes(self) -> int | None:
        if self.peak_vram_per_gpu:
            return sum(self.peak_vram_per_gpu)
        return None


def measure(
    backend: Backend,
    probe: Probe,
    config: Config,
    settings: MeasureSettings,
    *,
    run_offset: int = 0,
    sample_interval_s: float = 0.05,
) -> Measurement:
    """Run the trial protocol for `config`. Raises only for infrastructure errors (server gone, a timeout,
    the server changed under the trial...), after unloading the model as well as it can."""
    try:
        return _measure(backend, probe, config, settings, run_offset, sample_interval_s)
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
) -> Measurement:
    options = config.options
    backend.unload_all()
    sampler = PeakSampler(probe, interval_s=sample_interval_s)
    sampler.start()
    residency: Residency | None = None
    generations: list[Generation] = []
    load_s: float | None = None
    failure: OutOfMemory | None = None
    try:
        load_s = backend.load(config.tag, options)
        sampler.mark()
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
        backend.check_alone(config.tag, residency)  # nothing changed during the last generation either
    except OutOfMemory as exc:
        failure = exc
    finally:
        peak = sampler.stop()
    backend.unload_all()
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
    )
