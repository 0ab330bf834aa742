"""The night's run: each model of the plan in order, a study (the tune command's own run loop, resumed where
it stopped) then a soak at its recommended config, under the plan's time budget.

Unattended: a model that fails (not found, the server's errors, every trial out of memory) is recorded and
the plan moves on; a kill at any point loses nothing, since each trial is stored by the study as it finishes
and each model's outcome is written last (tuner.qualify.state). The same command continues: finished models
are skipped, a study resumes with its finished trials, an unfinished soak runs again.

Time budget: the plan's hours, less what earlier runs spent on finished models, shared evenly among the
models left; a study is stopped after the trial that uses up its share (the soak's minutes kept aside), and
a model whose turn comes after the budget is spent is listed as not run.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tuner.backend.base import Backend, ModelInfo, ServerInfo
from tuner.config import MeasureSettings, RetryPolicy, StudyConfig
from tuner.decision.picks import best_pick
from tuner.errors import BackendError, ConfigError, StorageError, TunerError
from tuner.fingerprint import fingerprint_id, fleet_id
from tuner.probe import Probe
from tuner.progress import trial_line
from tuner.qualify.plan import ModelEntry, Plan
from tuner.qualify.shared import share as share_outcome
from tuner.qualify.shared import shared_outcome
from tuner.qualify.soak import SoakSettings, run_soak
from tuner.qualify.state import DONE, FAILED, ModelOutcome, PlanState, study_name
from tuner.runloop import TrialEvent, run_study
from tuner.serverlock import holding
from tuner.space import Config
from tuner.study import check_resume, load_records, study_meta, study_space
from tuner.tunesetup import fitcheck, server_lock, write_report


class _TimeUp(TunerError):
    """Raised from the trial callback when a model's share of the time budget is spent."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.0f} min"
        if seconds >= 90
        else f"{seconds:.0f} s"
    )


@dataclass
class Engine:
    """The engine a plan runs on, opened once for the whole plan."""

    backend: Backend
    probe: Probe
    server: ServerInfo
    fingerprint: dict[str, Any]

    @property
    def fingerprint_id(self) -> str:
        return fingerprint_id(self.fingerprint)

    @property
    def fleet_id(self) -> str:
        """This physical machine (GPU UUIDs included): what names its studies in a shared storage."""
        return fleet_id(self.fingerprint)


@dataclass
class Variants:
    """Each model's resolved variants and their descriptions, or why the model cannot run."""

    infos: dict[str, dict[str, ModelInfo]] = field(default_factory=dict)  # model -> {variant: info}
    errors: dict[str, str] = field(default_factory=dict)  # model -> one line


def study_config(plan: Plan, entry: ModelEntry, variants: list[str], name: str, storage: str) -> StudyConfig:
    return StudyConfig(
        model=entry.model,
        tags=tuple(variants),
        engine=plan.engine,
        budget=plan.budget_of(entry),
        storage=storage,
        study_name=name,
        max_ctx=plan.max_ctx,
        min_ctx=plan.min_ctx,
        vram_limit_bytes=plan.vram_limit_bytes,
        gpu_only=plan.gpu_only,
        seed=plan.seed,
        sampler=plan.sampler,
        measure=MeasureSettings(num_predict=plan.num_predict),
        remeasure_rounds=plan.remeasure_rounds,
        quality=plan.quality,
        retry=RetryPolicy(heartbeat_s=plan.heartbeat_s),
    )


class PlanRunner:
    """Runs a plan's models in order (see the module docstring). `say` gets every progress line."""

    def __init__(
        self,
        plan: Plan,
        engine: Engine,
        variants: Variants,
        out_dir: Path,
        storage: str,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.variants = variants
        self.out_dir = out_dir
        self.storage = storage
        self.say = say
        self.clock = clock
        self.state = PlanState(out_dir)
        self.started = clock()
        self.failures = 0
        self.best: tuple[str, float] | None = None
        self.ran_s: list[float] = []  # durations of the models run by this process

    # -- the plan --------------------------------------------------------------------------------
    def run(self, after_each: Callable[[], None] | None = None) -> list[ModelOutcome]:
        plan, n = self.plan, len(self.plan.models)
        fp_id = self.engine.fingerprint_id
        outcomes: list[ModelOutcome] = []
        for i, entry in enumerate(plan.models, 1):
            earlier = self.state.outcome(entry.key)
            if earlier is None or earlier.status != DONE or earlier.fingerprint_id != fp_id:
                earlier = self._adopt_shared(entry) or earlier  # another worker of this machine finished it
            if earlier is not None and earlier.status == DONE and earlier.fingerprint_id == fp_id:
                self.say(f"model {i}/{n} {entry.model}: finished earlier ({earlier.trials} trials), skipped")
                self._count(earlier)
                outcomes.append(earlier)
                continue
            left = self._time_left()
            if left <= 0:
                self.say(
                    f"model {i}/{n} {entry.model}: not run, the plan's time budget of {self.plan.time_budget_h:g} h "
                    "is spent (by this run and earlier ones); raise time_budget_h in the plan to continue it"
                )
                continue
            share = left / (n - i + 1)
            self.say(self._progress_line(i, entry, share))
            outcome = self.run_model(entry, share)
            self.ran_s.append(outcome.duration_s)
            self.state.save(outcome)
            share_outcome(self.storage, outcome)
            self._count(outcome)
            outcomes.append(outcome)
            if outcome.status == FAILED:
                self.say(f"model {i}/{n} {entry.model}: FAILED: {outcome.error}")
            else:
                soak = outcome.soak or {}
                line = f"model {i}/{n} {entry.model}: done, {outcome.trials} trials"
                if outcome.best:
                    line += f", best {outcome.best.get('decode_tok_s', 0):.1f} tok/s"
                if "soak_decode_tok_s" in soak:
                    line += (
                        f", soak {soak['soak_decode_tok_s']:.1f} tok/s over {soak.get('minutes', 0):.1f} min"
                    )
                self.say(line + (f" (soak failed: {outcome.soak_error})" if outcome.soak_error else ""))
            if after_each is not None:
                after_each()
        return outcomes

    def _count(self, outcome: ModelOutcome) -> None:
        if outcome.status == FAILED:
            self.failures += 1
        speed = outcome.best.get("decode_tok_s") if outcome.best else None
        if isinstance(speed, (int, float)) and (self.best is None or speed > self.best[1]):
            self.best = (outcome.model, float(speed))

    def _time_left(self) -> float:
        spent_before = sum(
            o.duration_s
            for e in self.plan.models
            if (o := self.state.outcome(e.key)) is not None and o.fingerprint_id == self.engine.fingerprint_id
        )
        spent_now = self.clock() - self.started
        # the models finished in this run are counted in both: take their time once
        return self.plan.time_budget_h * 3600 - spent_before - max(0.0, spent_now - sum(self.ran_s))

    def _progress_line(self, i: int, entry: ModelEntry, share_s: float) -> str:
        n = len(self.plan.models)
        elapsed = self.clock() - self.started
        per_model = sum(self.ran_s) / len(self.ran_s) if self.ran_s else None
        eta = (
            per_model * (n - i + 1)
            if per_model is not None
            else min(share_s * (n - i + 1), self._time_left())
        )
        best = f"{self.best[0]} {self.best[1]:.1f} tok/s" if self.best else "none yet"
        return (
            f"model {i}/{n} {entry.model}: {self.plan.budget_of(entry)} trials, up to {_fmt_s(share_s)}; "
            f"elapsed {_fmt_s(elapsed)}, ETA {_fmt_s(eta)}; failures so far {self.failures}; best so far {best}"
        )

    # -- one model -------------------------------------------------------------------------------
    def run_model(self, entry: ModelEntry, share_s: float) -> ModelOutcome:
        fp_id = self.engine.fingerprint_id
        name = study_name(self.plan, entry, self.engine.fleet_id)
        base = ModelOutcome(
            entry.model, entry.key, name, FAILED, fp_id, budget=self.plan.budget_of(entry), started=_now()
        )
        t0 = self.clock()
        try:
            outcome = self._study_and_soak(entry, name, base, share_s, t0)
        except (StorageError, KeyboardInterrupt):
            raise
        except TunerError as exc:
            outcome = replace(base, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - unattended: one model's surprise must not end the night
            if os.environ.get("TUNER_DEBUG") == "1":
                raise
            detail = " ".join(str(exc).split())[:300]
            outcome = replace(
                base, error=f"unexpected {type(exc).__name__}: {detail} (TUNER_DEBUG=1 shows where)"
            )
        return replace(outcome, finished=_now(), duration_s=self.clock() - t0)

    def _study_and_soak(
        self, entry: ModelEntry, name: str, base: ModelOutcome, share_s: float, t0: float
    ) -> ModelOutcome:
        if entry.model in self.variants.errors:
            return replace(base, error=self.variants.errors[entry.model])
        infos = self.variants.infos[entry.model]
        config = study_config(self.plan, entry, list(infos), name, self.storage)
        base = replace(base, tags=list(infos))
        engine = self.engine
        space = study_space(config, infos)
        engine_args = (
            {"binary": str(getattr(engine.backend, "binary", ""))} if self.plan.engine != "ollama" else {}
        )
        meta = study_meta(config, infos, space, engine.fingerprint, engine_args)
        check_resume(config, meta)
        soak_s = (
            60 * (self.plan.soak_minutes + self.plan.heat_soak_minutes) if self.plan.soak_minutes > 0 else 0.0
        )
        study_s = max(0.0, share_s - soak_s)
        key = f"[{entry.key}]"

        def on_trial(event: TrialEvent) -> None:
            self.say(f"  {key} {trial_line(event)}")
            if self.clock() - t0 > study_s and event.done < event.budget:
                raise _TimeUp(f"time share of {_fmt_s(share_s)} used after {event.done} trials")

        cut = False
        check = fitcheck(engine.backend, engine.probe, engine.server, infos)
        try:
            meta, records = run_study(
                config,
                engine.backend,
                engine.probe,
                meta,
                space,
                on_trial=on_trial,
                fitcheck=check,
                lock=server_lock(self.plan.engine, engine.backend, config),
                notify=lambda m: self.say(f"  {key} {m}"),
            )
        except _TimeUp as exc:
            self.say(f"  {key} stopping the study: {exc}")
            cut = True
            meta, records = load_records(self.storage, name)
        done = [r for r in records if r.state == "COMPLETE"]
        model_dir = self.out_dir / "models" / entry.key
        paths = write_report(meta, records, model_dir)
        base = replace(
            base,
            trials=len(done),
            oom_trials=sum(1 for r in done if r.oom),
            cut_by_time=cut,
            report=str((model_dir / "report.html").relative_to(self.out_dir)),
        )
        pick = best_pick(meta, records)
        if pick is None:
            why = (
                f"no feasible config: all {len(done)} trials ran out of memory"
                if done and all(r.oom for r in done)
                else f"no feasible config in {len(done)} trials (see {base.report})"
            )
            return replace(base, error=why)
        best = pick.trial
        modelfile = self._install_file(entry, paths)
        base = replace(
            base,
            status=DONE,
            modelfile=modelfile,
            best={
                "tag": best.tag,
                "num_gpu": best.num_gpu,
                "num_ctx": best.num_ctx or best.context_length_loaded or 0,
                "flash_attn": best.flash_attn,
                "kv_cache_type": best.kv_cache_type,
                "decode_tok_s": best.decode_tok_s,
                "prefill_tok_s": best.prefill_tok_s,
                "ttft_s": best.ttft_s,
                "peak_vram_bytes": best.peak_vram_bytes,
                "gpu_fraction": best.gpu_fraction,
                "trial": best.number,
                "reason": pick.reason,
            },
        )
        if self.plan.soak_minutes <= 0:
            return base
        # One soak per server at a time, and once per machine: a worker beside us may have soaked it while
        # we waited for the server.
        with holding(
            server_lock(self.plan.engine, engine.backend, config), lambda m: self.say(f"  {key} {m}")
        ):
            shared = self._adopt_shared(entry)
            if shared is not None:
                self.say(f"  {key} soaked by another worker of this machine: its figures are used")
                return shared
            outcome = self._soak(
                entry,
                base,
                best.tag,
                Config(best.tag, best.num_gpu, best.num_ctx, best.flash_attn, best.kv_cache_type),
            )
            share_outcome(self.storage, outcome)
            return outcome

    def _adopt_shared(self, entry: ModelEntry) -> ModelOutcome | None:
        """The outcome another worker of this machine stored for `entry` (tuner.qualify.shared), with this
        worker's own report and install file written from the study; None when there is none."""
        name = study_name(self.plan, entry, self.engine.fleet_id)
        outcome = shared_outcome(self.storage, name, self.engine.fingerprint_id)
        if outcome is None:
            return None
        meta, records = load_records(self.storage, name)
        model_dir = self.out_dir / "models" / entry.key
        paths = write_report(meta, records, model_dir)
        outcome = replace(
            outcome,
            report=str((model_dir / "report.html").relative_to(self.out_dir)),
            modelfile=self._install_file(entry, paths),
        )
        self.state.save(outcome)
        return outcome

    def _install_file(self, entry: ModelEntry, paths: dict[str, Path]) -> str:
        """Copy the model's best Modelfile (or llama-server script) into modelfiles/<model>.<suffix>."""
        best = paths.get("best")
        if best is None:
            return ""
        suffix = ".Modelfile" if best.name.endswith(".Modelfile") else ".llama-server.sh"
        target = self.out_dir / "modelfiles" / f"{entry.key}{suffix}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(best, target)
        except OSError as exc:
            raise ConfigError(f"Cannot write '{target}' ({exc.strerror or exc}).") from exc
        return str(target.relative_to(self.out_dir))

    def _soak(self, entry: ModelEntry, base: ModelOutcome, tag: str, config: Config) -> ModelOutcome:
        plan = self.plan
        settings = SoakSettings(
            heat_s=60 * plan.heat_soak_minutes,
            soak_s=60 * plan.soak_minutes,
            depth_steps=plan.depth_steps,
            num_predict=plan.soak_num_predict,
            drift_pct_per_h=plan.drift_pct_per_h,
            collapse_fraction=plan.collapse_fraction,
            hot_c=plan.hot_c,
        )
        key = f"[{entry.key}]"
        self.say(
            f"  {key} soak at {tag} num_gpu {config.num_gpu} num_ctx {config.num_ctx}: "
            f"{plan.heat_soak_minutes:g} min heat soak, {plan.soak_minutes:g} min soak, {plan.depth_steps} depth steps"
        )
        try:
            result = run_soak(
                self.engine.backend,
                self.engine.probe,
                tag,
                config.options,
                settings,
                on_phase=lambda what: self.say(
                    f"  {key} {what if what.startswith('soak ') else 'soak: ' + what}"
                ),
            )
        except BackendError as exc:
            return replace(base, soak_error=str(exc).splitlines()[0])
        self.state.save_soak(entry.key, result.to_dict())
        figures = result.figures
        if figures.get("drift"):
            self.say(f"  {key} DRIFT: decode {figures['soak_drift_pct_per_h']:+.1f} %/h over the soak")
        if figures.get("clock_collapses"):
            self.say(f"  {key} CLOCK COLLAPSE: {figures['clock_collapses']} samples at normal temperature")
        if figures.get("throttle_s"):
            self.say(
                f"  {key} THROTTLED {figures['throttle_s']:.1f} s ({', '.join(figures.get('throttle_by_cause_s', {}))})"
            )
        return replace(base, soak=figures, soak_clock=result.clock)
