"""Our search (tuner.search.StructuredSampler): which config it proposes next, from the stored trials alone.

The plan is tested on records (no engine, no clock): the edge per tag, bisection without a prediction, which
way a host-memory or GPU failure moves the edge, the deployable front, the largest context on the GPU; then
through Optuna on a toy landscape, where no config is ever proposed twice on any path (the plan, TPE,
TPE's random start-up, the seeded draw, running and queued trials) at any budget, and the study stops when
nothing new is left; then a real study against the simulator that tests its edge with a real load.
"""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from tuner.estimate import ModelSpec
from tuner.fitcheck import SAFE, FitCheck
from tuner.landscape import Landscape
from tuner.models import arch as A
from tuner.models.gguf import show
from tuner.records import record_of
from tuner.schema import TrialRecord
from tuner.search import PROBE_MIN, StructuredSampler
from tuner.space import Config, Space
from tuner.units import GiB

LADDER = (2048, 4096, 8192, 16384, 32768)
SPACE = Space(tags=("m:q4", "m:q8"), max_layers=33, ctx_ladder=LADDER)
HOST_ERROR = "model requires more system memory (15.2 GiB) than is available (12.0 GiB)"
GPU_ERROR = "llama runner process has terminated: cudaMalloc failed: out of memory"


def rec(
    n: int,
    tag: str,
    num_gpu: int,
    num_ctx: int,
    *,
    loaded: bool = True,
    tok_s: float = 10.0,
    vram_gib: float = 1.0,
    fraction: float = 1.0,
    error: str = "",
) -> TrialRecord:
    return TrialRecord(
        number=n,
        state="COMPLETE",
        tag=tag,
        num_gpu=num_gpu,
        num_ctx=num_ctx,
        decode_tok_s=tok_s if loaded else None,
        peak_vram_bytes=int(vram_gib * GiB) if loaded else None,
        size_bytes=GiB,
        size_vram_bytes=int(fraction * GiB) if loaded else None,
        gpu_fraction=fraction if loaded else None,
        oom=not loaded,
        error="" if loaded else (error or GPU_ERROR),
        feasible=loaded,
    )


def spec(ftype: str, name: str) -> ModelSpec:
    return ModelSpec.from_show(show(A.LLAMA31_8B, ftype), name=name)


def fitcheck(free_gib: float, tags: tuple[str, ...] = ("m:q4", "m:q8")) -> FitCheck:
    types = {"m:q4": "Q4_K_M", "m:q8": "Q8_0"}
    return FitCheck(
        {t: spec(types[t], t) for t in tags}, [int(free_gib * GiB)], engine="ollama", version="0.12.10"
    )


def plan(sampler: StructuredSampler, records: list[TrialRecord], taken: set | None = None) -> Config | None:
    land = Landscape(
        sampler.space, sampler.fitcheck, records, taken or set(), sampler.vram_limit, sampler.gpu_only
    )
    return sampler.next_config(land)


# -- without predictions -------------------------------------------------------------------------------
def test_without_a_prediction_it_tries_every_layer_then_bisects_down_after_a_failure() -> None:
    s = StructuredSampler(SPACE, None)
    assert plan(s, []) == Config("m:q4", 33, 2048)
    failed = [rec(0, "m:q4", 33, 2048, loaded=False)]
    assert plan(s, failed) == Config("m:q4", 16, 2048)  # (0 + 33) // 2
    loaded = [*failed, rec(1, "m:q4", 16, 2048)]
    assert plan(s, loaded) == Config("m:q4", 24, 2048)  # between 16 (loads) and 33 (fails)


def test_a_running_or_queued_trial_is_not_proposed_again() -> None:
    s = StructuredSampler(SPACE, None)
    land = Landscape(SPACE, None, [], set())
    taken = {land.key(Config("m:q4", 33, 2048))}
    assert plan(s, [], taken) not in (None, Config("m:q4", 33, 2048))


def test_a_host_memory_failure_moves_the_edge_up_and_a_gpu_failure_moves_it_down() -> None:
    s = StructuredSampler(SPACE, None)
    host = [rec(0, "m:q4", 33, 2048, loaded=False), rec(1, "m:q4", 16, 2048, loaded=False, error=HOST_ERROR)]
    after_host = plan(s, host)
    assert (
        after_host is not None and 16 < after_host.num_gpu < 33
    )  # more layers on the GPU need less host RAM
    gpu = [rec(0, "m:q4", 33, 2048, loaded=False), rec(1, "m:q4", 16, 2048, loaded=False)]
    after_gpu = plan(s, gpu)
    assert after_gpu is not None and after_gpu.num_gpu < 16


def test_gpu_only_tries_only_every_layer_on_the_gpu() -> None:
    s = StructuredSampler(SPACE, None, gpu_only=True)
    edges = [rec(0, "m:q4", 33, 2048), rec(1, "m:q8", 33, 2048)]
    assert plan(s, edges) == Config("m:q4", 33, 32768)  # straight to the largest context on the GPU


# -- with predictions ---------------------------------------------------------------------------------
def test_the_first_load_per_tag_is_the_largest_num_gpu_safe_to_fit() -> None:
    check = fitcheck(free_gib=6.0)  # the 8B's Q4_K_M (4.6 GiB) fits whole; Q8_0 (8 GiB) does not
    s = StructuredSampler(SPACE, check)
    first = plan(s, [])
    assert first is not None and first.tag == "m:q4" and first.num_ctx == 2048  # lightest tag first
    assert (check.p_fit(first, []) or 0) >= SAFE
    above = dataclasses.replace(first, num_gpu=first.num_gpu + 1)
    assert first.num_gpu == 33 or (check.p_fit(above, []) or 0) < SAFE


def test_the_edge_above_what_is_safe_is_tested_with_a_real_load_within_a_budget() -> None:
    check = fitcheck(free_gib=5.25)  # every layer of Q4_K_M fits only if the guessed part is not large
    s = StructuredSampler(Space(("m:q4",), 33, (2048,)), check, budget=40)
    first = plan(s, [])
    assert first is not None and first.num_gpu < 33  # the prior does not call every layer safe
    records = [rec(0, "m:q4", first.num_gpu, 2048, tok_s=40, vram_gib=4.0)]
    probe = plan(s, records)
    assert probe is not None and probe.num_gpu > first.num_gpu
    p = check.p_fit(probe, records) or 0
    assert PROBE_MIN <= p < SAFE or p >= SAFE  # a probe of an uncertain edge, or a safe step up
    failures = [rec(i + 1, "m:q4", 33 - i, 2048, loaded=False) for i in range(2)]
    after = plan(s, [*records, *failures])
    assert after is None or after.num_gpu < 31  # two failed probes: this edge is settled


def test_a_vram_limit_lowers_the_edge() -> None:
    free = plan(StructuredSampler(SPACE, fitcheck(free_gib=24.0)), [])
    limited = plan(StructuredSampler(SPACE, fitcheck(free_gib=24.0), vram_limit_bytes=3 * GiB), [])
    assert free is not None and limited is not None and limited.num_gpu < free.num_gpu


def test_the_deployable_front_is_filled_and_a_slow_cpu_only_config_is_not_measured() -> None:
    check = fitcheck(free_gib=24.0, tags=("m:q4",))
    s = StructuredSampler(Space(("m:q4",), 33, (2048,)), check)
    records = [rec(0, "m:q4", 33, 2048, tok_s=100, vram_gib=6)]
    nxt = plan(s, records)
    assert nxt is not None and 0 < nxt.num_gpu < 33  # toward half the best speed, not the CPU
    records.append(rec(1, "m:q4", nxt.num_gpu, 2048, tok_s=30, vram_gib=3, fraction=0.5))
    for i in range(2, 12):  # split gaps until none is worth a trial
        nxt = plan(s, records)
        if nxt is None:
            break
        assert nxt.num_gpu != 0  # CPU-only decodes far below half the best here
        records.append(
            rec(i, "m:q4", nxt.num_gpu, 2048, tok_s=30 + 2 * nxt.num_gpu, vram_gib=nxt.num_gpu / 6)
        )


# -- through Optuna -------------------------------------------------------------------------------------
def toy_objective(check: FitCheck | None, space: Space):  # loads when it truly fits; speed grows with num_gpu
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        config = space.suggest(trial)
        p = check.predict(config) if check else None
        loads = p is None or p.fits(check.free, 1.1)  # type: ignore[union-attr]
        r = rec(
            trial.number, config.tag, config.num_gpu, config.num_ctx, loaded=loads, tok_s=5 + config.num_gpu,
            vram_gib=(p.vram_bytes / GiB) if p else config.num_gpu / 8,
            fraction=1.0 if config.num_gpu == space.max_layers else config.num_gpu / space.max_layers,
        )  # fmt: skip
        r = dataclasses.replace(r, flash_attn=config.flash_attn, kv_cache_type=config.kv_cache_type)
        attrs = dataclasses.asdict(r)
        for key in ("number", "state"):
            attrs.pop(key)
        trial.set_user_attr("record", attrs)
        return (r.decode_tok_s or 0.0, (r.peak_vram_bytes or 0) / GiB)

    return objective


def run_toy(space: Space, check: FitCheck | None, budget: int, seed: int = 0) -> list[TrialRecord]:
    """What tuner.study.run_study does with our sampler: one trial at a time until done or exhausted."""
    sampler = StructuredSampler(space, check, seed=seed, budget=budget)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    objective = toy_objective(check, space)
    while len(study.trials) < budget and not sampler.exhausted(study):
        study.optimize(objective, n_trials=1)
    return [record_of(t) for t in study.get_trials()]


def configs(records: list[TrialRecord], space: Space) -> list[tuple]:
    land = Landscape(space, None, [], set())
    return [land.key(Config(r.tag, r.num_gpu, r.num_ctx, r.flash_attn, r.kv_cache_type)) for r in records]


@pytest.mark.parametrize("free_gib", [3.0, 6.0, 24.0])
@pytest.mark.parametrize("budget", [1, 7, 25, 60])
def test_no_config_is_ever_measured_twice_at_any_budget(free_gib: float, budget: int) -> None:
    space = Space(tags=("m:q4", "m:q8"), max_layers=33, ctx_ladder=(2048, 4096, 8192))
    records = run_toy(space, fitcheck(free_gib), budget)
    keys = configs(records, space)
    assert len(set(keys)) == len(keys) and len(records) <= budget


@pytest.mark.parametrize("predict", [True, False])
def test_a_budget_larger_than_the_space_stops_the_study_instead_of_repeating(predict: bool) -> None:
    space = Space(tags=("m:q4",), max_layers=3, ctx_ladder=(2048, 4096))  # 8 configs
    records = run_toy(space, fitcheck(24.0, ("m:q4",)) if predict else None, budget=30)
    keys = configs(records, space)
    assert len(set(keys)) == len(keys) <= space.size()


def test_tpe_start_up_and_its_refusals_fall_back_to_a_new_config(monkeypatch: pytest.MonkeyPatch) -> None:
    space = Space(tags=("m:q4",), max_layers=33, ctx_ladder=(2048, 4096))
    calls = {"n": 0}

    def always_the_first_config(self, study, trial, search_space):  # TPE proposing what is measured
        calls["n"] += 1
        return {"tag": "m:q4", "num_gpu": 33, "log2_ctx": 11}

    monkeypatch.setattr(optuna.samplers.TPESampler, "sample_relative", always_the_first_config)
    records = run_toy(space, fitcheck(24.0, ("m:q4",)), budget=30)
    keys = configs(records, space)
    assert calls["n"] > 0 and len(set(keys)) == len(keys) == 30


def test_with_tuned_flash_attention_and_kv_cache_every_config_is_new() -> None:
    space = Space(("m:q4",), 33, (2048, 4096), tune_flash_attn=True, tune_kv_cache=True)
    records = run_toy(space, fitcheck(24.0, ("m:q4",)), budget=40)
    keys = configs(records, space)
    assert len(set(keys)) == len(keys) == 40


def test_nothing_predicted_not_to_fit_is_proposed() -> None:
    check = fitcheck(6.0)
    records = run_toy(SPACE, check, budget=25)
    earlier: list[TrialRecord] = []
    for r in records:
        p = check.p_fit(Config(r.tag, r.num_gpu, r.num_ctx), earlier)
        assert p is None or p >= PROBE_MIN, r
        earlier.append(r)


# -- a real study against the simulator -----------------------------------------------------------------
@pytest.mark.slow
def test_a_real_study_tests_the_edge_its_belief_doubts_and_finds_the_true_best(tmp_path) -> None:
    from tuner.cli import main  # noqa: PLC0415
    from tuner.sim import SimServer, Simulation  # noqa: PLC0415
    from tuner.study import load_records  # noqa: PLC0415

    storage = f"sqlite:///{tmp_path}/s.db"
    tag = "qwen2.5:72b-instruct-q4_K_M"  # 47 GB on a 48 GB card: the last layers decide
    with SimServer(gpus="1xL40S", host_ram="256GiB", seed=0) as sim:
        with pytest.raises(SystemExit) as info:
            main([tag, "--host", sim.url, "--budget", "8", "--storage", storage, "--study", "edge",
                  "--out", str(tmp_path / "rep"), "--num-predict", "16"])  # fmt: skip
        assert info.value.code == 0
    _, records = load_records(storage, "edge")
    done = [r for r in records if r.state == "COMPLETE" and not r.baseline]
    doubted = [r for r in done if r.p_fit is not None and r.p_fit < SAFE]
    assert doubted and all(r.p_fit >= PROBE_MIN for r in doubted)  # it tested the edge on purpose
    truth = Simulation("1xL40S", host_ram="256GiB", noise=0)
    edge = max(n for n in range(82) if truth.plan(tag, n, 2048).ok)
    assert max(r.num_gpu for r in done if r.decode_tok_s is not None and r.num_ctx == 2048) == edge
    keys = [(r.tag, r.num_gpu, r.num_ctx) for r in done]
    assert len(set(keys)) == len(keys)
