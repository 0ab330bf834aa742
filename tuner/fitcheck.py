"""Before a trial loads anything: what the estimator predicts for it, and whether it can fit at all.

The study keeps one FitCheck. It predicts every config's VRAM per GPU (tuner.estimate). Weights and KV
cache follow exactly from the file; the compute buffers and the CUDA context are the estimator's guess, so
the safety margin multiplies that part only, and the study learns it from its own trials: the largest
measured/predicted ratio of that part seen so far (per GPU, measured = the probe's peak minus the predicted
weights and KV), plus a small slack. Until a first load has been measured the margin is PRIOR_MARGIN.
A config whose weights + KV + margin x (compute + context) exceeds some GPU's free memory is not loaded:
the study records it as infeasible ("predicted to exceed memory") with the predicted shortfall as its
constraint value. A load that fails anyway teaches the margin too: it must at least rule that config out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tuner.backend.base import AUTO, Backend, ModelInfo, ServerInfo
from tuner.estimate import ModelSpec, Prediction, Request, SpecError, max_num_gpu, predict
from tuner.estimate.versions import Version, parse_version
from tuner.probe import Probe
from tuner.schema import TrialRecord
from tuner.space import Config
from tuner.units import GiB

PRIOR_MARGIN = 1.6  # before any measurement; on a real H100 the guessed part was up to 1.52x (memory-h100.md)
SLACK = 0.05  # added to the largest measured/predicted ratio
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
    margin: float
    over: float  # the largest (predicted x margin - free) / free over GPUs; > 0 = predicted not to fit

    @property
    def skip(self) -> bool:
        return self.over > 0


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
        self._cache: dict[tuple[str, int, int, str | None, str | None], Prediction | None] = {}

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
        key = (config.tag, config.num_gpu, config.num_ctx, config.flash_attn, config.kv_cache_type)
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
        return Request(
            num_ctx=config.num_ctx or self.default_ctx,
            num_gpu=config.num_gpu,
            kv_type=config.kv_cache_type or "f16",
            flash_attn=fa,
        )

    # -- the learned margin ------------------------------------------------------------------------
    def ratios(self, records: Sequence[TrialRecord]) -> list[float]:
        """Per loaded trial, measured/predicted of compute + context on its worst GPU; per load that failed
        for lack of memory, the least such ratio that would have ruled it out."""
        out = []
        for r in records:
            pred, fixed = r.predicted_vram_per_gpu, r.predicted_fixed_per_gpu
            if r.state != "COMPLETE" or r.predicted_skip or not pred or len(fixed) != len(pred):
                continue
            if r.decode_tok_s is not None and r.peak_vram_per_gpu and len(r.peak_vram_per_gpu) == len(pred):
                per = [(m - f) / (p - f) for m, p, f in zip(r.peak_vram_per_gpu, pred, fixed) if p > f]
                if per:
                    out.append(max(per))
            elif r.decode_tok_s is not None and r.peak_vram_bytes and sum(pred) > sum(fixed):
                out.append((r.peak_vram_bytes - sum(fixed)) / (sum(pred) - sum(fixed)))
            elif r.oom and _gpu_failure(r.error):
                need = [(g - f) / (p - f) for g, p, f in zip(self.free, pred, fixed) if p > f]
                if need:
                    out.append(min(need) + SLACK / 4)
        return out

    def margin(self, records: Sequence[TrialRecord]) -> float:
        ratios = self.ratios(records)
        return max(ratios) + SLACK if ratios else PRIOR_MARGIN

    def verdict(self, config: Config, records: Sequence[TrialRecord]) -> Verdict | None:
        p = self.predict(config)
        if p is None:
            return None
        m = self.margin(records)
        return Verdict(p, m, over_fraction(p, self.free, m))

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


def over_fraction(p: Prediction, free: Sequence[int], margin: float) -> float:
    """The largest (need - free) / free over the GPUs the config uses; > 0 = predicted not to fit."""
    need = p.need_bytes(margin)
    return max(((n - f) / f for n, f in zip(need, free) if n and f > 0), default=-1.0)


def _gpu_failure(error: str) -> bool:
    """A load that failed on a GPU (not for host memory): only those say something about VRAM."""
    text = error.lower()
    if "system memory" in text or "cpu_buffer" in text or "host" in text:
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
    """'predicted to exceed memory: GPU0 needs 25.3 GiB with compute and context x 1.20, 23.3 GiB free'."""
    need = v.prediction.need_bytes(v.margin)
    worst = max((i for i, n in enumerate(need) if n and free[i] > 0), key=lambda i: need[i] / free[i])
    return (
        f"predicted to exceed memory: GPU{worst} needs {need[worst] / GiB:.1f} GiB with compute and "
        f"context x {v.margin:.2f}, {free[worst] / GiB:.1f} GiB free"
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
        margin=round(v.margin, 4) if math.isfinite(v.margin) else None,
    )
