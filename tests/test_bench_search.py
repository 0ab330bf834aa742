"""The search benchmark: scenario file, hypervolume, the true front, the grid sampler, the command end to end."""

from __future__ import annotations

import itertools

import optuna
import pytest

import tuner.study
from tuner.bench import run as bench_run
from tuner.bench.grid import GridOrderSampler, grid_order
from tuner.bench.metrics import hypervolume, point_front
from tuner.bench.scenarios import Scenario, expand, parse_scenarios
from tuner.bench.table import SUMMARY_COLUMNS
from tuner.bench.truth import compute_truth, evaluate, make_simulation
from tuner.bench_search import main
from tuner.errors import ConfigError
from tuner.sim import Simulation, lookup
from tuner.space import Space
from tuner.units import GiB

TINY_TAG = "llama3.1:8b"

GOOD = """
[defaults]
ollama_version = "0.12.10"

[[scenario]]
name = "a"
gpus = "2xRTX4090"
model = "llama3.3:70b"
host_ram = "128GiB"
ollama_version = "0.32.0"

[[scenario]]
name = "b"
gpus = "24GiB,12GiB"
model = "deepseek-r1:32b"
quant = "q4_K_M, q8_0"
min_ctx = 8192
max_ctx = 32768
vram_limit = "20GiB"
gpu_only = true
baseline_ctx = 131072
note = "two unequal cards"
"""


# -- the scenario file ---------------------------------------------------------------------------
def test_a_good_file_parses_with_defaults_and_every_key():
    a, b = parse_scenarios(GOOD, "s.toml")
    assert a == Scenario(
        name="a", gpus="2xRTX4090", model="llama3.3:70b", host_ram="128GiB", ollama_version="0.32.0"
    )
    assert b.ollama_version == "0.12.10" and b.quant == ("q4_K_M", "q8_0")
    assert (b.min_ctx, b.max_ctx, b.vram_limit_bytes, b.gpu_only, b.baseline_ctx) == (
        8192,
        32768,
        20 * GiB,
        True,
        131072,
    )
    assert b.constraints_text() == "--min-ctx 8192 --max-ctx 32768 --vram-limit 20GiB --gpu-only"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("min_ctx = 8192", "min_ctx = 'big'"),
            "scenario #2 'b': min_ctx = 'big' is not a positive whole number",
        ),
        (
            ('gpus = "24GiB,12GiB"', 'gpus = "3xBanana"'),
            "scenario #2 'b': gpus = '3xBanana' is not a GPU list",
        ),
        (('quant = "q4_K_M, q8_0"', 'quant = ["q3_K_S"]'), "quant = ['q3_K_S'] holds 'q3_K_S', not one of"),
        (("gpu_only = true", "gpu_onyl = true"), "scenario #2 'b': gpu_onyl = True is not a known key"),
        (('ollama_version = "0.32.0"', 'ollama_version = "new"'), "scenario #1 'a': ollama_version = 'new'"),
        (('vram_limit = "20GiB"', 'vram_limit = "lots"'), "vram_limit = 'lots' is not a size"),
        (('name = "b"', 'name = "a"'), "name = 'a' is used by an earlier scenario"),
        (
            ('model = "llama3.3:70b"', 'model = "llama9:1t"'),
            "model = 'llama9:1t' is not in the simulator's catalog",
        ),
    ],
)
def test_a_bad_value_is_one_error_naming_the_file_the_scenario_and_the_key(change, expected):
    text = GOOD.replace(*change, 1)
    with pytest.raises(ConfigError) as info:
        parse_scenarios(text, "s.toml")
    message = str(info.value)
    assert message.startswith("Scenarios file 's.toml': ") and expected in message and "\n" not in message


def test_a_missing_required_key_and_bad_toml_are_named():
    with pytest.raises(ConfigError, match="scenario #1 'x' lacks the required key 'gpus'"):
        parse_scenarios('[[scenario]]\nname = "x"\nmodel = "llama3.1:8b"\n', "s.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        parse_scenarios("[[scenario]\n", "s.toml")
    with pytest.raises(ConfigError, match="has no \\[\\[scenario\\]\\] table"):
        parse_scenarios('[defaults]\ngpus = "1x24GiB"\n', "s.toml")


def test_the_packaged_scenarios_parse():
    from tuner.bench.scenarios import DEFAULT_SCENARIOS, load_scenarios

    scenarios = load_scenarios(DEFAULT_SCENARIOS)
    assert len(scenarios) >= 24 and len({s.name for s in scenarios}) == len(scenarios)
    assert any(s.host_bandwidth for s in scenarios) and {s.model.split(":")[0] for s in scenarios} >= {
        "qwen2.5", "phi4", "gemma3", "mistral-small", "mixtral", "qwen3",
    }  # fmt: skip


# -- hypervolume -------------------------------------------------------------------------------------
def test_hypervolume_matches_hand_computed_areas():
    # one point: 10 tok/s at 2 GiB, reference 6 GiB -> 10 x (6 - 2)
    assert hypervolume([(10.0, 2.0)], 6.0) == pytest.approx(40.0)
    # a staircase: 10 x (4 - 2) + 20 x (6 - 4)
    assert hypervolume([(10.0, 2.0), (20.0, 4.0)], 6.0) == pytest.approx(60.0)
    # a dominated point, one past the reference memory, one at 0 tok/s and a duplicate add nothing
    extra = [(5.0, 3.0), (30.0, 7.0), (0.0, 1.0), (20.0, 4.0)]
    assert hypervolume([(10.0, 2.0), (20.0, 4.0), *extra], 6.0) == pytest.approx(60.0)
    # three steps at 0 GiB (CPU only), 1 and 5: 1 x 1 + 3 x 4 + 4 x 3
    assert hypervolume([(1.0, 0.0), (3.0, 1.0), (4.0, 5.0)], 8.0) == pytest.approx(25.0)
    assert hypervolume([], 8.0) == 0.0


def test_point_front_keeps_the_non_dominated_points_by_memory_without_repeats():
    points = [(20.0, 4.0), (10.0, 2.0), (5.0, 3.0), (10.0, 2.5), (20.0, 4.0), (25.0, 9.0)]
    assert point_front(points) == [(10.0, 2.0), (20.0, 4.0), (25.0, 9.0)]


# -- the truth -----------------------------------------------------------------------------------------
def tiny_space() -> Space:
    mf = lookup(TINY_TAG)
    assert mf is not None
    return Space(tags=(TINY_TAG,), max_layers=mf.arch.block_count + 1, ctx_ladder=(2048, 4096, 8192))


def test_the_true_front_equals_an_independent_brute_force():
    scenario = Scenario(name="tiny", gpus="1x24GiB", model=TINY_TAG, max_ctx=8192)
    space = tiny_space()
    truth = compute_truth(scenario, space)
    sim = Simulation("1x24GiB", noise=0)
    configs = [(n, c) for c in space.ctx_ladder for n in range(-1, space.max_layers + 1)]
    configs += [(-1, None)]  # Ollama's own placement at its default context (the baseline)
    measured = []
    for num_gpu, num_ctx in configs:
        p = sim.plan(TINY_TAG, num_gpu, num_ctx)
        if p.ok:
            measured.append((sim.speed(p).decode_tok_s, sum(p.gpu_bytes) / GiB))
    brute = sorted({a for a in measured if not any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in measured)},
                   key=lambda a: a[1])  # fmt: skip
    assert [pytest.approx(p) for p in truth.front] == brute
    assert truth.best_decode_tok_s == pytest.approx(max(d for d, _ in measured))
    assert truth.ref_vram_gib == pytest.approx(24.0) and len(truth.points) == len(configs)
    assert truth.hypervolume == pytest.approx(hypervolume(measured, 24.0))


def test_constraints_decide_feasibility_as_the_study_does():
    scenario = Scenario(name="c", gpus="1x24GiB", model=TINY_TAG, vram_limit_bytes=6 * GiB, gpu_only=True,
                        min_ctx=4096)  # fmt: skip
    sim = make_simulation(scenario)
    full, part = evaluate(sim, scenario, TINY_TAG, 33, 4096), evaluate(sim, scenario, TINY_TAG, 20, 4096)
    assert full.loads and full.peak_vram_bytes <= 6 * GiB and full.feasible
    assert part.loads and part.gpu_fraction < 0.999 and not part.feasible  # --gpu-only: spills
    assert not evaluate(sim, scenario, TINY_TAG, 33, 2048).feasible  # --min-ctx
    assert not evaluate(sim, scenario, TINY_TAG, 33, 65536).feasible  # over --vram-limit
    assert compute_truth(scenario, tiny_space()).ref_vram_gib == pytest.approx(6.0)


# -- the grid strategy ---------------------------------------------------------------------------------
def test_the_grid_sampler_sweeps_tags_then_contexts_up_then_num_gpu_down():
    space = Space(tags=("a", "b"), max_layers=2, ctx_ladder=(2048, 4096))
    order = grid_order(space)
    assert order[:4] == [
        {"tag": "a", "num_gpu": 2, "log2_ctx": 11}, {"tag": "a", "num_gpu": 1, "log2_ctx": 11},
        {"tag": "a", "num_gpu": 0, "log2_ctx": 11}, {"tag": "a", "num_gpu": 2, "log2_ctx": 12},
    ]  # fmt: skip
    assert len(order) == 12 and order[6]["tag"] == "b"
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=GridOrderSampler(space))
    study.enqueue_trial({"tag": "a", "num_gpu": 1, "log2_ctx": 11})  # already visited: the grid skips it
    study.optimize(lambda t: (float(space.suggest(t).num_gpu), 0.0), n_trials=14)
    seen = [(t.params["tag"], t.params["num_gpu"], t.params["log2_ctx"]) for t in study.trials]
    expected = [(p["tag"], p["num_gpu"], p["log2_ctx"]) for p in order]
    assert seen[:12] == [expected[1], expected[0], *expected[2:]]
    assert seen[12:] == expected[:2]  # past the end it starts over


def test_the_pool_runs_each_item_in_its_own_process():
    done: list[int] = []
    assert bench_run._map(abs, [-1, -2, -3], 2, done.append) == [1, 2, 3] and sorted(done) == [1, 2, 3]


# -- the command -----------------------------------------------------------------------------------------
TINY_FILE = """
[[scenario]]
name = "tiny-8b"
gpus = "1x24GiB"
model = "llama3.1:8b"
max_ctx = 4096
"""


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_the_command_runs_two_strategies_and_prints_sane_tables(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tuner.study, "make_storage", tuner.study.make_storage)  # restored afterwards
    scenarios = tmp_path / "s.toml"
    scenarios.write_text(TINY_FILE)
    out = tmp_path / "bench.md"
    with pytest.raises(SystemExit) as info:
        main(["--scenarios", str(scenarios), "--budget", "8", "--seeds", "1", "--strategies", "grid,auto",
              "--errors", "0,foreign", "--jobs", "1", "--out", str(out)])  # fmt: skip
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    lines = text.splitlines()
    assert "python -m tuner.bench_search --scenarios" in text and "--budget 8 --seeds 1" in text
    assert "--errors 0,foreign" in text and "## Targets (issue 13)" in text
    start = lines.index("## All scenarios x memory modes x seeds, per strategy")
    header = _cells(lines[start + 2])
    assert header == list(SUMMARY_COLUMNS)
    rows = {(r := _cells(line))[0]: dict(zip(header, r)) for line in itertools.takewhile(
        lambda s: s.startswith("|"), lines[start + 4 :])}  # fmt: skip
    assert set(rows) == {"grid", "auto"}
    for row in rows.values():
        assert row["runs"] == "2"  # one scenario at two memory modes
        best, worst = row["best found / true best: median (worst)"].replace("(", "").replace(")", "").split()
        assert 0.0 < float(worst) <= float(best) <= 1.0
        deploy = row["deployable HV: median (worst)"].split()[0]
        assert 0.0 < float(deploy) <= 1.0
        assert row["sim. time per study (median)"].endswith(" min")
        skips, share = row["skips per study; share of sim. time"].split("; ")
        assert float(skips) >= 0 and 0.0 <= float(share.rstrip("%")) <= 100.0
        assert float(row["failed loads per study; share of sim. time"].split(";")[0]) >= 0
        judged = row["misjudged feasibility per study (judged feasible / judged infeasible)"].split(" / ")
        assert len(judged) == 2 and all(float(j) >= 0 for j in judged)
        assert float(row["real ms per trial"]) > 0
    assert rows["grid"]["trials to 99% (median)"] == "1"  # every layer at the smallest context comes first
    assert "### estimator error x0" in text and "### foreign memory truth" in text
    assert "| tiny-8b | 0 | 1x24GiB | llama3.1:8b | --max-ctx 4096 | 0.12.10 |" in text
    assert "| tiny-8b | foreign | 1x24GiB |" in text


def test_a_run_is_scored_on_best_found_deployable_hv_time_skips_failures_and_misjudgments():
    scenario = Scenario(name="s", gpus="1x24GiB", model=TINY_TAG, max_ctx=4096, estimator_error="0")
    truth = compute_truth(scenario, tiny_space())
    best = max((p for p in truth.points.values() if p.feasible), key=lambda p: p.decode_tok_s)
    slow = next(p for p in truth.points.values() if p.feasible and p.num_gpu == 0)  # CPU only: not deployable
    job = bench_run.Job(truth, "auto", 0, budget=5)
    M = bench_run.Measured
    trials = [
        M(slow.tag, 0, slow.num_ctx, True, 0, slow.decode_tok_s),
        M(best.tag, 33, 8192, False, 1, None, skipped=True),  # a skip of a config that fits
        M(best.tag, best.num_gpu, best.num_ctx, False, 2, None, failed=True),  # a fitting config judged not
        M(best.tag, best.num_gpu, 2048 if best.num_ctx == 4096 else 4096, True, 3, best.decode_tok_s),
    ]
    timeline = {0: (10.0, 0.0), 1: (10.0, 0.0), 2: (12.0, 2.0), 3: (30.0, 2.0)}
    state = {"charged_s": 30.0, "charged_s_by_kind": {"failed_load": 2.0}, "counters": {"failed_loads": 1}}
    sc = bench_run.score(job, trials, state, 1.0, 1.0, timeline)
    assert sc.mode == "0" and sc.skips == 1 and sc.failed_trials == 1 and sc.failed_load_s == 2.0
    assert sc.false_infeasible == 2 and sc.false_feasible == 0  # the skip and the failed load both fit
    assert sc.best_ratio is not None and sc.best_ratio > 0.95
    assert sc.trials_to_99 == 4 and sc.time_to_99_s == 30.0
    assert sc.hv_deploy is not None and 0 < sc.hv_deploy <= 1.0
    only_slow = bench_run.score(job, trials[:1], state, 1.0, 1.0, timeline)
    assert (
        only_slow.hv_deploy == 0.0 and only_slow.time_to_99_s is None
    )  # the CPU-only config is not deployable


def test_memory_modes_expand_each_scenario_unless_it_pins_one():
    a, b = parse_scenarios(
        GOOD.replace('model = "deepseek-r1:32b"', 'model = "deepseek-r1:32b"\nestimator_error = "foreign"')
    )
    runs = expand([a, b], ["0", "1", "2", "foreign"])
    assert [(r.name, r.estimator_error) for r in runs] == [
        ("a", "0"), ("a", "1"), ("a", "2"), ("a", "foreign"), ("b", "foreign"),
    ]  # fmt: skip
    assert runs[2].memory == (2.0, "estimator") and runs[4].memory == (1.0, "foreign")
    with pytest.raises(ConfigError, match="estimator_error = -1 is not a scale"):
        parse_scenarios(GOOD.replace('name = "b"', 'name = "b"\nestimator_error = -1'))
    with pytest.raises(ConfigError, match="host_bandwidth = 'fast' is not a positive number"):
        parse_scenarios(GOOD.replace('name = "b"', 'name = "b"\nhost_bandwidth = "fast"'))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--strategies", "grid,bogus"], "bench_search: --strategies entry 'bogus' is unknown; use some of"),
        (["--budget", "0"], "bench_search: Invalid value for '--budget'"),
        (
            ["--scenarios", "/nonexistent/s.toml"],
            "bench_search: Cannot read scenarios file '/nonexistent/s.toml'",
        ),
        (["--only", "nope"], "bench_search: --only 'nope' is not a scenario in the file"),
        (["--errors", "3,wild"], "bench_search: --errors entry 'wild' is not a scale >= 0 or \"foreign\""),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and "\n" not in err


def test_a_bad_scenarios_file_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_FILE.replace("max_ctx = 4096", "max_ctx = -4"))
    with pytest.raises(SystemExit) as info:
        main(["--scenarios", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bench_search: Scenarios file '{bad}': scenario #1 'tiny-8b': max_ctx = -4 is not a positive "
                   "whole number; use e.g. max_ctx = 32768.")  # fmt: skip
