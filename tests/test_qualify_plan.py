"""Qualification plans: a good one reads into its settings; a bad one is refused with one line per problem
(unknown keys, wrong types, unknown metrics, criteria that can never pass); and the criteria's verdicts, with
the numbers behind them, on synthetic trials and soak figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.errors import ConfigError
from tuner.qualify.criteria import FAIL, NO_DATA, PASS, evaluate, evaluate_all
from tuner.qualify.plan import PlanError, check_against_models, load_plan, parse_plan
from tuner.schema import TrialRecord
from tuner.units import GiB

STUDIES = Path(__file__).resolve().parent.parent / "studies"

GOOD = """
name = "rig-a"
budget_per_model = 12
time_budget_h = 6.5
soak_minutes = 30
heat_soak_minutes = 5

[constraints]
min_ctx = 8192
gpu_only = true
vram_limit = "20GiB"

[[models]]
model = "llama3.1:8b"
tags = ["llama3.1:8b", "llama3.1:8b-instruct-q8_0"]

[[models]]
model = "qwen2.5:14b"
budget = 30

[[criteria]]
name = "fast at 32k"
metric = "decode_tok_s"
min = 20
num_ctx_at_least = 32768
fully_on_gpu = true

[[criteria]]
metric = "throttle_s"
max = 0
"""


def _plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_a_good_plan_reads_into_its_settings(tmp_path):
    plan = load_plan(_plan(tmp_path, GOOD))
    assert plan.name == "rig-a" and plan.engine == "ollama"
    assert [m.model for m in plan.models] == ["llama3.1:8b", "qwen2.5:14b"]
    assert plan.models[0].tags == ("llama3.1:8b", "llama3.1:8b-instruct-q8_0")
    assert [plan.budget_of(m) for m in plan.models] == [12, 30]
    assert plan.time_budget_h == 6.5 and plan.soak_minutes == 30.0
    assert plan.min_ctx == 8192 and plan.gpu_only and plan.vram_limit_bytes == 20 * GiB
    c1, c2 = plan.criteria
    assert (c1.id, c1.metric, c1.min, c1.num_ctx_at_least, c1.fully_on_gpu) == (
        "c1",
        "decode_tok_s",
        20,
        32768,
        True,
    )
    assert c1.text() == "decode_tok_s >= 20 tok/s at num_ctx >= 32768 and fully on the GPU"
    assert (c2.metric, c2.max) == ("throttle_s", 0)


def test_the_example_plans_are_valid():
    plans = sorted(STUDIES.glob("*.toml"))
    assert len(plans) >= 2
    for path in plans:
        plan = load_plan(path)
        assert plan.models and plan.criteria, path


def test_every_problem_is_one_line(tmp_path):
    bad = """
budget_per_model = "ten"
soak_minutes = -1
colour = "blue"
engine = "vllm"

[constraints]
min_ctx = 65536
max_ctx = 32768
gpu_onyl = true

[[models]]
tags = ["x"]

[[models]]
model = "llama3.1:8b"
budget = 0

[[criteria]]
metric = "tokens_per_joule"
min = 3

[[criteria]]
metric = "decode_tok_s"
min = 20
max = 30

[[criteria]]
metric = "decode_tok_s"
min = 20
num_ctx_at_least = 131072

[[criteria]]
metric = "throttle_s"
max = 0
fully_on_gpu = true
models = ["mistral:7b"]
"""
    with pytest.raises(PlanError) as info:
        load_plan(_plan(tmp_path, bad))
    problems = info.value.problems
    text = "\n".join(problems)
    assert all("\n" not in p for p in problems)
    expected = [
        "'budget_per_model' is 'ten' (str)",
        "'soak_minutes' is -1; it must be 0 or more",
        "unknown key 'colour'",
        "'engine' is 'vllm'",
        "[constraints] unknown key 'gpu_onyl'",
        "min_ctx 65536 is above max_ctx 32768",
        "[[models]] #1 has no 'model'",
        "[[models]] #2 'budget' is 0",
        "metric 'tokens_per_joule' is unknown",
        "needs exactly one of 'min' or 'max'",
        "asks num_ctx >= 131072, above the plan's max_ctx 32768",
        "'throttle_s' is measured by the soak",
        "names model(s) not in the plan: mistral:7b",
    ]
    for line in expected:
        assert line in text, line
    assert len(problems) == len(expected), text
    assert all(p.startswith(str(tmp_path)) for p in str(info.value).splitlines())


def test_a_soak_criterion_without_a_soak_can_never_pass(tmp_path):
    text = (
        'soak_minutes = 0\n[[models]]\nmodel = "a:1b"\n[[criteria]]\nmetric = "soak_j_per_token"\nmax = 2\n'
    )
    with pytest.raises(PlanError, match="needs a soak, but soak_minutes is 0"):
        load_plan(_plan(tmp_path, text))


def test_soaks_longer_than_the_time_budget_are_refused(tmp_path):
    text = 'time_budget_h = 1\nsoak_minutes = 30\nheat_soak_minutes = 5\n[[models]]\nmodel = "a:1b"\n[[models]]\nmodel = "b:1b"\n'
    with pytest.raises(PlanError, match=r"the soaks alone take 70 min \(2 models x"):
        load_plan(_plan(tmp_path, text))
    assert (
        load_plan(_plan(tmp_path, text.replace("time_budget_h = 1", "time_budget_h = 2"))).time_budget_h == 2
    )


def test_a_plan_without_models_and_a_file_that_is_not_toml(tmp_path):
    with pytest.raises(PlanError, match="names no model"):
        load_plan(_plan(tmp_path, 'name = "x"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_plan(_plan(tmp_path, "models = [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_plan(tmp_path / "missing.toml")


def test_llama_server_plans_name_gguf_files():
    plan = parse_plan(
        {"engine": "llama-server", "models": [{"model": "/models/Llama-3.1-8B-Q4_K_M.gguf"}]}, "p.toml"
    )
    assert plan.engine == "llama-server" and plan.models[0].key == "llama-3.1-8b-q4_k_m"
    with pytest.raises(PlanError, match="'tags' are for Ollama"):
        parse_plan({"engine": "llama-server", "models": [{"model": "/m/a.gguf", "tags": ["x"]}]}, "p.toml")


def test_a_criterion_above_a_models_trained_context_is_refused():
    plan = parse_plan(
        {
            "models": [{"model": "small:1b"}, {"model": "big:8b"}],
            "criteria": [{"metric": "decode_tok_s", "min": 10, "num_ctx_at_least": 65536}],
        },
        "p.toml",
    )
    check_against_models(plan, {"small:1b": 131072, "big:8b": 131072})  # fine
    with pytest.raises(PlanError) as info:
        check_against_models(plan, {"small:1b": 32768, "big:8b": 131072})
    assert info.value.problems == [
        "criterion c1 (decode_tok_s >= 10 tok/s at num_ctx >= 65536) asks num_ctx >= 65536, but 'small:1b' "
        "reaches at most 32768: it can never pass; lower it or limit the criterion with models = [...]."
    ]


# -- verdicts -------------------------------------------------------------------------------------
def _trial(number, num_ctx, decode, gpu_fraction=1.0, feasible=True, state="COMPLETE", vram_gib=10.0):
    return TrialRecord(
        number=number,
        state=state,
        tag="m:8b",
        num_gpu=33,
        num_ctx=num_ctx,
        decode_tok_s=decode,
        gpu_fraction=gpu_fraction,
        feasible=feasible,
        peak_vram_bytes=int(vram_gib * GiB),
    )


TRIALS = [
    _trial(0, 8192, 60.0),
    _trial(1, 32768, 25.0),
    _trial(2, 65536, 40.0, gpu_fraction=0.8),  # faster at a larger context, but spilled to the CPU
    _trial(3, 65536, 90.0, feasible=False),  # broke a constraint
    _trial(4, 131072, 99.0, state="FAIL"),
]


def _criterion(**keys):
    return parse_plan({"models": [{"model": "m:8b"}], "criteria": [keys]}, "p.toml").criteria[0]


def test_a_trial_criterion_is_judged_on_the_best_qualifying_trial():
    c = _criterion(metric="decode_tok_s", min=20, num_ctx_at_least=32768, fully_on_gpu=True)
    v = evaluate(c, "m:8b", TRIALS, None)
    assert (v.verdict, v.value) == (PASS, 25.0) and "trial #1" in v.detail
    c = _criterion(metric="decode_tok_s", min=30, num_ctx_at_least=32768, fully_on_gpu=True)
    assert evaluate(c, "m:8b", TRIALS, None).verdict == FAIL
    c = _criterion(
        metric="decode_tok_s", min=30, num_ctx_at_least=32768
    )  # spilled counts without fully_on_gpu
    assert (evaluate(c, "m:8b", TRIALS, None).verdict, evaluate(c, "m:8b", TRIALS, None).value) == (
        PASS,
        40.0,
    )


def test_no_qualifying_trial_fails_and_says_so():
    c = _criterion(metric="decode_tok_s", min=1, num_ctx_at_least=131072)
    v = evaluate(c, "m:8b", TRIALS, None)
    assert v.verdict == FAIL and v.value is None and "no feasible trial at num_ctx >= 131072" in v.detail
    assert (
        _criterion(metric="num_ctx", min=8192, fully_on_gpu=True).text()
        == "num_ctx >= 8192 tokens fully on the GPU"
    )


def test_lower_is_better_metrics_take_the_least():
    c = _criterion(metric="peak_vram_gib", max=12)
    assert (
        evaluate(c, "m:8b", [_trial(0, 8192, 50, vram_gib=14), _trial(1, 4096, 50, vram_gib=9)], None).value
        == 9
    )
    c = _criterion(metric="num_ctx", min=32768, fully_on_gpu=True)
    v = evaluate(c, "m:8b", TRIALS, None)
    assert (v.verdict, v.value) == (PASS, 32768)


def test_soak_criteria_read_the_soak_figures_and_missing_data_is_no_data():
    soak = {"samples": 200, "throttle_s": 12.5, "soak_j_per_token": 1.8, "telemetry": True}
    throttle = _criterion(metric="throttle_s", max=0)
    energy = _criterion(metric="soak_j_per_token", max=2)
    drift = _criterion(metric="soak_drift_pct_per_h", min=-5)
    verdicts = evaluate_all([throttle, energy, drift], "m:8b", [], soak)
    assert [(v.verdict, v.value) for v in verdicts] == [(FAIL, 12.5), (PASS, 1.8), (NO_DATA, None)]
    assert verdicts[2].detail.endswith("the samples span no time")  # 200 samples are plenty
    cpu = {"samples": 30, "telemetry": False, "soak_decode_tok_s": 10.0}
    assert "gives no GPU telemetry" in evaluate(throttle, "m:8b", [], cpu).detail
    assert "3 soak samples, too few to judge a trend" in evaluate(drift, "m:8b", [], {"samples": 3}).detail
    assert evaluate(throttle, "m:8b", [], None).verdict == NO_DATA


def test_criteria_limited_to_some_models():
    plan = parse_plan(
        {
            "models": [{"model": "a:1b"}, {"model": "b:1b"}],
            "criteria": [{"metric": "decode_tok_s", "min": 1, "models": ["b:1b"]}],
        },
        "p.toml",
    )
    assert evaluate_all(plan.criteria, "a:1b", TRIALS, None) == []
    assert len(evaluate_all(plan.criteria, "b:1b", TRIALS, None)) == 1
