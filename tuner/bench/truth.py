"""The noise-free truth of a scenario: every config the study can try, evaluated on the simulator's core.

A config is (tag, num_gpu, num_ctx). The space evaluated is what a study can reach: num_gpu 0..max_layers
(block_count + 1) and Ollama's own placement (-1), at every context of the study's ladder, plus Ollama's
placement at the baseline context (the scenario's baseline_ctx, else the engine's default: num_ctx None).

For each config, as the study would see it with noise 0:
    loads          Simulation.plan(...).ok on empty GPUs (the study unloads everything before each trial)
    decode_tok_s   Simulation.speed(...).decode_tok_s (depth 0)
    peak VRAM      sum of the placement's gpu_bytes: what the study's probe measures (used minus idle)
    feasible       loads, and the scenario's constraints hold with tuner.study.build_record's meaning:
                   peak <= vram_limit; gpu_only: tuner.schema.fully_on_gpu(size_vram / size); context >= min_ctx
    deployable     feasible, and tuner.schema.deployable: fully on the GPU, or at least half the best decode

The simulator is the scenario's: its GPUs, host (RAM and memory bandwidth), release and memory truth (the
estimator's error at the scenario's scale, or the foreign model of tuner.sim.memtruth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner.bench.metrics import Point2, hypervolume, point_front
from tuner.bench.scenarios import Scenario
from tuner.schema import deployable, fully_on_gpu
from tuner.sim import Simulation
from tuner.space import Space
from tuner.units import GiB

Key = tuple[str, int, int | None]


@dataclass(frozen=True)
class TruePoint:
    tag: str
    num_gpu: int  # -1 = Ollama's own placement
    num_ctx: int | None  # None = the engine's default context
    loads: bool
    decode_tok_s: float  # 0 when it does not load
    peak_vram_bytes: int
    gpu_fraction: float
    context_used: int  # what the study records as num_ctx (the reported context for a default one)
    feasible: bool

    @property
    def key(self) -> Key:
        return (self.tag, self.num_gpu, self.num_ctx)

    @property
    def objectives(self) -> Point2:
        return (self.decode_tok_s, self.peak_vram_bytes / GiB)


@dataclass(frozen=True)
class ScenarioTruth:
    """What a scenario's runs are scored against."""

    scenario: Scenario
    space: Space
    points: dict[Key, TruePoint]
    total_gpu_bytes: int
    ref_vram_gib: float  # the hypervolume's reference on the memory axis
    front: list[Point2] = field(default_factory=list)
    hypervolume: float = 0.0
    best_decode_tok_s: float = 0.0
    eval_s: float = 0.0  # wall seconds the exhaustive evaluation took
    deployable_front: list[Point2] = field(default_factory=list)
    deployable_hypervolume: float = 0.0

    def is_deployable(self, point: TruePoint) -> bool:
        return point.feasible and deployable(point.decode_tok_s, point.gpu_fraction, self.best_decode_tok_s)

    @property
    def n_feasible(self) -> int:
        return sum(1 for p in self.points.values() if p.feasible)


def make_simulation(scenario: Scenario, noise: float = 0.0, seed: int = 0) -> Simulation:
    error, truth = scenario.memory
    return Simulation(
        scenario.gpus, version=scenario.ollama_version, seed=seed, noise=noise, host_ram=scenario.host_ram,
        host_bandwidth=scenario.host_bandwidth, estimator_error=error, memory_truth=truth,
    )  # fmt: skip


def _reported_ctx(sim: Simulation, num_ctx_used: int, requested_default: int) -> int:
    """The context /api/ps reports for a load with the engine's default context (0 before Ollama 0.11)."""
    if sim.version.number < (0, 11, 0):
        return 0
    return num_ctx_used if sim.version.era == "C" else requested_default


def evaluate(sim: Simulation, scenario: Scenario, tag: str, num_gpu: int, num_ctx: int | None) -> TruePoint:
    """One config's noise-free outcome and feasibility under the scenario's constraints."""
    p = sim.plan(tag, num_gpu, num_ctx)
    context_used = num_ctx if num_ctx else _reported_ctx(sim, p.num_ctx, p.num_ctx_requested)
    if not p.ok:
        return TruePoint(tag, num_gpu, num_ctx, False, 0.0, 0, 0.0, context_used, False)
    peak = sum(p.gpu_bytes)
    fraction = p.size_vram_bytes / p.size_bytes if p.size_bytes else 0.0
    feasible = (
        (not scenario.vram_limit_bytes or peak <= scenario.vram_limit_bytes)
        and (not scenario.gpu_only or fully_on_gpu(fraction))
        and (not scenario.min_ctx or context_used >= scenario.min_ctx)
    )
    decode = sim.speed(p).decode_tok_s
    return TruePoint(tag, num_gpu, num_ctx, True, decode, peak, fraction, context_used, feasible)


def space_keys(space: Space, baseline_ctx: int | None) -> list[Key]:
    """Every config of the evaluated space (see the module docstring), in a fixed order."""
    keys: list[Key] = []
    for tag in space.tags:
        for ctx in space.ctx_ladder:
            keys.extend((tag, n, ctx) for n in range(-1, space.max_layers + 1))
        if baseline_ctx not in space.ctx_ladder:
            keys.append((tag, -1, baseline_ctx))
    return keys


def compute_truth(scenario: Scenario, space: Space, eval_s: float = 0.0) -> ScenarioTruth:
    """The scenario's noise-free truth over the whole space."""
    sim = make_simulation(scenario)
    points = {k: evaluate(sim, scenario, *k) for k in space_keys(space, scenario.baseline_ctx)}
    total = sum(g.memory_bytes for g in sim.gpus)
    ref = (scenario.vram_limit_bytes or total) / GiB
    feasible = [p.objectives for p in points.values() if p.feasible]
    best = max((d for d, _ in feasible), default=0.0)
    deploy = [
        p.objectives
        for p in points.values()
        if p.feasible and deployable(p.decode_tok_s, p.gpu_fraction, best)
    ]
    return ScenarioTruth(
        scenario=scenario,
        space=space,
        points=points,
        total_gpu_bytes=total,
        ref_vram_gib=ref,
        front=point_front(feasible),
        hypervolume=hypervolume(feasible, ref),
        best_decode_tok_s=best,
        eval_s=eval_s,
        deployable_front=point_front(deploy),
        deployable_hypervolume=hypervolume(deploy, ref),
    )


def lookup_point(
    truth: ScenarioTruth, sim: Simulation, tag: str, num_gpu: int, num_ctx: int | None
) -> TruePoint:
    """The truth of one measured config: from the evaluated space, or evaluated now if it lies outside."""
    point = truth.points.get((tag, num_gpu, num_ctx))
    return point if point is not None else evaluate(sim, truth.scenario, tag, num_gpu, num_ctx)
