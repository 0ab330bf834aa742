"""The Optuna study: storage, resume, seeding, objective, constraints, sampler choice.

The only module that builds Optuna objects. Objectives: maximize decode tok/s, minimize peak VRAM (GiB).
Every trial sets the same constraint keys (<= 0 is satisfied), so samplers learn where configs do not fit:

    load_failed  1 if the load (or a generation) failed for lack of memory, else -1
    vram_over    (peak - limit) / limit with --vram-limit, else -1          (+1 when it did not load)
    cpu_spill    share of the model outside VRAM with --gpu-only, else -1   (+1 when it did not load)
    ctx_under    (min_ctx - num_ctx) / min_ctx with --min-ctx, else -1
    ctx_over     (num_ctx - max_ctx) / max_ctx with --max-ctx, else -1 (the baseline's default context can be
                 above it)
    quality_over (loss - limit) / limit with --max-quality-loss, else -1: the tag's mean KL divergence from
                 the reference tag, measured once per tag and KV cache type before the trials (tuner.quality)

A trial that did not load is COMPLETE with placeholder values (0 tok/s, the GPUs' total memory) that only
the sampler sees: its record says decode_tok_s None, oom True, and keeps the server's message.
A config the estimator predicts not to fit (fitcheck.py, with the margin the study has learned) is not
loaded at all: COMPLETE, infeasible, load_failed = its predicted shortfall, error "predicted to exceed
memory: ...". The num_gpu range ends where no variant could fit even at the smallest context.
Everything a report needs is in user attributes ("autotune_meta" on the study, "record" on each trial).

The run loop (run_study: the budget, parallel workers, recovery, the re-measure) is tuner.runloop; the
storage and the recovery of interrupted trials tuner.storage; a trial's retries tuner.attempts; reading
trials back tuner.records; the search tuner.search.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner import remeasure
from tuner.attempts import measure_with_retries
from tuner.backend.base import AUTO, Backend, ModelInfo
from tuner.config import StudyConfig, ctx_ladder
from tuner.errors import ConfigError, TrialFailed
from tuner.fingerprint import check_machine
from tuner.fitcheck import FitCheck, Verdict, describe_skip, with_prediction
from tuner.interference import InterferenceMonitor
from tuner.measure import Measurement, measure
from tuner.probe import Probe
from tuner.quality import stored as quality_store
from tuner.records import record_of
from tuner.redact import mask_url
from tuner.schema import FULL_GPU_FRACTION, SCHEMA_VERSION, StudyMeta, TrialRecord, fully_on_gpu
from tuner.space import Config, Space
from tuner.storage import (
    close_storage,
    creation_lock,
    first_heartbeat,
    make_storage,
    opened_storage,
    storage_errors,
)
from tuner.units import GiB

CONSTRAINT_KEYS = ("load_failed", "vram_over", "cpu_spill", "ctx_under", "ctx_over", "quality_over")
QUALITY_FIELDS = ("quality_kl", "quality_kl_low", "quality_kl_high", "quality_top1")  # filled on reading back

optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is our own one-line report, not Optuna's

Notify = Callable[[str], None]


def quiet(_message: str) -> None:
    pass


PLAIN_SAMPLERS = ("tpe", "tpe-mv", "random", "gp")
SAMPLERS = ("auto", *PLAIN_SAMPLERS)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The plain Optuna samplers; 'auto' (ours, search.StructuredSampler) needs the study's space and
    estimator, so run_study replaces the multivariate TPE made here for it."""
    if name == "auto":
        return optuna.samplers.TPESampler(multivariate=True, n_startup_trials=5, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)  # Optuna 5.0 defaults
    if name == "tpe-mv":
        return optuna.samplers.TPESampler(multivariate=True, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
        if missing:  # GPSampler imports them only when it first samples: check before the study starts
            raise ConfigError(
                f"--sampler gp needs {' and '.join(missing)}; run 'pip install torch scipy' or use --sampler tpe."
            )
        return optuna.samplers.GPSampler(n_startup_trials=5, seed=seed)
    raise ConfigError(f"--sampler '{name}' is unknown; use one of {', '.join(SAMPLERS)}.")


def study_space(config: StudyConfig, infos: Mapping[str, ModelInfo]) -> Space:
    """The search space for the variants: num_gpu up to every layer, the context ladder within the bounds."""
    ladder = ctx_ladder(min(i.context_length for i in infos.values()), config.max_ctx, config.min_ctx)
    return Space(
        tags=tuple(config.tags),
        max_layers=max(i.max_layers for i in infos.values()),
        ctx_ladder=tuple(ladder),
        tune_flash_attn=config.tune_flash_attn,
        tune_kv_cache=config.tune_kv_cache,
        parallel_choices=config.tune_parallel,
        gpu_choices=config.tune_gpus,
        batch_choices=config.tune_batch,
        main_gpu_choices=config.tune_main_gpu,
        thread_choices=config.tune_threads,
        grouped=config.serve,
    )


def study_meta(
    config: StudyConfig,
    infos: Mapping[str, ModelInfo],
    space: Space,
    fingerprint: dict[str, Any],
    engine_args: dict[str, Any] | None = None,
) -> StudyMeta:
    """What the study stores about itself, for the report."""
    return StudyMeta(
        schema_version=SCHEMA_VERSION,
        study_name=config.study_name,
        engine=config.engine,
        model=config.model,
        tags=list(config.tags),
        block_count={v: i.block_count for v, i in infos.items()},
        context_length={v: i.context_length for v, i in infos.items()},
        ctx_ladder=list(space.ctx_ladder),
        budget=config.budget,
        vram_limit_bytes=config.vram_limit_bytes,
        min_ctx=config.min_ctx,
        max_ctx=config.max_ctx,
        gpu_only=config.gpu_only,
        depth=config.measure.depth,
        num_predict=config.measure.num_predict,
        fingerprint=fingerprint,
        engine_args=engine_args or {},
        target_rse=config.measure.target_rse,
        allow_cpu_only=config.allow_cpu_only,
        quantization={v: i.quantization for v, i in infos.items()},
        max_quality_loss=config.max_quality_loss,
    )


def open_study(
    config: StudyConfig,
    sampler: optuna.samplers.BaseSampler | None = None,
    on_stale: Callable[..., None] | None = None,
) -> optuna.Study:
    heartbeat = config.retry.heartbeat_s if config.storage != "in-memory" else None
    storage = make_storage(config.storage, heartbeat_s=heartbeat, on_stale=on_stale)
    with storage_errors(config.storage), creation_lock(config.storage):
        return optuna.create_study(
            study_name=config.study_name,
            storage=storage,
            directions=["maximize", "minimize"],
            sampler=sampler if sampler is not None else make_sampler(config.sampler, config.seed),
            load_if_exists=True,
        )


def load_records(storage: str, study_name: str) -> tuple[StudyMeta, list[TrialRecord]]:
    opened = make_storage(storage)
    with storage_errors(storage):
        try:
            study = optuna.load_study(study_name=study_name, storage=opened)
        except KeyError as exc:
            names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(opened))
            close_storage(opened)
            raise ConfigError(
                f"No study '{study_name}' in '{mask_url(storage)}'; existing studies: {names or 'none'}."
            ) from exc
        try:
            if "autotune_meta" not in study.user_attrs:
                raise ConfigError(f"Study '{study_name}' in '{mask_url(storage)}' was not made by autotune.")
            meta = StudyMeta.from_attrs(study.user_attrs["autotune_meta"])
            stored = study.user_attrs.get(remeasure.ATTR)
            records = [record_of(t) for t in study.get_trials(deepcopy=False)]
            quality = study.user_attrs.get(quality_store.ATTR) or {}
            ladder = study.user_attrs.get(CONCURRENCY_ATTR) or {}
        finally:
            close_storage(opened)
    records = quality_store.apply(remeasure.apply(records, stored), quality, meta.max_quality_loss)
    return dataclasses.replace(meta, remeasure=stored or {}, quality=quality, concurrency=ladder), records


CONCURRENCY_ATTR = "autotune_concurrency"


def store_concurrency(storage: str, study_name: str, block: dict[str, Any]) -> None:
    """Keep the concurrency ladder on the study (user attribute CONCURRENCY_ATTR, the latest run's), so
    `autotune report` redraws its curves without a server."""
    with opened_storage(storage) as opened:
        optuna.load_study(study_name=study_name, storage=opened).set_user_attr(CONCURRENCY_ATTR, block)


def check_resume(config: StudyConfig, meta: StudyMeta) -> None:
    """Before anything runs: a stored study of this name must have been measured on this machine and
    server (or config.allow_other_machine). run_study checks the same; this lets the CLI say so first."""
    storage = make_storage(config.storage)
    with storage_errors(config.storage):
        try:
            stored = optuna.load_study(study_name=config.study_name, storage=storage).user_attrs.get(
                "autotune_meta"
            )
        except KeyError:
            return  # a new study
        finally:
            close_storage(storage)
    if stored:
        check_same_machine(StudyMeta.from_attrs(stored), meta, config)


def check_same_machine(stored: StudyMeta, meta: StudyMeta, config: StudyConfig) -> None:
    known = [stored.fingerprint, *(stored.fingerprints or {}).values()]
    check_machine(known, meta.fingerprint, config.study_name, config.allow_other_machine)


# -- one trial ------------------------------------------------------------------------------------
def build_record(
    number: int,
    config: Config,
    m: Measurement,
    study_config: StudyConfig,
    baseline: bool,
    quality_loss: float | None = None,
) -> TrialRecord:
    res = m.residency
    gpu_fraction = res.gpu_fraction if res else None
    measured = m.loaded and not m.oom and m.decode_tok_s is not None
    constraints: dict[str, float] = {"load_failed": -1.0 if measured else 1.0}
    peak = m.peak_vram_bytes
    limit = study_config.vram_limit_bytes
    if limit:
        constraints["vram_over"] = (peak - limit) / limit if measured and peak is not None else 1.0
    else:
        constraints["vram_over"] = -1.0 if measured else 1.0
    if study_config.gpu_only:
        constraints["cpu_spill"] = (FULL_GPU_FRACTION - (gpu_fraction or 0.0)) if measured else 1.0
    else:
        constraints["cpu_spill"] = -1.0 if measured else 1.0
    effective_ctx = config.num_ctx or (res.context_length if res and res.context_length else 0)
    if study_config.min_ctx:
        constraints["ctx_under"] = (study_config.min_ctx - effective_ctx) / study_config.min_ctx
    else:
        constraints["ctx_under"] = -1.0
    if study_config.max_ctx and effective_ctx:
        constraints["ctx_over"] = (effective_ctx - study_config.max_ctx) / study_config.max_ctx
    else:
        constraints["ctx_over"] = -1.0
    constraints["quality_over"] = quality_store.quality_over(study_config.max_quality_loss, quality_loss)
    feasible = measured and all(v <= 0 for v in constraints.values())
    error = m.error
    if measured and not feasible:
        why = {
            "vram_over": f"peak VRAM {peak / GiB if peak else 0:.1f} GiB is over --vram-limit {limit / GiB if limit else 0:.1f} GiB",
            "cpu_spill": f"{(1 - (gpu_fraction or 0)) * 100:.0f}% of the model is on the CPU (--gpu-only)",
            "ctx_under": f"num_ctx {effective_ctx} is below --min-ctx {study_config.min_ctx}",
            "ctx_over": f"num_ctx {effective_ctx} is above --max-ctx {study_config.max_ctx}",
            "quality_over": quality_store.over_words(config.tag, quality_loss, study_config.max_quality_loss),
        }
        error = "; ".join(why[k] for k, v in constraints.items() if v > 0 and k in why)
    return TrialRecord(
        number=number,
        state="COMPLETE",
        tag=config.tag,
        num_gpu=config.num_gpu,
        num_ctx=config.num_ctx or (res.context_length if res and res.context_length else 0),
        decode_tok_s=m.decode_tok_s if measured else None,
        decode_cv=m.decode_cv if measured else None,
        decode_samples=[round(v, 4) for v in m.decode_rates] if measured else [],
        decode_rse=m.decode_rse if measured else None,
        noisy=m.noisy if measured else False,
        prefill_tok_s=m.prefill_tok_s if measured else None,
        ttft_s=m.ttft_s if measured else None,
        load_s=m.load_s,
        peak_vram_bytes=peak if measured else None,
        peak_vram_per_gpu=list(m.peak_vram_per_gpu) if measured else [],
        energy_j=round(m.energy.energy_j, 4) if measured and m.energy else None,
        energy_j_per_token=m.energy.energy_j_per_token if measured and m.energy else None,
        mean_power_w=m.energy.mean_power_w if measured and m.energy else None,
        vram_source=m.vram_source,
        size_bytes=res.size_bytes if res else None,
        size_vram_bytes=res.size_vram_bytes if res else None,
        gpu_fraction=gpu_fraction,
        cpu_spill=not fully_on_gpu(gpu_fraction) if gpu_fraction is not None else None,
        context_length_loaded=res.context_length if res else None,
        repeats=len(m.generations),
        feasible=feasible,
        oom=m.oom or not m.loaded,
        error=error,
        baseline=baseline,
        flash_attn=config.flash_attn,
        kv_cache_type=config.kv_cache_type,
        num_parallel=config.num_parallel,
        gpus=config.gpus,
        num_batch=config.num_batch,
        main_gpu=config.main_gpu,
        num_thread=config.num_thread,
        constraints=constraints,
        interference=dict(m.interference),
    )


def skipped_record(
    number: int,
    config: Config,
    verdict: Verdict,
    study_config: StudyConfig,
    free: list[int],
    quality_loss: float | None = None,
) -> TrialRecord:
    """A config predicted not to fit: never loaded, infeasible, its predicted shortfall as load_failed."""
    constraints = {
        "load_failed": max(verdict.over, 1e-3),
        "vram_over": 1.0,
        "cpu_spill": 1.0,
        "ctx_under": -1.0,
        "ctx_over": -1.0,
    }
    constraints["quality_over"] = quality_store.quality_over(study_config.max_quality_loss, quality_loss)
    if study_config.min_ctx:
        constraints["ctx_under"] = (study_config.min_ctx - config.num_ctx) / study_config.min_ctx
    if study_config.max_ctx and config.num_ctx:
        constraints["ctx_over"] = (config.num_ctx - study_config.max_ctx) / study_config.max_ctx
    return with_prediction(
        TrialRecord(
            number=number,
            state="COMPLETE",
            tag=config.tag,
            num_gpu=config.num_gpu,
            num_ctx=config.num_ctx,
            error=describe_skip(verdict, free),
            flash_attn=config.flash_attn,
            kv_cache_type=config.kv_cache_type,
            num_parallel=config.num_parallel,
            gpus=config.gpus,
            num_batch=config.num_batch,
            main_gpu=config.main_gpu,
            num_thread=config.num_thread,
            constraints=constraints,
            predicted_skip=True,
        ),
        verdict,
    )


class Objective:
    def __init__(
        self,
        backend: Backend,
        probe: Probe,
        space: Space,
        config: StudyConfig,
        gpu_total_bytes: int,
        fitcheck: FitCheck | None = None,
        notify: Notify = quiet,
        monitor: InterferenceMonitor | None = None,
        fingerprint_id: str = "",
        quality: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.probe = probe
        self.space = space
        self.config = config
        self.gpu_total_bytes = gpu_total_bytes
        self.fitcheck = fitcheck if fitcheck is not None and fitcheck.active else None
        self.notify = notify
        self.monitor = monitor
        self.fingerprint_id = fingerprint_id
        self.quality = quality_store.results(quality)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        first_heartbeat(trial)
        trial.set_user_attr(
            "worker",
            {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_s": self.config.retry.heartbeat_s},
        )
        fixed = trial.user_attrs.get("fixed_ctx")  # the baseline's context: 0 = the engine's default
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the baseline's num_gpu -1 sits outside the range on purpose
            config = self.space.suggest(trial)
        baseline = config.num_gpu == AUTO
        if fixed is not None:
            config = dataclasses.replace(config, num_ctx=int(fixed))
        if baseline:  # the engine's own defaults throughout, not the encoded flash-attention / KV choice
            config = dataclasses.replace(
                config,
                flash_attn=None,
                kv_cache_type=None,
                num_parallel=None,
                gpus=None,
                num_batch=None,
                main_gpu=None,
                num_thread=None,
            )
        verdict = None
        if self.fitcheck is not None:
            done = [
                record_of(t) for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            ]
            verdict = self.fitcheck.verdict(config, done)
        attempts: list[str] = []
        loss = quality_store.loss_of(self.quality, config.tag, config.kv_cache_type)
        if verdict is not None and verdict.skip and not baseline:  # the baseline shows what the engine does
            record = skipped_record(trial.number, config, verdict, self.config, self.fitcheck.free, loss)  # type: ignore[union-attr]
        else:
            restarted_before = getattr(self.backend, "restart_s", None)
            try:
                m, attempts = measure_with_retries(
                    lambda: measure(
                        self.backend,
                        self.probe,
                        config,
                        self.config.measure,
                        run_offset=trial.number * 100,
                        monitor=self.monitor,
                    ),
                    self.backend,
                    self.config.retry,
                    self.config.timeouts,
                    self.notify,
                )
            except TrialFailed as exc:  # the study goes on; the trial keeps why it failed
                trial.set_user_attr("error", str(exc))
                trial.set_user_attr("attempts", exc.attempts)
                raise
            record = with_prediction(
                build_record(trial.number, config, m, self.config, baseline, loss), verdict
            )
            if attempts:
                record = dataclasses.replace(record, attempts=attempts)
            if restarted_before is not None:  # --serve: the server restarts this trial cost (in its load_s)
                took = float(getattr(self.backend, "restart_s", 0.0)) - float(restarted_before)
                record = dataclasses.replace(record, restart_s=round(took, 3))
        record = dataclasses.replace(record, fingerprint_id=self.fingerprint_id)
        attrs = dataclasses.asdict(record)
        for key in ("number", "state", "remeasure_samples", *QUALITY_FIELDS):
            attrs.pop(key)
        trial.set_user_attr("record", attrs)
        for key in CONSTRAINT_KEYS:
            trial.set_constraint(key, record.constraints[key])
        if record.decode_tok_s is None:
            limit = self.config.vram_limit_bytes or self.gpu_total_bytes or record.size_bytes or GiB
            return 0.0, limit / GiB
        return record.decode_tok_s, (record.peak_vram_bytes or 0) / GiB
