"""Before a trial loads anything: what the estimator predicts for it, and how likely it is to fit.

The study keeps one FitCheck. It predicts every config's VRAM per GPU (tuner.estimate). Weights and KV
cache follow exactly from the file; the compute buffers and the CUDA context are the estimator's guess, so
what they really take is a belief (tuner.margin.MarginBelief: a factor on the compute buffers and an offset
on the context, with their uncertainty) learned from the study's own trials: every measured load pins it,
every load that failed for lack of GPU memory bounds it from below, and a load that fit where the belief
doubted it moves it down as surely as a failure moves it up. P(fit) of a config is the belief's weight on
the worlds where every GPU it uses fits. A config the belief gives under SKIP_BELOW to fit is not loaded: the
study records it as infeasible ("predicted to exceed memory") with its predicted shortfall as its
constraint value. The search (tuner.search) loads what is SAFE, and tests the edge above it on purpose.

A load that fails for lack of *host* memory says nothing about VRAM: it bounds the host memory the config
needs (host_need), which falls as more layers go to the GPU and rises with the context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tuner.backend.base import AUTO, Backend, ModelInfo, ServerInfo
from tuner.errors import memory_failure_kind
from tuner.estimate import ModelSpec, Prediction, Request, SpecError, max_num_gpu, predict
from tuner.estimate.llamacpp import CUDA_CONTEXT_BYTES
from tuner.estimate.versions import Version, parse_version
from tuner.margin import GpuGuess, MarginBelief
from tuner.probe import Probe
from tuner.schema import TrialRecord
from tuner.serverenv import FORCED_ONE_SLOT
from tuner.space import Config, parse_gpus_choice
from tuner.units import GiB

SKIP_BELOW = 0.05  # not loaded at all: the belief gives it less than this to fit
SAFE = 0.95  # what the search loads without a second thought
BOUND_MARGIN = 0.5  # the num_gpu range ends where even half the predicted compute and context cannot fit


def spec_of(info: ModelInfo) -> ModelSpec | None:
    """The estimator's view of a model variant, or None when the engine gave no tensor list."""
    try:
        return ModelSpec.from_show({"model_info": info.model_info, "tensors": info.tensors}, name=info.name)
    except (SpecError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Verdict:
    prediction: Prediction
    margin: float  # the factor on compute + context at the belief's 95th percentile
    over: float  # the largest (need - free) / free over GPUs at the belief's mean; > 0 = expected not to fit
    p_fit: float = 1.0

    @property
    def skip(self) -> bool:
        return self.p_fit < SKIP_BELOW


class FitCheck:
    """Predictions for one study: the variants' specs, the GPUs' free memory, the engine's rule."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec | None],
        free: Sequence[int],
        *,
        engine: str,
        version: str,
        default_ctx: int = 4096,
        flash_attn_ok: bool = True,
    ) -> None:
        self.specs = dict(specs)
        self.free = list(free)
        self.engine = engine
        try:
            parse_version(version)
            self.version = Version(version)
        except ValueError:  # llama-server builds have no Ollama version: the rule does not need one
            self.version = Version("0.30.0")
        self.default_ctx = default_ctx
        self.flash_attn_ok = (
            flash_attn_ok  # every GPU supports flash attention (Ollama turns it off otherwise)
        )
        self._cache: dict[tuple[object, ...], Prediction | None] = {}
        self._belief = MarginBelief()
        self._belief_key: tuple[tuple[int, bool, bool], ...] = ()
        self._belief_quick: tuple[int, int] = (0, -1)

    @property
    def rule(self) -> str:
        """Which engine rule the predictions follow, e.g. "Ollama 0.12.10 (Era A): memory.go ..."."""
        for tag, spec in self.specs.items():
            if spec is not None and self.free:
                p = self.predict(Config(tag, AUTO, self.default_ctx))
                return p.rule if p is not None else ""
        return ""

    @property
    def active(self) -> bool:
        """Predictions need the GPUs' free memory and at least one variant's tensors."""
        return bool(self.free) and any(s is not None for s in self.specs.values())

    def predict(self, config: Config) -> Prediction | None:
        key = (
            config.tag,
            config.num_gpu,
            config.num_ctx,
            *config.server_key,
            config.num_batch,
            config.main_gpu,
        )
        if key not in self._cache:
            spec = self.specs.get(config.tag)
            if spec is None or not self.free:
                self._cache[key] = None
            else:
                self._cache[key] = predict(
                    spec, self.free, self._request(config), engine=self.engine, version=self.version
                )
        return self._cache[key]

    def _request(self, config: Config) -> Request:
        fa = None if config.flash_attn is None else config.flash_attn == "on"
        if fa is None and not self.flash_attn_ok:
            fa = False
        visible, spread = parse_gpus_choice(config.gpus) if config.gpus else (None, False)
        if config.main_gpu is not None and self.version.era == "C":  # --split-mode none: that GPU alone
            seen = visible if visible is not None else tuple(range(len(self.free)))
            visible = (seen[config.main_gpu],) if config.main_gpu < len(seen) else ()
        spec = self.specs.get(config.tag)
        one_slot = spec is not None and spec.arch in FORCED_ONE_SLOT  # Ollama gives these one slot
        return Request(
            num_ctx=config.num_ctx or self.default_ctx,
            num_gpu=config.num_gpu,
            num_parallel=1 if one_slot else config.num_parallel or 1,
            num_batch=config.num_batch,
            kv_type=config.kv_cache_type or "f16",
            flash_attn=fa,
            sched_spread=spread,
            visible=visible,
        )

    # -- the learned belief -------------------------------------------------------------------------
    def guesses(self, p: Prediction) -> list[GpuGuess]:
        """Per GPU given: the exact part, the estimator's compute buffers and context, the free memory."""
        return guesses_of(list(p.gpu_bytes), list(p.fixed_bytes), _compute_per_gpu(p), self.free)

    def belief(self, records: Sequence[TrialRecord]) -> MarginBelief:
        """The belief after the study's trials (cached while nothing new has been learned)."""
        quick = (id(records), len(records))
        if quick == self._belief_quick:
            return self._belief
        used = [r for r in records if _informs_vram(r)]
        key = tuple((r.number, r.decode_tok_s is not None, r.oom) for r in used)
        if key != self._belief_key:
            belief = MarginBelief()
            for r in sorted(used, key=lambda r: r.number):
                guesses = guesses_of(
                    r.predicted_vram_per_gpu,
                    r.predicted_fixed_per_gpu,
                    r.predicted_compute_per_gpu,
                    self.free,
                )
                if r.decode_tok_s is not None:
                    belief.observe_load(guesses, r.peak_vram_per_gpu)
                else:
                    belief.observe_failure(guesses)
            self._belief, self._belief_key = belief, key
        self._belief_quick = quick
        return self._belief

    def p_fit(
        self, config: Config, records: Sequence[TrialRecord], vram_limit_bytes: int | None = None
    ) -> float | None:
        """The belief's probability that `config` loads (and stays under the VRAM limit); None: no prediction."""
        p = self.predict(config)
        if p is None:
            return None
        return self.belief(records).p_fit(self.guesses(p), vram_limit_bytes)

    def verdict(self, config: Config, records: Sequence[TrialRecord]) -> Verdict | None:
        p = self.predict(config)
        if p is None:
            return None
        belief = self.belief(records)
        guesses = self.guesses(p)
        c, d = belief.mean()
        need = [
            g.fixed + c * g.compute + g.context + d if g.fixed + g.compute + g.context else 0 for g in guesses
        ]
        over = max(((n - g.free) / g.free for n, g in zip(need, guesses) if n and g.free > 0), default=-1.0)
        return Verdict(p, belief.margin(guesses), over, belief.p_fit(guesses))

    def host_need(self, config: Config) -> int | None:
        """Host memory the engine checks for `config` (Ollama's own estimate of the CPU part where it checks
        that, else what the runner allocates on the CPU); None without a prediction."""
        p = self.predict(config)
        spec = self.specs.get(config.tag)
        if p is None or spec is None:
            return None
        if p.ollama is not None and not self.version.ollama_engine(spec.arch):
            return max(0, p.ollama.total_bytes - p.ollama.vram_bytes)
        return p.allocation.cpu.total

    # -- the num_gpu range ------------------------------------------------------------------------
    def num_gpu_bound(self, min_ctx: int, max_layers: int) -> int:
        """The most layers any variant could hold at the smallest context, even if the estimate is 15% high
        (the upper end of the num_gpu range); max_layers when nothing can be predicted."""
        bound = -1
        for tag, spec in self.specs.items():
            if spec is None or not self.free:
                return max_layers
            req = self._request(Config(tag, AUTO, min_ctx))
            n, _ = max_num_gpu(
                spec, self.free, req, engine=self.engine, version=self.version, margin=BOUND_MARGIN
            )
            bound = max(bound, n)
        return max_layers if bound < 0 else min(max_layers, max(bound, 1))


def guesses_of(
    predicted: Sequence[int], fixed: Sequence[int], compute: Sequence[int], free: Sequence[int]
) -> list[GpuGuess]:
    """GpuGuesses from stored per-GPU figures; where the compute buffers were not stored (older studies),
    the guessed part less one CUDA context."""
    out = []
    for i, (b, f) in enumerate(zip(predicted, fixed)):
        guessed = max(0, b - f) if b else 0
        comp = compute[i] if i < len(compute) else max(0, guessed - CUDA_CONTEXT_BYTES)
        out.append(
            GpuGuess(
                f if b else 0,
                min(comp, guessed),
                guessed - min(comp, guessed),
                free[i] if i < len(free) else 0,
            )
        )
    return out


def _informs_vram(r: TrialRecord) -> bool:
    """A trial that says something about GPU memory: a measured load, or a load that failed on a GPU."""
    pred, fixed = r.predicted_vram_per_gpu, r.predicted_fixed_per_gpu
    if r.state != "COMPLETE" or r.predicted_skip or not pred or len(fixed) != len(pred):
        return False
    if r.decode_tok_s is not None:
        return len(r.peak_vram_per_gpu) == len(pred)
    return r.oom and gpu_failure(r.error)


def host_failure(error: str) -> bool:
    """A load that failed for lack of host (system) memory."""
    return memory_failure_kind(error) == "host"


def gpu_failure(error: str) -> bool:
    """A load that failed on a GPU (not for host memory): only those say something about VRAM."""
    text = error.lower()
    if host_failure(error) or "host" in text:
        return False
    return any(
        k in text for k in ("cuda", "cudamalloc", "hipmalloc", "rocm", "metal", "vulkan", "device", "gpu")
    )


def study_fitcheck(
    backend: Backend, probe: Probe, server: ServerInfo, infos: Mapping[str, ModelInfo]
) -> FitCheck | None:
    """The check a study gets: the GPUs' free memory now (everything unloaded), the variants' specs and the
    engine's rule. None where there is nothing to predict for: no GPU the probe can see, no tensor lists."""
    if probe.source not in ("nvml", "simulator"):
        return None
    backend.unload_all()  # free memory as the trials will find it
    gpus = probe.gpus()
    free = [max(0, g.memory_bytes - u) for g, u in zip(gpus, probe.used_bytes())]
    default_ctx = 4096
    if server.engine == "ollama":
        try:
            parse_version(server.version)
            default_ctx = Version(server.version).default_num_ctx(sum(g.memory_bytes for g in gpus))
        except ValueError:
            pass
    check = FitCheck(
        {tag: spec_of(info) for tag, info in infos.items()},
        free,
        engine=server.engine,
        version=server.version,
        default_ctx=default_ctx,
        flash_attn_ok=all(g.supports_flash_attention for g in gpus),
    )
    return check if check.active else None


def describe_skip(v: Verdict, free: Sequence[int]) -> str:
    """'predicted to exceed memory: GPU0 needs 25.3 GiB with compute and context x 1.20, 23.3 GiB free
    (2% likely to fit)'."""
    need = v.prediction.need_bytes(v.margin)
    worst = max((i for i, n in enumerate(need) if n and free[i] > 0), key=lambda i: need[i] / free[i])
    return (
        f"predicted to exceed memory: GPU{worst} needs {need[worst] / GiB:.1f} GiB with compute and "
        f"context x {v.margin:.2f}, {free[worst] / GiB:.1f} GiB free ({v.p_fit:.0%} likely to fit)"
    )


def with_prediction(record: TrialRecord, v: Verdict | None) -> TrialRecord:
    if v is None:
        return record
    p = v.prediction
    return replace(
        record,
        predicted_vram_bytes=p.vram_bytes,
        predicted_vram_per_gpu=list(p.gpu_bytes),
        predicted_fixed_per_gpu=list(p.fixed_bytes),
        predicted_offloaded=p.offloaded,
        predicted_compute_per_gpu=_compute_per_gpu(p),
        margin=round(v.margin, 4) if math.isfinite(v.margin) else None,
        p_fit=round(v.p_fit, 4),
    )


def _compute_per_gpu(p: Prediction) -> list[int]:
    out = [0] * len(p.gpu_bytes)
    for d, g in zip(p.allocation.gpu, p.runner_gpus):
        out[g] = d.compute
    return out
