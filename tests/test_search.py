"""Our search (tuner.search.StructuredSampler): which config it proposes next, from the stored trials alone.

The plan is tested on records (no engine, no clock): the edge per tag, bisection without a prediction, the
CPU anchor, the largest context on the GPU, the gap split, never a config twice; then through Optuna on a
toy landscape, where every trial it proposes is new and nothing predicted not to fit is ever proposed.
"""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from tuner.estimate import ModelSpec
from tuner.fitcheck import FitCheck
from tuner.models import arch as A
from tuner.models.gguf import show
from tuner.records import record_of
from tuner.schema import TrialRecord
from tuner.search import StructuredSampler
from tuner.space import Config, Space
from tuner.units import GiB

LADDER = (2048, 4096, 8192, 16384, 32768)
SPACE = Space(tags=("m:q4", "m:q8"), max_layers=33, ctx_ladder=LADDER)


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
        feasible=loaded,
    )


def spec(ftype: str, name: str) -> ModelSpec:
    return ModelSpec.from_show(show(A.LLAMA31_8B, ftype), name=name)


def fitcheck(free_gib: float) -> FitCheck:
    specs = {"m:q4": spec("Q4_K_M", "m:q4"), "m:q8": spec("Q8_0", "m:q8")}
    return FitCheck(specs, [int(free_gib * GiB)], engine="ollama", version="0.12.10")


# -- without predictions -------------------------------------------------------------------------------
def test_without_a_prediction_it_tries_every_layer_then_bisects_down_after_a_failure() -> None:
    s = StructuredSampler(SPACE, None)
    assert s.next_config([], set()) == Config("m:q4", 33, 2048)
    failed = [rec(0, "m:q4", 33, 2048, loaded=False)]
    assert s.next_config(failed, set()) == Config("m:q4", 16, 2048)  # (0 + 33) // 2
    loaded = [*failed, rec(1, "m:q4", 16, 2048)]
    assert s.next_config(loaded, set()) == Config("m:q4", 24, 2048)  # between 16 (loads) and 33 (fails)


def test_a_running_trial_is_not_proposed_again() -> None:
    s = StructuredSampler(SPACE, None)
    assert s.next_config([], {("m:q4", 33, 2048)}) != Config("m:q4", 33, 2048)


def test_after_the_edges_the_cpu_anchor_then_the_largest_context_on_the_gpu() -> None:
    s = StructuredSampler(SPACE, None)
    edges = [rec(0, "m:q4", 33, 2048, tok_s=50), rec(1, "m:q8", 33, 2048, tok_s=30, vram_gib=2)]
    assert s.next_config(edges, set()) == Config("m:q4", 0, 2048)  # the lightest tag on the CPU
    with_anchor = [*edges, rec(2, "m:q4", 0, 2048, tok_s=5, vram_gib=0.0, fraction=0.0)]
    assert s.next_config(with_anchor, set()) == Config("m:q4", 33, 32768)  # the top of the ladder first
    spilled = [*with_anchor, rec(3, "m:q4", 33, 32768, fraction=0.8)]
    assert s.next_config(spilled, set()) == Config("m:q4", 33, 8192)  # bisect the ladder: (0 + 4) // 2


def test_gpu_only_skips_the_cpu_anchor_and_the_gaps() -> None:
    s = StructuredSampler(SPACE, None, gpu_only=True)
    edges = [rec(0, "m:q4", 33, 2048), rec(1, "m:q8", 33, 2048)]
    assert s.next_config(edges, set()) == Config("m:q4", 33, 32768)


def test_the_widest_gap_on_the_front_is_split() -> None:
    s = StructuredSampler(Space(tags=("m:q4",), max_layers=33, ctx_ladder=(2048,)), None)
    done = [
        rec(0, "m:q4", 33, 2048, tok_s=100, vram_gib=6),
        rec(1, "m:q4", 0, 2048, tok_s=10, vram_gib=0.1, fraction=0.0),
    ]
    assert s.next_config(done, set()) == Config("m:q4", 17, 2048)  # (0 + 33 + 1) // 2
    done.append(rec(2, "m:q4", 17, 2048, tok_s=20, vram_gib=3, fraction=0.5))
    assert s.next_config(done, set()) == Config("m:q4", 25, 2048)  # the larger gap: 17..33 (10 -> 80 tok/s)


def test_nothing_left_to_plan_hands_over_to_tpe() -> None:
    s = StructuredSampler(Space(tags=("m:q4",), max_layers=1, ctx_ladder=(2048,)), None)
    done = [rec(0, "m:q4", 1, 2048), rec(1, "m:q4", 0, 2048, fraction=0.0)]
    assert s.next_config(done, set()) is None


# -- with predictions ---------------------------------------------------------------------------------
def test_the_first_load_per_tag_is_the_largest_num_gpu_predicted_to_fit() -> None:
    check = fitcheck(free_gib=6.0)  # the 8B's Q4_K_M (4.6 GiB) fits whole; Q8_0 (8 GiB) does not
    s = StructuredSampler(SPACE, check)
    margin = check.margin([])
    first = s.next_config([], set())
    assert first is not None and first.tag == "m:q4" and first.num_ctx == 2048  # lightest tag first
    edge = s.next_config([rec(0, "m:q4", first.num_gpu, 2048)], set())
    assert edge is not None and edge.tag == "m:q8"
    fits = check.predict(edge)
    above = check.predict(dataclasses.replace(edge, num_gpu=edge.num_gpu + 1))
    assert fits is not None and fits.fits(check.free, margin)
    assert above is not None and not above.fits(check.free, margin)


def test_a_vram_limit_lowers_the_edge() -> None:
    free = StructuredSampler(SPACE, fitcheck(free_gib=24.0)).next_config([], set())
    limited = StructuredSampler(SPACE, fitcheck(free_gib=24.0), vram_limit_bytes=3 * GiB).next_config(
        [], set()
    )
    assert free is not None and limited is not None and limited.num_gpu < free.num_gpu


# -- through Optuna -------------------------------------------------------------------------------------
def toy_objective(check: FitCheck):  # a landscape: loads when predicted to fit, speed grows with num_gpu
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        config = SPACE.suggest(trial)
        p = check.predict(config)
        loads = p is not None and p.fits(check.free, 1.0)
        r = rec(
            trial.number,
            config.tag,
            config.num_gpu,
            config.num_ctx,
            loaded=loads,
            tok_s=5 + config.num_gpu,
            vram_gib=(p.vram_bytes / GiB) if p else 0.0,
        )
        attrs = dataclasses.asdict(r)
        for key in ("number", "state"):
            attrs.pop(key)
        trial.set_user_attr("record", attrs)
        return (r.decode_tok_s or 0.0, (r.peak_vram_bytes or 0) / GiB)

    return objective


@pytest.mark.parametrize("free_gib", [6.0, 24.0])
def test_a_study_never_measures_a_config_twice_nor_proposes_one_predicted_not_to_fit(free_gib: float) -> None:
    check = fitcheck(free_gib)
    sampler = StructuredSampler(SPACE, check, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(toy_objective(check), n_trials=25)
    records = [record_of(t) for t in study.get_trials()]
    configs = [(r.tag, r.num_gpu, r.num_ctx) for r in records]
    assert len(set(configs)) == len(configs)
    planned = records[:8]  # the structured phase, before TPE; TPE's random start-up is not screened
    margin = check.margin([])
    for r in planned:
        p = check.predict(Config(r.tag, r.num_gpu, r.num_ctx))
        assert p is not None and p.fits(check.free, margin), r
