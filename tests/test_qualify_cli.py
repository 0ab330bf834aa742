"""`autotune qualify` against the simulator: a 3-model plan unattended end to end, the morning's files, a
failing model recorded while the plan goes on, a kill mid-plan then the same command continuing with nothing
lost or repeated, invalid plans refused before anything loads, --compare with an earlier qualification; and
the simulator's power model: an injected throttle and an injected drift detected end to end."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tuner.cli import main
from tuner.fingerprint import fleet_id
from tuner.modelfile import parse_modelfile
from tuner.sim import SimServer
from tuner.study import load_records

HERE = Path(__file__).resolve().parent
MODELS = ("llama3.1:8b", "qwen2.5:7b", "phi4:14b")


def plan_text(models=MODELS, budget=3, criteria="", name="night", soak=0.02, heat=0.01, extra=""):
    text = f"""
name = "{name}"
budget_per_model = {budget}
time_budget_h = 2
soak_minutes = {soak}
heat_soak_minutes = {heat}
depth_steps = 2
num_predict = 8
soak_num_predict = 16
remeasure_rounds = 0
heartbeat_s = 1
{extra}
"""
    text += "".join(f'\n[[models]]\nmodel = "{m}"\n' for m in models)
    return text + (
        criteria
        or """
[[criteria]]
name = "fast enough"
metric = "decode_tok_s"
min = 20
fully_on_gpu = true

[[criteria]]
metric = "decode_tok_s"
min = 100000

[[criteria]]
metric = "throttle_s"
max = 0
"""
    )


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def qualify(tmp_path: Path, url: str, text: str, *extra: str, out: str = "out") -> int:
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    args = ["qualify", str(plan), "--host", url, "--storage", f"sqlite:///{tmp_path}/s.db"]
    return run_cli([*args, "--out", str(tmp_path / out), *extra])


def complete(storage: str, study: str) -> list:
    return [r for r in load_records(storage, study)[1] if r.state == "COMPLETE"]


def test_a_three_model_plan_runs_unattended_end_to_end(tmp_path, capsys):
    with SimServer(gpus="1xRTX4090", seed=4) as sim:
        assert qualify(tmp_path, sim.url, plan_text()) == 0
    captured = capsys.readouterr()
    err = captured.err
    out = tmp_path / "out"
    assert f"summary: {out / 'summary.html'}" in captured.out
    for i, model in enumerate(MODELS, 1):  # progress over the whole plan
        assert f"model {i}/3 {model}: 3 trials" in err and f"model {i}/3 {model}: done, 3 trials" in err
    assert "ETA" in err and "failures so far 0" in err and "best so far" in err

    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "autotune-qualify-summary" and summary["complete"]
    assert summary["totals"] == {
        "models": 3,
        "done": 3,
        "failed": 0,
        "not_run": 0,
        "interrupted": 0,
        "passed": 0,
    }
    assert len(summary["fingerprint_id"]) == 8 and summary["fingerprint"]["gpus"][0]["name"]
    storage = f"sqlite:///{tmp_path}/s.db"
    for m in summary["models"]:
        assert m["status"] == "done" and m["trials"] == 3
        assert len(complete(storage, m["study"])) == 3
        assert m["study"] == f"q-night-{fleet_id(summary['fingerprint'])}-{m['key']}"  # the physical machine
        verdicts = {v["criterion"]: v for v in m["verdicts"]}
        assert verdicts["c1"]["verdict"] == "pass" and verdicts["c1"]["value"] >= 20
        assert verdicts["c2"]["verdict"] == "fail" and "trial #" in verdicts["c2"]["detail"]
        soak = m["soak"]
        if "throttle_s" in soak:  # the probe gave telemetry
            assert verdicts["c3"]["verdict"] == ("pass" if soak["throttle_s"] <= 0 else "fail")
        else:
            assert verdicts["c3"]["verdict"] == "no data"
        assert soak["samples"] >= 1 and soak["soak_decode_tok_s"] > 0
        assert set(soak["depth_decode_tok_s"]) and soak["depth_decode_ratio"] > 0
        # the model's own report and the Modelfile to install, the same as the report's best
        assert (out / m["report"]).is_file()
        installed = parse_modelfile((out / m["modelfile"]).read_text())
        best = parse_modelfile((out / "models" / m["key"] / "best.Modelfile").read_text())
        assert installed == best and installed["parameters"]["num_ctx"] == m["best"]["num_ctx"]
        assert (out / "plots" / f"{m['key']}.soak.png").read_bytes()[:4] == b"\x89PNG"

    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert len(rows) == 9 and {r["verdict"] for r in rows} >= {"pass", "fail"}
    assert {r["model"] for r in rows} == set(MODELS)
    md = (out / "summary.md").read_text()
    assert (
        "| model | status | c1 | c2 | c3 | all |" in md
        and "![soak of llama3.1-8b](plots/llama3.1-8b.soak.png)" in md
    )
    html = (out / "summary.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and 'src="http' not in html
    assert "Qualification night" in html and summary["fingerprint_id"] in html


def test_a_failing_model_is_recorded_and_a_rerun_skips_the_finished_ones(tmp_path, capsys):
    text = plan_text(models=("llama3.1:8b", "nosuch:1b", "qwen2.5:7b"), budget=2)
    with SimServer(gpus="1xRTX4090", seed=4) as sim:
        assert qualify(tmp_path, sim.url, text) == 0
        err = capsys.readouterr().err
        assert "model 2/3 nosuch:1b: FAILED" in err and "no model 'nosuch:1b'" in err
        assert "model 3/3 qwen2.5:7b: done" in err and "failures so far 1" in err
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert [m["status"] for m in summary["models"]] == ["done", "failed", "done"]
        assert summary["totals"]["failed"] == 1 and summary["complete"]

        assert qualify(tmp_path, sim.url, text) == 0  # the same command again
    err = capsys.readouterr().err
    assert "model 1/3 llama3.1:8b: finished earlier (2 trials), skipped" in err
    assert "model 3/3 qwen2.5:7b: finished earlier (2 trials), skipped" in err
    assert "model 2/3 nosuch:1b: FAILED" in err  # a failed model is tried again
    assert "trial " not in err  # nothing measured twice


def test_a_kill_mid_plan_then_the_same_command_continues(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(budget=3))
    storage = f"sqlite:///{tmp_path}/s.db"
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    env["PYTHONPATH"] = str(HERE.parent)

    def run(url: str, die_at: int | None) -> subprocess.CompletedProcess[str]:
        args = ["qualify", str(plan), "--host", url, "--storage", storage, "--out", str(tmp_path / "out")]
        cmd = [sys.executable, "-m", "tuner", *args]
        if die_at is not None:
            cmd = [sys.executable, str(HERE / "die_in_qualify.py"), str(die_at), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    with SimServer(gpus="1xRTX4090", seed=5) as sim:
        killed = run(sim.url, 4)  # the plan's 5th measurement: the second trial of the second model
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "model 1/3 llama3.1:8b: done, 3 trials" in killed.stderr
    assert "model 2/3 qwen2.5:7b" in killed.stderr and "model 3/3" not in killed.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())  # written after the first model
    fp = fleet_id(summary["fingerprint"])  # the studies are the physical machine's (GPU UUIDs included)
    studies = {
        m: f"q-night-{fp}-{k}" for m, k in zip(MODELS, ("llama3.1-8b", "qwen2.5-7b", "phi4-14b"), strict=True)
    }
    first_before = load_records(storage, studies["llama3.1:8b"])[1]
    second_before = load_records(storage, studies["qwen2.5:7b"])[1]
    assert [r.state for r in second_before] == ["COMPLETE", "RUNNING"]

    with SimServer(gpus="1xRTX4090", seed=6) as sim:
        resumed = run(sim.url, None)
    assert resumed.returncode == 0, resumed.stderr
    assert "model 1/3 llama3.1:8b: finished earlier (3 trials), skipped" in resumed.stderr
    assert "recovered trial #1" in resumed.stderr
    # nothing lost or repeated: the first model untouched, the second resumed to exactly its budget
    assert load_records(storage, studies["llama3.1:8b"])[1] == first_before
    second = load_records(storage, studies["qwen2.5:7b"])[1]
    assert [r.state for r in second].count("COMPLETE") == 3 and [r.state for r in second].count("FAIL") == 1
    assert second[0] == second_before[0]
    assert len(complete(storage, studies["phi4:14b"])) == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] and summary["totals"]["done"] == 3
    assert [m["trials"] for m in summary["models"]] == [3, 3, 3]


def test_a_kill_during_a_soak_reruns_the_soak_only(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(models=("llama3.1:8b", "qwen2.5:7b"), budget=2))
    storage = f"sqlite:///{tmp_path}/s.db"
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    env["PYTHONPATH"] = str(HERE.parent)
    args = ["qualify", str(plan), "--storage", storage, "--out", str(tmp_path / "out")]
    with SimServer(gpus="1xRTX4090", seed=5) as sim:
        killed = subprocess.run(
            [sys.executable, str(HERE / "die_in_qualify.py"), "soak:3", *args, "--host", sim.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert "soak: heat" in killed.stderr and "model 1/2 llama3.1:8b: done" not in killed.stderr
        resumed = subprocess.run(
            [sys.executable, "-m", "tuner", *args, "--host", sim.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert resumed.returncode == 0, resumed.stderr
    first = resumed.stderr.split("model 2/2")[0]
    assert (
        "[llama3.1-8b] trial " not in first and "[llama3.1-8b] soak: soak" in first
    )  # the study kept, the soak run
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [m["status"] for m in summary["models"]] == ["done", "done"]
    assert [len(complete(storage, m["study"])) for m in summary["models"]] == [2, 2]
    assert summary["models"][0]["soak"]["samples"] >= 1


def test_a_stop_inside_a_model_lists_it_as_interrupted_with_its_trials(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text(models=("llama3.1:8b", "qwen2.5:7b"), budget=2))
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    env.update(PYTHONPATH=str(HERE.parent), DIE_SIGNAL="TERM")
    args = ["qualify", str(plan), "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "out")]
    with SimServer(gpus="1xRTX4090", seed=5) as sim:
        stopped = subprocess.run(
            [sys.executable, str(HERE / "die_in_qualify.py"), "soak:3", *args, "--host", sim.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert stopped.returncode == 143, stopped.stderr
    assert "summary: 0 done, 0 failed, 1 interrupted, 1 not run" in stopped.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    first, second = summary["models"]
    assert (first["status"], first["trials"], first["budget"]) == ("interrupted", 2, 2)
    assert second["status"] == "not run" and not summary["complete"]
    assert summary["totals"]["interrupted"] == 1 and summary["totals"]["not_run"] == 1
    assert "1 interrupted" in (tmp_path / "out" / "summary.md").read_text()


def test_an_invalid_plan_is_refused_one_line_per_problem_before_anything_loads(tmp_path, capsys):
    bad = plan_text(
        extra='colour = "blue"\nbudget_per_model = "ten"',
        criteria='\n[[criteria]]\nmetric = "watts"\nmin = 1\n',
    ).replace("budget_per_model = 3\n", "")
    # no server at all: the plan is refused before any is reached
    assert qualify(tmp_path, "http://127.0.0.1:9", bad) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4, lines  # three problems and the closing line
    assert "unknown key 'colour'" in lines[0] or "unknown key 'colour'" in "\n".join(lines)
    assert any("'budget_per_model' is 'ten'" in line for line in lines)
    assert any("metric 'watts' is unknown" in line for line in lines)
    assert "was not run (3 problem(s) above)" in lines[-1]
    assert not (tmp_path / "s.db").exists()


def test_a_criterion_beyond_a_models_context_is_refused_before_any_load(tmp_path, capsys):
    text = plan_text(
        models=("llama3.1:8b", "qwen2.5:7b"),
        criteria='\n[[criteria]]\nmetric = "decode_tok_s"\nmin = 1\nnum_ctx_at_least = 1048576\n',
    )
    with SimServer(gpus="1xRTX4090") as sim:
        assert qualify(tmp_path, sim.url, text) == 2
        loaded = httpx.get(f"{sim.url}/api/ps").json()["models"]
    err = capsys.readouterr().err
    assert "asks num_ctx >= 1048576, but 'llama3.1:8b' reaches at most 131072" in err
    assert "but 'qwen2.5:7b' reaches at most 32768" in err
    assert loaded == [] and not (tmp_path / "out" / "state").exists()


def test_compare_with_an_earlier_qualification_on_another_machine(tmp_path, capsys):
    text = plan_text(models=("llama3.1:8b", "qwen2.5:7b"), budget=2)
    with SimServer(gpus="1xRTX4090", seed=4) as sim:
        assert qualify(tmp_path, sim.url, text, out="before") == 0
    with SimServer(gpus="1xRTX3090", seed=4) as sim:
        capsys.readouterr()
        assert qualify(tmp_path, sim.url, text, "--compare", str(tmp_path / "before"), out="after") == 0
    err = capsys.readouterr().err
    assert "compared with night on 1x NVIDIA GeForce RTX 4090" in err
    assert "fingerprint gpus[0].name: NVIDIA GeForce RTX 4090 -> NVIDIA GeForce RTX 3090" in err
    assert "llama3.1:8b c1: pass -> pass" in err and "llama3.1:8b best decode tok/s:" in err
    after = json.loads((tmp_path / "after" / "summary.json").read_text())
    before = json.loads((tmp_path / "before" / "summary.json").read_text())
    diff = after["compare"]
    assert diff["earlier"]["fingerprint_id"] == before["fingerprint_id"] != after["fingerprint_id"]
    changed = {row[0] for row in diff["fingerprint"]}
    assert "gpus[0].name" in changed and "gpus[0].memory_bytes" in changed
    pairs = {(v["model"], v["criterion"]): v for v in diff["verdicts"]}
    assert len(pairs) == 6
    old = {(m["model"], v["criterion"]): v["value"] for m in before["models"] for v in m["verdicts"]}
    assert all(pairs[k]["value_before"] == old[k] for k in pairs)
    assert "Compared with an earlier qualification" in (tmp_path / "after" / "summary.md").read_text()


def test_compare_with_nothing_there_is_a_usage_error(tmp_path, capsys):
    code = qualify(tmp_path, "http://127.0.0.1:9", plan_text(), "--compare", str(tmp_path / "nowhere"))
    assert code == 2
    assert "--compare" in capsys.readouterr().err


# -- the simulator's power model: an injected throttle and drift, detected end to end -----------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sim_process(*flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.sim", "--port", str(port), "--gpus", "1xRTX4090", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError("the simulator did not start (does it take these flags?)")
        try:
            httpx.get(f"{url}/api/version", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the simulator did not start")


def test_an_injected_throttle_and_drift_are_detected_end_to_end(tmp_path, capsys):
    criteria = """
[[criteria]]
metric = "throttle_s"
max = 0

[[criteria]]
metric = "soak_drift_pct_per_h"
min = -5
"""
    text = plan_text(models=("llama3.1:8b",), budget=2, soak=30, heat=5, criteria=criteria)
    results = {}
    for label, flags in (
        ("throttle", ("--inject-throttle", "0:1000000")),
        ("drift", ("--inject-drift", "20")),
    ):
        # two simulated machines (their own GPU UUIDs): on the one storage each keeps its own studies and soaks
        proc, url = _sim_process(*flags, "--machine", f"rig-{label}")
        try:
            assert qualify(tmp_path, url, text, out=label) == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        results[label] = json.loads((tmp_path / label / "summary.json").read_text())["models"][0]
    throttled = results["throttle"]
    assert throttled["soak_clock"] == "telemetry" and 29.5 <= throttled["soak"]["minutes"] <= 31
    assert throttled["soak"]["throttle_s"] > 0 and throttled["soak"]["throttle_reasons"]
    assert [v["verdict"] for v in throttled["verdicts"]][0] == "fail"
    drifting = results["drift"]
    assert drifting["soak"]["drift"] and drifting["soak"]["soak_drift_pct_per_h"] < -5
    assert [v["verdict"] for v in drifting["verdicts"]][1] == "fail"


def test_the_time_budget_cuts_a_study_and_leaves_the_rest_not_run(tmp_path, capsys):
    decode_only = '\n[[criteria]]\nmetric = "decode_tok_s"\nmin = 20\n'
    text = plan_text(budget=5, soak=0, criteria=decode_only).replace(
        "time_budget_h = 2", "time_budget_h = 0.0001"
    )
    with SimServer(gpus="1xRTX4090", seed=4) as sim:
        assert qualify(tmp_path, sim.url, text) == 0
        err = capsys.readouterr().err
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        first = summary["models"][0]
        assert first["status"] == "done" and first["cut_by_time"] and first["trials"] == 1
        assert "stopping the study: time share" in err
        assert [m["status"] for m in summary["models"][1:]] == ["not run", "not run"]
        assert "model 2/3 qwen2.5:7b: not run, the plan's time budget of 0.0001 h is spent" in err
        assert not summary["complete"] and summary["totals"]["not_run"] == 2
        assert "run the same command again to continue" in (tmp_path / "out" / "summary.md").read_text()
        # more time in the plan: the same command continues with the models not run
        assert qualify(tmp_path, sim.url, text.replace("time_budget_h = 0.0001", "time_budget_h = 2")) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [m["trials"] for m in summary["models"]] == [1, 5, 5] and summary["complete"]


def test_check_reads_the_plan_and_the_models_and_runs_nothing(tmp_path, capsys):
    text = plan_text(models=("llama3.1:8b", "nosuch:1b"))
    with SimServer(gpus="1xRTX4090") as sim:
        assert qualify(tmp_path, sim.url, text, "--check") == 0
    err = capsys.readouterr().err
    assert "plan 'night': 2 models, 3 criteria: OK" in err
    assert "note: nosuch:1b: Ollama at" in err and "would record it as failed" in err
    assert not (tmp_path / "out" / "state").exists() and not (tmp_path / "out" / "summary.json").exists()


def test_no_credential_of_the_host_reaches_the_terminal_or_the_files(tmp_path, capsys):
    text = plan_text(models=("llama3.1:8b", "nosuch:1b"), budget=1)
    with SimServer(gpus="1xRTX4090", seed=4) as sim:
        url = sim.url.replace("http://", "http://tuner:s3cret-pw@")
        assert qualify(tmp_path, url, text) == 0
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.err + captured.out
    assert "model 2/2 nosuch:1b: FAILED: Ollama at 'http://127.0.0.1:" in captured.err  # named, without them
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".png"]
    assert len(files) > 10
    assert not [p for p in files if "s3cret-pw" in p.read_text(errors="replace")]
