"""What a study stores, in one place: the trial record (one row of trials.csv) and the study metadata.

study.py writes these into Optuna user attributes; report.py reads them back (through
study.load_records) and never needs the server again. Bump SCHEMA_VERSION when a field changes meaning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tuner.units import GiB

SCHEMA_VERSION = (
    2  # 2: decode_tok_s is the mean of decode_samples (1: the median); intervals, noise, machines
)
AUTO = -1  # num_gpu left to the engine's own placement (the baseline trial)
FULL_GPU_FRACTION = 0.999  # gpu_fraction (size_vram / size) at or above this counts as fully on the GPU


def fully_on_gpu(gpu_fraction: float | None) -> bool:
    """The one rule for "100% GPU" (as `ollama ps` shows it): what cpu_spill, --gpu-only, the picks, the
    search and the benchmark all mean by a model that runs entirely in VRAM."""
    return gpu_fraction is not None and math.isfinite(gpu_fraction) and gpu_fraction >= FULL_GPU_FRACTION


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str  # Optuna state name: COMPLETE, RUNNING, FAIL, WAITING
    tag: str  # the model variant (Ollama tag or GGUF path)
    num_gpu: int  # -1 = the engine's own placement (the baseline trial)
    num_ctx: int
    decode_tok_s: float | None = None  # mean over the measured repeats (schema 1: median); None: no load
    decode_cv: float | None = None  # coefficient of variation of decode tok/s over the repeats
    decode_samples: list[float] = field(default_factory=list)  # each repeat's decode tok/s
    decode_rse: float | None = None  # relative standard error of the mean
    noisy: bool = False  # the repeats never reached the RSE target (measured, but the spread is large)
    prefill_tok_s: float | None = None  # median
    ttft_s: float | None = None  # median streamed time to first token
    load_s: float | None = None
    peak_vram_bytes: int | None = None  # total over GPUs, minus the pre-load baseline
    peak_vram_per_gpu: list[int] = field(default_factory=list)
    # The GPUs' energy over the measured generations (the energy counters' deltas, summed over GPUs), per
    # generated token, and its mean power. None: the probe has no energy counter (or an older study).
    energy_j: float | None = None
    energy_j_per_token: float | None = None
    mean_power_w: float | None = None
    vram_source: str = ""  # "nvml" | "simulator" | "size_vram" (fallback: the engine's own figure)
    size_bytes: int | None = None
    size_vram_bytes: int | None = None
    gpu_fraction: float | None = None  # size_vram / size
    cpu_spill: bool | None = None  # size_vram < size
    context_length_loaded: int | None = None  # what the engine says it actually uses
    repeats: int = 0  # measured generations
    feasible: bool = False  # loaded, measured, and every user constraint met
    oom: bool = False  # the load failed for lack of memory
    error: str = ""  # the server's message for a failed load, or why a constraint is violated
    baseline: bool = False  # num_gpu left to the engine
    flash_attn: str | None = None  # llama-server only
    kv_cache_type: str | None = None  # llama-server only
    num_parallel: int | None = None  # Ollama --serve: OLLAMA_NUM_PARALLEL the trial ran under
    gpus: str | None = None  # Ollama --serve: the GPU subset (CUDA_VISIBLE_DEVICES) and "+spread"
    restart_s: float | None = None  # Ollama --serve: seconds this trial spent restarting the server
    num_batch: int | None = None  # Ollama: the request's num_batch when searched (--tune num-batch)
    main_gpu: int | None = None  # Ollama: the request's main_gpu when searched (--tune main-gpu)
    num_thread: int | None = None  # Ollama: the request's num_thread when searched (--tune num-thread)
    constraints: dict[str, float] = field(default_factory=dict)  # <= 0 is satisfied
    predicted_vram_bytes: int | None = None  # the estimator's VRAM for this config (all GPUs)
    predicted_vram_per_gpu: list[int] = field(default_factory=list)
    predicted_fixed_per_gpu: list[int] = field(default_factory=list)  # weights + KV: known exactly
    predicted_compute_per_gpu: list[int] = field(
        default_factory=list
    )  # compute buffers (the rest: CUDA context)
    predicted_offloaded: int | None = None  # layers the estimator expects on the GPUs
    margin: float | None = (
        None  # factor on predicted compute + context at the learned belief's 95th percentile
    )
    predicted_skip: bool = False  # not loaded: the learned belief gives it under 5% to fit
    p_fit: float | None = None  # the belief's probability that this config fits, when it was judged
    attempts: list[str] = field(default_factory=list)  # discarded attempts and why (a timeout, a reset...)
    interference: dict[str, Any] = field(default_factory=dict)  # tuner.interference's block
    fingerprint_id: str = (
        ""  # which machine and server measured it (StudyMeta.fingerprints); "" = the study's
    )
    # Filled when the study is read back, never stored on the trial: the interleaved re-measure of the
    # contenders (tuner.remeasure), one decode tok/s per visit.
    remeasure_samples: list[float] = field(default_factory=list)
    # Filled when the study is read back from its quality block (tuner.quality.stored): the fidelity of this
    # trial's (tag, KV cache type) against the reference tag. None: not measured.
    quality_kl: float | None = None  # mean KL divergence over the top-k tokens, nats per token
    quality_kl_low: float | None = None  # its 95% interval over the prompts
    quality_kl_high: float | None = None
    quality_top1: float | None = None  # share of positions with the same most likely token

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["peak_vram_per_gpu"] = ";".join(str(v) for v in self.peak_vram_per_gpu)
        row["predicted_vram_per_gpu"] = ";".join(str(v) for v in self.predicted_vram_per_gpu)
        row["predicted_fixed_per_gpu"] = ";".join(str(v) for v in self.predicted_fixed_per_gpu)
        row["predicted_compute_per_gpu"] = ";".join(str(v) for v in self.predicted_compute_per_gpu)
        row["attempts"] = " | ".join(self.attempts)
        row["decode_samples"] = ";".join(f"{v:.4g}" for v in self.decode_samples)
        row["remeasure_samples"] = ";".join(f"{v:.4g}" for v in self.remeasure_samples)
        interference = row.pop("interference") or {}
        for key in ("other_cpu_before", "other_cpu_during"):
            row[f"interference_{key}"] = interference.get(key)
        for key in ("gpu_processes_during", "throttle_during"):
            row[f"interference_{key}"] = len(interference.get(key) or []) if interference else None
        for cause, seconds in sorted((interference.get("throttle_s_during") or {}).items()):
            row[f"interference_{cause}_throttle_s"] = seconds
        row.pop("constraints")
        for key, value in sorted(self.constraints.items()):
            row[f"constraint_{key}"] = value
        return row

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in names})


# The first columns of trials.csv, in order (the minimum set first).
CSV_COLUMNS = [
    "number",
    "state",
    "tag",
    "num_gpu",
    "num_ctx",
    "decode_tok_s",
    "decode_ci_low",
    "decode_ci_high",
    "noisy",
    "prefill_tok_s",
    "ttft_s",
    "load_s",
    "peak_vram_bytes",
    "predicted_vram_bytes",
    "size_bytes",
    "size_vram_bytes",
    "gpu_fraction",
    "quality_kl",
    "quality_top1",
    "energy_j_per_token",
    "energy_j",
    "feasible",
    "error",
]


@dataclass(frozen=True)
class StudyMeta:
    """Stored once per study (study user attributes)."""

    schema_version: int
    study_name: str
    engine: str  # "ollama" | "llama-server"
    model: str  # what the user asked for
    tags: list[str]  # the variants in the space
    block_count: dict[str, int]  # per tag
    context_length: dict[str, int]  # trained context per tag
    ctx_ladder: list[int]
    budget: int
    vram_limit_bytes: int | None
    min_ctx: int | None
    gpu_only: bool
    depth: float
    num_predict: int
    fingerprint: dict[
        str, Any
    ]  # gpus [{name, memory_bytes, driver}], server {engine, version, host}, host {cpu, ram_bytes, os}, tool
    engine_args: dict[str, Any] = field(default_factory=dict)  # e.g. llama-server binary path
    prediction_rule: str = ""  # the engine rule the memory estimator followed ("" = no predictions)
    max_ctx: int | None = None  # --max-ctx: no recommendation above this context
    target_rse: float = 0.02  # a trial whose relative standard error stays at or above this is noisy
    allow_cpu_only: bool = False  # the user asked for picks that may run entirely on the CPU
    # Every machine that measured trials, {fingerprint id: fingerprint}; `fingerprint` is the first.
    fingerprints: dict[str, Any] = field(default_factory=dict)
    # The latest interleaved re-measure of the contenders (tuner.remeasure), as stored on the study.
    remeasure: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, str] = field(default_factory=dict)  # per tag: "Q4_K_M", "F16", ...
    max_quality_loss: float | None = None  # --max-quality-loss: mean KL (nats) a deployable tag may lose
    # The quality block (tuner.quality.stored), as stored on the study; filled when it is read back.
    quality: dict[str, Any] = field(default_factory=dict)
    # The concurrency ladder on the best config (`--concurrency N`), as stored on the study; filled when read.
    concurrency: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StudyMeta:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in names})


def limits_broken(meta: StudyMeta, record: TrialRecord) -> list[str]:
    """The study's limits (--vram-limit, --min-ctx, --max-ctx, --gpu-only, as stored with the study: the
    latest run's) that a measured trial breaks. A trial stored under other limits is judged by these, so
    no output ever recommends a config the user has ruled out."""
    broken = []
    peak = record.peak_vram_bytes
    if meta.vram_limit_bytes and isinstance(peak, (int, float)) and peak > meta.vram_limit_bytes:
        broken.append(
            f"peak VRAM {peak / GiB:.1f} GiB is over --vram-limit {meta.vram_limit_bytes / GiB:.1f} GiB"
        )
    ctx = record.num_ctx
    if record.context_length_loaded and 0 < record.context_length_loaded < ctx:
        ctx = int(record.context_length_loaded)
    if meta.min_ctx and ctx < meta.min_ctx:
        broken.append(f"num_ctx {ctx} is below --min-ctx {meta.min_ctx}")
    if meta.max_ctx and ctx > meta.max_ctx:
        broken.append(f"num_ctx {ctx} is above --max-ctx {meta.max_ctx}")
    if meta.gpu_only and record.decode_tok_s is not None and not fully_on_gpu(record.gpu_fraction):
        broken.append(
            f"{(1 - (record.gpu_fraction or 0)) * 100:.0f}% of the model is on the CPU (--gpu-only)"
        )
    return broken


def honour_limits(meta: StudyMeta, record: TrialRecord) -> TrialRecord:
    """`record`, made infeasible (with the reason) when it breaks the study's limits."""
    broken = limits_broken(meta, record) if record.feasible else []
    if not broken:
        return record
    return replace(record, feasible=False, error="; ".join(broken))


DEPLOYABLE_FRACTION = 0.5  # a config this fast relative to the best is one a user would still deploy


def deployable(decode_tok_s: float | None, gpu_fraction: float | None, best_decode_tok_s: float) -> bool:
    """The one rule for where a user would deploy (what the search spends its trials on and the search
    benchmark scores): a config that runs entirely on the GPU, or one at least DEPLOYABLE_FRACTION of the
    best decode speed. A config that spills to the CPU at a fraction of the best is a fallback nobody picks
    while a faster one fits; the CPU-only config counts only where it is that close to the best."""
    if decode_tok_s is None or not math.isfinite(decode_tok_s) or decode_tok_s <= 0:
        return False
    return fully_on_gpu(gpu_fraction) or decode_tok_s >= DEPLOYABLE_FRACTION * best_decode_tok_s
