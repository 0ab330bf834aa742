"""One benchmark run: a real study (tuner.runloop.run_study) against an in-process simulator, then its score.

Each (scenario, strategy, seed) is one job in a process of its own (multiprocessing, `jobs` at a time).
A job starts a SimServer on loopback (noise on, seeded, simulated durations not slept), talks to it through
the real OllamaBackend and SimProbe, runs the study with fast measurement settings (FAST_MEASURE), and
scores the trials it finished against the scenario's noise-free truth (tuner.bench.truth).
The truth of each scenario is computed first, one job per scenario, with the same study set-up.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.backend.base import AUTO, ModelInfo, ServerInfo
from tuner.backend.ollama import OllamaBackend, resolve_tags
from tuner.bench.grid import GridOrderSampler
from tuner.bench.metrics import hypervolume
from tuner.bench.scenarios import MEMORY_MODES, Scenario, expand
from tuner.bench.truth import ScenarioTruth, compute_truth, lookup_point, make_simulation
from tuner.config import MeasureSettings, StudyConfig
from tuner.fingerprint import fingerprint
from tuner.fitcheck import study_fitcheck
from tuner.probe import Probe, SimProbe
from tuner.schema import StudyMeta, TrialRecord
from tuner.sim import SimServer
from tuner.space import Space
from tuner.study import study_meta, study_space

STRATEGIES = ("grid", "random", "tpe", "tpe-mv", "gp", "auto")
# Few, short generations: the simulator's noise still makes every measurement differ, at a few ms a trial.
FAST_MEASURE = MeasureSettings(num_predict=16, min_repeats=3, max_repeats=3, warmup=1)
NOISE = 0.02  # the simulator's default noise
IN_MEMORY = "in-memory"  # tuner.study.make_storage: Optuna's InMemoryStorage, 3-4x faster than SQLite here


def unavailable(strategy: str) -> str:
    """Why `strategy` cannot run here ('' when it can)."""
    if strategy == "gp":
        missing = [m for m in ("torch", "scipy") if importlib.util.find_spec(m) is None]
        if missing:
            return f"GPSampler needs {' and '.join(missing)} (pip install torch scipy)"
    return ""


@dataclass(frozen=True)
class StudyInputs:
    config: StudyConfig
    meta: StudyMeta
    space: Space
    server: ServerInfo
    infos: dict[str, ModelInfo]


def study_inputs(
    scenario: Scenario,
    backend: OllamaBackend,
    probe: Probe,
    *,
    study_name: str,
    strategy: str = "auto",
    seed: int = 0,
    budget: int = 40,
    storage: str = "in-memory",
    measure: MeasureSettings = FAST_MEASURE,
) -> StudyInputs:
    """What `autotune MODEL --quant/--tags ... --sampler S` builds before it runs the study.

    The same steps as tuner.cli's tune command: resolve the tags on the server, read their metadata, then
    tuner.study's study_space and study_meta.
    """
    server = backend.server_info()
    variants = resolve_tags(
        backend, scenario.model, quants=list(scenario.quant), tags=list(scenario.tags), pull=False
    )
    infos = {v: backend.model_info(v) for v in variants}
    config = StudyConfig(
        model=scenario.model, tags=tuple(variants), engine="ollama", budget=budget, storage=storage,
        study_name=study_name, max_ctx=scenario.max_ctx, min_ctx=scenario.min_ctx,
        vram_limit_bytes=scenario.vram_limit_bytes, gpu_only=scenario.gpu_only,
        baseline_ctx=scenario.baseline_ctx, seed=seed,
        sampler=strategy if strategy != "grid" else "random",  # grid passes its own sampler object
        measure=measure,
        quality=False,  # the benchmark scores the search; the quality measure costs every strategy the same
    )  # fmt: skip
    space = study_space(config, infos)
    meta = study_meta(config, infos, space, fingerprint(probe, server))
    return StudyInputs(config, meta, space, server, infos)


def _server(scenario: Scenario, seed: int, noise: float) -> SimServer:
    error, truth = scenario.memory
    return SimServer(
        gpus=scenario.gpus, host_ram=scenario.host_ram, host_bandwidth=scenario.host_bandwidth,
        version=scenario.ollama_version, seed=seed, noise=noise, estimator_error=error, memory_truth=truth,
        local="all",
    )  # fmt: skip


def truth_job(scenario: Scenario) -> ScenarioTruth:
    """The scenario's truth, over the space its studies get (resolved on a noise-free simulator)."""
    start = time.perf_counter()
    with _server(scenario, 0, 0.0) as sim:
        backend, probe = OllamaBackend(sim.url), SimProbe(sim.url)
        try:
            space = study_inputs(scenario, backend, probe, study_name="truth").space
        finally:
            backend.close()
            probe.close()
    return dataclasses.replace(compute_truth(scenario, space), eval_s=time.perf_counter() - start)


@dataclass(frozen=True)
class Job:
    truth: ScenarioTruth
    strategy: str
    seed: int
    budget: int
    noise: float = NOISE
    measure: MeasureSettings = FAST_MEASURE


@dataclass(frozen=True)
class Measured:
    """One finished trial, as scored: the config the study sent, what it measured and how it judged it."""

    tag: str
    num_gpu: int
    num_ctx: int | None  # None: the engine's default context
    feasible: bool
    number: int = 0
    decode_tok_s: float | None = None  # as the study measured it (noise included)
    skipped: bool = False  # not loaded: predicted to exceed memory
    failed: bool = False  # loaded and failed for lack of memory


@dataclass(frozen=True)
class RunScore:
    scenario: str
    strategy: str
    seed: int
    budget: int
    mode: str = ""  # the memory truth: an estimator-error scale ("0", "1", "2") or "foreign"
    best_ratio: float | None = (
        None  # true decode of the study's own pick / the true best (0: pick infeasible)
    )
    hv_ratio: float | None = None  # None when the scenario has no feasible config
    hv_deploy: float | None = None  # the same over the deployable region (tuner.schema.deployable)
    trials_to_99: int = 0  # budget + 1 when never reached
    time_to_99_s: float | None = None  # simulated seconds until then; None when never
    sim_s: float = 0.0  # simulated wall-clock of the study (everything the simulator charged)
    failed_load_s: float = 0.0
    failed_loads: int = 0  # loads the simulator failed
    failed_trials: int = 0  # trials that ended in a failed load
    skips: int = 0  # trials not loaded because predicted not to fit
    skip_s: float = 0.0  # simulated seconds those trials cost
    loads: int = 0
    trials: int = 0
    feasible_found: int = 0
    false_feasible: int = 0  # judged feasible, truly not
    false_infeasible: int = 0  # judged infeasible, truly feasible (a skip of a config that fits counts here)
    deployable_trials: int = 0  # trials whose config truly is deployable (where a user would run it)
    study_s: float = 0.0  # real seconds inside run_study
    wall_s: float = 0.0  # real seconds of the whole job (server start, set-up, study)
    error: str = ""
    charged_s_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return not self.error and self.trials_to_99 <= self.budget


def measured_of(records: Iterable[TrialRecord], scenario: Scenario) -> list[Measured]:
    """The finished trials in the order they ran."""
    out = []
    for r in sorted(records, key=lambda r: r.number):
        if r.state != "COMPLETE":
            continue
        default_ctx = r.num_ctx <= 0 or (r.baseline and r.num_gpu == AUTO and scenario.baseline_ctx is None)
        out.append(
            Measured(
                r.tag, r.num_gpu, None if default_ctx else r.num_ctx, r.feasible, r.number, r.decode_tok_s,
                r.predicted_skip, r.oom and not r.predicted_skip,
            )
        )  # fmt: skip
    return out


Timeline = dict[
    int, tuple[float, float]
]  # trial number -> (simulated seconds so far, failed-load seconds so far)


def score(
    job: Job, trials: list[Measured], state: dict[str, Any], study_s: float, wall_s: float,
    timeline: Timeline | None = None,
) -> RunScore:  # fmt: skip
    """Score finished trials against the truth (found front evaluated noise-free; see tuner.bench.truth)."""
    truth = job.truth
    sim = make_simulation(truth.scenario)
    found, found_deploy, outside = [], [], []
    first_hit, time_to_99 = job.budget + 1, None
    false_feasible = false_infeasible = deployable_trials = 0
    points = [lookup_point(truth, sim, t.tag, t.num_gpu, t.num_ctx) for t in trials]
    for p in points:
        if p.key not in truth.points and p.feasible:
            outside.append(p.objectives)  # reachable but outside the evaluated space: part of the truth too
    best = max([truth.best_decode_tok_s, *(d for d, _ in outside)])
    timeline = timeline or {}
    clock = prev = prev_failed = 0.0
    skip_s = 0.0
    for number, (t, p) in enumerate(zip(trials, points), start=1):
        clock, failed_clock = timeline.get(t.number, (prev, prev_failed))
        if t.skipped:
            skip_s += clock - prev
        prev, prev_failed = clock, failed_clock
        false_feasible += t.feasible and not p.feasible
        false_infeasible += p.feasible and not t.feasible
        deployable_trials += truth.is_deployable(p)
        if t.feasible and p.feasible:
            found.append(p.objectives)
            if truth.is_deployable(p):
                found_deploy.append(p.objectives)
            if first_hit > job.budget and p.decode_tok_s >= 0.99 * best:
                first_hit, time_to_99 = number, clock
    best_ratio = max((d for d, _ in found), default=0.0) / best if best > 0 else None
    true_hv, deploy_hv = truth.hypervolume, truth.deployable_hypervolume
    if outside:
        feasible = [p.objectives for p in truth.points.values() if p.feasible]
        true_hv = hypervolume(feasible + outside, truth.ref_vram_gib)
    by_kind = dict(state.get("charged_s_by_kind", {}))
    return RunScore(
        scenario=truth.scenario.name, strategy=job.strategy, seed=job.seed, budget=job.budget,
        mode=truth.scenario.estimator_error or "1", best_ratio=best_ratio,
        hv_ratio=hypervolume(found, truth.ref_vram_gib) / true_hv if true_hv > 0 else None,
        hv_deploy=hypervolume(found_deploy, truth.ref_vram_gib) / deploy_hv if deploy_hv > 0 else None,
        trials_to_99=first_hit, time_to_99_s=time_to_99, sim_s=float(state.get("charged_s", 0.0)),
        failed_load_s=float(by_kind.get("failed_load", 0.0)),
        failed_loads=int(state.get("counters", {}).get("failed_loads", 0)),
        failed_trials=sum(1 for t in trials if t.failed), skips=sum(1 for t in trials if t.skipped),
        skip_s=skip_s, loads=int(state.get("counters", {}).get("loads", 0)), trials=len(trials),
        feasible_found=len(found), false_feasible=false_feasible, false_infeasible=false_infeasible,
        deployable_trials=deployable_trials,
        study_s=study_s, wall_s=wall_s, charged_s_by_kind=by_kind,
    )  # fmt: skip


def run_job(job: Job) -> RunScore:
    """One study of `job.strategy` on the job's scenario, scored. Never raises: errors are in the score."""
    from tuner.runloop import TrialEvent, run_study  # noqa: PLC0415 - the study code as it is when the job runs

    start = time.perf_counter()
    scenario = job.truth.scenario
    if job.strategy == "gp":
        _single_threaded_torch()
    try:
        with _server(scenario, job.seed, job.noise) as sim:
            backend, probe = OllamaBackend(sim.url), SimProbe(sim.url)
            try:
                name = f"bench-{scenario.name}-{job.strategy}-{job.seed}"
                inputs = study_inputs(
                    scenario, backend, probe, study_name=name, strategy=job.strategy, seed=job.seed,
                    budget=job.budget, storage=IN_MEMORY, measure=job.measure,
                )  # fmt: skip
                extra: dict[str, Any] = {}
                if job.strategy == "grid":
                    extra["sampler"] = GridOrderSampler(inputs.space, seed=job.seed)
                if job.strategy == "auto":  # what `autotune` does by default: screen by predicted memory
                    extra["fitcheck"] = study_fitcheck(backend, probe, inputs.server, inputs.infos)
                before = sim.state()
                timeline: Timeline = {}

                def on_trial(event: TrialEvent) -> None:
                    now = sim.state()
                    timeline[event.record.number] = (
                        now["charged_s"] - before["charged_s"],
                        now["charged_s_by_kind"]["failed_load"] - before["charged_s_by_kind"]["failed_load"],
                    )

                study_start = time.perf_counter()
                _, records = run_study(
                    inputs.config, backend, probe, inputs.meta, inputs.space, on_trial=on_trial, **extra
                )
                study_s = time.perf_counter() - study_start
                state = sim.state()
                state["charged_s"] -= before["charged_s"]
                state["charged_s_by_kind"] = {
                    k: v - before["charged_s_by_kind"].get(k, 0.0)
                    for k, v in state["charged_s_by_kind"].items()
                }
            finally:
                backend.close()
                probe.close()
        return score(
            job, measured_of(records, scenario), state, study_s, time.perf_counter() - start, timeline
        )
    except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others' results
        if os.environ.get("TUNER_DEBUG") == "1":
            raise
        line = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return RunScore(scenario.name, job.strategy, job.seed, job.budget, scenario.estimator_error or "1",
                        error=line, wall_s=time.perf_counter() - start)  # fmt: skip


def _single_threaded_torch() -> None:
    """GPSampler's torch would use every core; the benchmark already runs `jobs` processes side by side."""
    try:
        import torch  # noqa: PLC0415

        torch.set_num_threads(1)
    except ImportError:
        pass


def _map(fn: Callable[[Any], Any], items: list[Any], jobs: int, on_done: Callable[[Any], None]) -> list[Any]:
    """fn over items, `jobs` processes at a time, one fresh process per item (in this process when jobs is 1)."""
    if jobs <= 1:
        out = []
        for item in items:
            out.append(fn(item))
            on_done(out[-1])
        return out
    results: list[Any] = [None] * len(items)
    with multiprocessing.get_context().Pool(processes=jobs, maxtasksperchild=1) as pool:
        for index, result in pool.imap_unordered(_indexed, [(fn, i, item) for i, item in enumerate(items)]):
            results[index] = result
            on_done(result)
    return results


def _indexed(arg: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    fn, index, item = arg
    return index, fn(item)


def _cost(job: Job) -> float:
    """A rough relative cost, so the slowest jobs start first."""
    return (10.0 if job.strategy == "gp" else 1.0) * (1 + len(job.truth.points) / 1000)


class Progress:
    """A line on stderr at most every `every_s` seconds and at the end: done/total, elapsed, ETA."""

    def __init__(self, total: int, what: str, every_s: float = 10.0) -> None:
        self.total, self.what, self.every_s = total, what, every_s
        self.done = 0
        self.start = self.last = time.monotonic()

    def __call__(self, _result: Any) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            print(
                f"  {self.what}: {self.done}/{self.total}, {elapsed:.0f} s, ETA {eta:.0f} s", file=sys.stderr
            )


def run_benchmark(
    scenarios: list[Scenario],
    strategies: list[str],
    seeds: int,
    budget: int,
    jobs: int,
    noise: float = NOISE,
    modes: Sequence[str] = MEMORY_MODES,
) -> tuple[list[ScenarioTruth], list[RunScore]]:
    """Every scenario's truth at each memory mode, then every (scenario, mode, strategy, seed) run, scored
    (in file order)."""
    scenarios = expand(scenarios, list(modes))
    import tuner.cli  # noqa: F401, PLC0415 - once, here: every job forked from this process runs the same code
    import tuner.study  # noqa: F401, PLC0415

    truths = _map(truth_job, scenarios, jobs, Progress(len(scenarios), "truth"))
    job_list = [
        Job(truth, strategy, seed, budget, noise)
        for truth in truths
        for strategy in strategies
        for seed in range(seeds)
    ]
    order = sorted(range(len(job_list)), key=lambda i: -_cost(job_list[i]))
    ran = _map(run_job, [job_list[i] for i in order], jobs, Progress(len(job_list), "studies"))
    scores: list[RunScore] = [RunScore("", "", 0, 0)] * len(job_list)
    for i, result in zip(order, ran):
        scores[i] = result
    return truths, scores
