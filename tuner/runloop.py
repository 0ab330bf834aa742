"""The run loop: trials until the budget is finished, resuming whatever is stored (tuner.study builds the
study and its objective).

run_study plans each trial holding the server's lock (tuner.serverlock), counts the budget with the trials
other workers are running, takes over trials whose worker died (Optuna's heartbeat, tuner.storage), stops
when our search has nothing new a user would deploy, and after the budget measures the contenders again,
interleaved (tuner.remeasure).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner import remeasure
from tuner.backend.base import AUTO, Backend
from tuner.config import StudyConfig
from tuner.errors import BackendError, ConfigError, TrialFailed, TunerError
from tuner.fingerprint import fingerprint_id
from tuner.fitcheck import FitCheck
from tuner.interference import EnginePids, InterferenceMonitor
from tuner.probe import Probe
from tuner.quality import stored as quality_store
from tuner.records import record_of
from tuner.schema import StudyMeta, TrialRecord
from tuner.search import StructuredSampler
from tuner.serverlock import ServerLock, holding
from tuner.space import KV_CACHE_CHOICES, Config, Space
from tuner.storage import describe_recovered, fail_stale, recover_interrupted, storage_errors
from tuner.study import CONCURRENCY_ATTR, Notify, Objective, check_same_machine, open_study, quiet


# -- the run -------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrialEvent:
    """What the progress display gets after each finished trial."""

    done: int
    budget: int
    record: TrialRecord
    best: TrialRecord | None
    elapsed_s: float
    eta_s: float | None


def _collect_into(
    ran: list[optuna.trial.FrozenTrial],
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback that keeps each trial the study finishes."""

    def collect(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial)

    return collect


def best_feasible(records: Sequence[TrialRecord]) -> TrialRecord | None:
    feasible = [r for r in records if r.feasible and r.decode_tok_s is not None]
    return max(feasible, key=lambda r: r.decode_tok_s or 0.0, default=None)


class _StaleTrials:
    """Optuna's heartbeat_stale_trial_callback: note which trials the heartbeat found stale."""

    def __init__(self) -> None:
        self.numbers: set[int] = set()

    def __call__(self, _study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.numbers.add(trial.number)


def run_study(
    config: StudyConfig,
    backend: Backend,
    probe: Probe,
    meta: StudyMeta,
    space: Space,
    *,
    on_trial: Callable[[TrialEvent], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sampler: optuna.samplers.BaseSampler | None = None,
    fitcheck: FitCheck | None = None,
    lock: ServerLock | None = None,
    notify: Notify = quiet,
    sleep: Callable[[float], None] = time.sleep,
    on_remeasure: Callable[[list[TrialRecord], int], None] | None = None,
    on_quality: Callable[[str], None] | None = None,
) -> tuple[StudyMeta, list[TrialRecord]]:
    """Run trials until `config.budget` trials are finished (COMPLETE), resuming whatever is stored; then,
    with config.remeasure_rounds, measure the contenders again, interleaved (tuner.remeasure).

    A stored study resumes only on the machine and server it started on (check_machine), unless
    config.allow_other_machine; every trial records the fingerprint id of the machine that measured it.

    With config.sampler 'auto' the baseline trial (the engine's own placement) comes first, then our
    search.StructuredSampler; a plain sampler (or one passed in as `sampler`, e.g. by the search benchmark)
    gets every trial to itself. With `fitcheck`, configs predicted not to fit are not loaded.

    Each trial runs holding `lock` (tuner.serverlock: one tuner per server): it is planned from everything
    stored when the lock is ours, and counted against the budget with the trials other workers are running,
    so parallel workers never exceed the budget. Trials left running by a worker that died are found by
    Optuna's heartbeat, said through `notify`, and run again. `config.retry.failed_in_row` trials failing in
    a row stop the study (TunerError).
    """
    with storage_errors(config.storage):
        return _run_study(
            config,
            backend,
            probe,
            meta,
            space,
            on_trial,
            clock,
            sampler,
            fitcheck,
            lock,
            notify,
            sleep,
            on_remeasure,
            on_quality,
        )


def _run_study(
    config: StudyConfig,
    backend: Backend,
    probe: Probe,
    meta: StudyMeta,
    space: Space,
    on_trial: Callable[[TrialEvent], None] | None,
    clock: Callable[[], float],
    sampler: optuna.samplers.BaseSampler | None,
    fitcheck: FitCheck | None,
    lock: ServerLock | None,
    notify: Notify,
    sleep: Callable[[float], None],
    on_remeasure: Callable[[list[TrialRecord], int], None] | None,
    on_quality: Callable[[str], None] | None,
) -> tuple[StudyMeta, list[TrialRecord]]:
    stale = _StaleTrials()
    study = open_study(config, sampler, on_stale=stale)
    structured = sampler is None and config.sampler == "auto"
    if fitcheck is not None and fitcheck.active:
        meta = dataclasses.replace(meta, prediction_rule=fitcheck.rule)
    machine = fingerprint_id(meta.fingerprint)
    meta = dataclasses.replace(
        meta, target_rse=config.measure.target_rse, fingerprints={machine: meta.fingerprint}
    )
    if "autotune_meta" not in study.user_attrs:
        study.set_user_attr("autotune_meta", dataclasses.asdict(meta))
    else:
        stored = StudyMeta.from_attrs(study.user_attrs["autotune_meta"])
        if list(stored.tags) != list(meta.tags) or stored.engine != meta.engine:
            raise ConfigError(
                f"Study '{config.study_name}' was made for {stored.engine} variants {stored.tags}, not "
                f"{list(meta.tags)}; pass another --study name or the same variants."
            )
        check_same_machine(stored, meta, config)
        # The study keeps the fingerprint it started on; every machine that measured is listed beside it.
        prints = dict(stored.fingerprints or {fingerprint_id(stored.fingerprint): stored.fingerprint})
        prints.setdefault(machine, meta.fingerprint)
        meta = dataclasses.replace(
            meta, budget=config.budget, fingerprint=stored.fingerprint, fingerprints=prints
        )
        study.set_user_attr("autotune_meta", dataclasses.asdict(meta))
    with holding(lock, notify):  # the quality measure loads every tag: one tuner on the server at a time
        quality = _quality_block(study, config, backend, meta, space, on_quality)
    if fitcheck is not None and fitcheck.active:
        if "num_gpu_bound" not in study.user_attrs:  # fixed at creation, so a resumed study keeps its range
            study.set_user_attr(
                "num_gpu_bound", fitcheck.num_gpu_bound(space.ctx_ladder[0], space.max_layers)
            )
        space = dataclasses.replace(space, max_layers=int(study.user_attrs["num_gpu_bound"]))
    ours: StructuredSampler | None = None
    if structured:
        study.sampler = ours = StructuredSampler(
            space,
            fitcheck,
            seed=config.seed,
            vram_limit_bytes=config.vram_limit_bytes,
            gpu_only=config.gpu_only,
            budget=config.budget,
            excluded_tags=quality_store.over_limit(quality, config.max_quality_loss),
        )
    monitor = InterferenceMonitor(probe, EnginePids(backend))
    total = sum(g.memory_bytes for g in probe.gpus())
    objective = Objective(
        backend,
        probe,
        space,
        config,
        total,
        fitcheck,
        notify=notify,
        monitor=monitor,
        fingerprint_id=machine,
        quality=quality,
    )
    baseline_ctx = config.baseline_ctx or 0  # 0: the engine's own default context
    start = clock()
    session_trials = 0
    failed_in_row: list[str] = []
    told_waiting = False
    poll_s = min(1.0, config.retry.heartbeat_s / 2)
    while True:
        ran: list[optuna.trial.FrozenTrial] = []
        with holding(lock, notify):
            fail_stale(study, config.retry.grace_s)
            for record in recover_interrupted(study):
                if record.number in stale.numbers and not record.error:
                    record = dataclasses.replace(
                        record,
                        error=f"its worker stopped (no heartbeat for {config.retry.grace_s} s)",
                    )
                notify(describe_recovered(record))
            records = [record_of(t) for t in study.get_trials(deepcopy=False)]
            complete = sum(1 for r in records if r.state == "COMPLETE")
            if complete >= config.budget:
                break
            if ours is not None and any(r.num_gpu == AUTO for r in records) and ours.exhausted(study):
                notify(
                    f"stopping after {complete} of {config.budget} trials: every config a user would deploy "
                    "that can fit is measured (the search never measures a config twice)"
                )
                break
            running = sum(1 for r in records if r.state == "RUNNING")  # other workers' (or stale) trials
            if complete + running < config.budget:
                told_waiting = False
                if structured and not any(
                    r.num_gpu == AUTO for r in records
                ):  # first, the engine's own placement
                    params = space.params(
                        Config(space.tags[0], AUTO, space.nearest_ctx(baseline_ctx or 4096))
                    )
                    attrs = {"fixed_ctx": baseline_ctx} if baseline_ctx not in space.ctx_ladder else None
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        study.enqueue_trial(params, user_attrs=attrs)
                study.optimize(objective, n_trials=1, callbacks=[_collect_into(ran)], catch=(TrialFailed,))
        if not ran:  # the budget is taken by trials running elsewhere: wait for them to end (or go stale)
            if not told_waiting:
                notify(
                    f"{running} trial(s) still running elsewhere could finish the budget of {config.budget}; "
                    f"waiting for them (a dead worker's trial is taken over after {config.retry.grace_s} s)"
                )
                told_waiting = True
            sleep(poll_s)
            continue
        session_trials += 1
        trial = ran[0]
        if trial.state == TrialState.FAIL:
            failed_in_row.append(str(trial.user_attrs.get("error", "")))
            if len(failed_in_row) >= config.retry.failed_in_row:
                raise TunerError(
                    f"{len(failed_in_row)} trials in a row failed; the last: {failed_in_row[-1]} "
                    "Check the server (and anything between it and autotune), then run the same command to "
                    "resume."
                )
        else:
            failed_in_row = []
        records = [record_of(t) for t in study.get_trials(deepcopy=False)]
        if on_trial is not None:
            n_done = sum(1 for r in records if r.state == "COMPLETE")
            elapsed = clock() - start
            eta = elapsed / session_trials * max(0, config.budget - n_done)
            on_trial(
                TrialEvent(n_done, config.budget, record_of(trial), best_feasible(records), elapsed, eta)
            )
    with holding(lock, notify):  # one worker re-measures; the others find its result stored
        again: dict[str, Any] | None = study.user_attrs.get(remeasure.ATTR)
        todo = remeasure.needed(meta, records, again, machine) if config.remeasure_rounds > 0 else []
        if todo:
            rounds = remeasure.rounds_for(config.remeasure_rounds, len(todo), config.budget)
            if on_remeasure is not None:
                on_remeasure(todo, rounds)
            try:
                again = remeasure.remeasure(
                    backend,
                    probe,
                    todo,
                    config.measure,
                    rounds=rounds,
                    monitor=monitor,
                    fingerprint_id=machine,
                )
                study.set_user_attr(remeasure.ATTR, again)
            except BackendError as exc:  # the trials stand; only the extra certainty is missing
                notify(
                    f"The re-measure of the contenders stopped ({exc}); the answer uses each trial's own runs."
                )
    records = quality_store.apply(remeasure.apply(records, again), quality, config.max_quality_loss)
    ladder = study.user_attrs.get(CONCURRENCY_ATTR) or {}  # an earlier run's --concurrency ladder
    return dataclasses.replace(
        meta, remeasure=again or {}, quality=quality or {}, concurrency=ladder
    ), records


def _quality_block(
    study: optuna.Study,
    config: StudyConfig,
    backend: Backend,
    meta: StudyMeta,
    space: Space,
    on_variant: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Each (tag, KV cache type)'s fidelity, measured once and stored on the study (resume reuses it)."""
    if not config.quality:
        return {}
    stored = study.user_attrs.get(quality_store.ATTR)
    kvs: tuple[str | None, ...] = KV_CACHE_CHOICES if space.tune_kv_cache else (None,)
    block = quality_store.for_study(
        backend, stored, meta, [(tag, kv) for tag in space.tags for kv in kvs], config, on_variant
    )
    if block and block != stored:
        study.set_user_attr(quality_store.ATTR, block)
    return block or {}
