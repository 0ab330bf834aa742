"""The fault suite: a misbehaving proxy on loopback (tests/faultproxy.py) in front of the simulator, and the
whole CLI through it. Each fault is asserted by its outcome (what the study stored), its message and the exit
code; none by how long anything took."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.faultproxy import FaultProxy
from tuner.cli import main
from tuner.sim import SimServer
from tuner.study import load_records

MODEL = "llama3.1:8b"
GENERATION = "[run "  # in the body of a measured or warm-up generation, not of a load or an unload
# Small limits so that each fault costs a second or two; backoff 0 so retries do not wait.
FAST = ["--num-predict", "16", "--read-timeout", "0.5", "--generate-timeout", "2", "--load-timeout", "5"]
FAST += ["--retries", "2", "--retry-backoff", "0", "--server-wait", "3", "--heartbeat", "1"]


@pytest.fixture
def proxy():
    with SimServer(gpus="1xRTX4090", seed=3) as sim, FaultProxy(sim.url) as px:
        px.sim_url = sim.url  # type: ignore[attr-defined]
        yield px


def tune(host: str, tmp_path: Path, *extra: str, budget: int = 3, study: str = "faults") -> int:
    args = [MODEL, "--host", host, "--budget", str(budget), "--storage", f"sqlite:///{tmp_path}/s.db"]
    args += ["--study", study, "--out", str(tmp_path / "r"), *FAST, *extra]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def last_line(err: str) -> str:
    return [line for line in err.splitlines() if line.strip()][-1]


def configs(records) -> list[tuple[str, int, int]]:
    return [(r.tag, r.num_gpu, r.num_ctx) for r in records if r.state == "COMPLETE"]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("trickle", "--generate-timeout"),  # a byte every 0.1 s: never silent, never done
        ("silence", "--generate-timeout"),  # no answer at all
        ("stall", "no byte for 0.5 s (--read-timeout)"),  # the answer starts, then stops
        ("garbage", "not Ollama's JSON"),
        ("reset", "broke the connection"),
        ("5xx", "HTTP 500"),
        ("cut", "without its final chunk"),  # real Ollama ends an aborted generation so
    ],
)
def test_a_transient_fault_is_retried_and_recorded_on_the_trial(proxy, tmp_path, capsys, kind, reason):
    proxy.inject("/api/generate", kind, body_has=GENERATION, after=5, delay_s=0.1)
    assert tune(proxy.url, tmp_path) == 0
    err = capsys.readouterr().err
    assert proxy.faults_done == [("/api/generate", kind)]
    assert "Retrying" in err and "Traceback" not in err
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "faults")
    assert [r.state for r in records] == ["COMPLETE"] * 3  # nothing lost, nothing extra
    (retried,) = [r for r in records if r.attempts]
    assert len(retried.attempts) == 1 and reason in retried.attempts[0], retried.attempts
    assert retried.decode_tok_s and retried.decode_tok_s > 0  # the retry measured it
    assert len(set(configs(records))) == 3


@pytest.mark.parametrize("kind", ["5xx", "garbage"])
def test_a_server_that_keeps_failing_stops_the_study_in_one_line_and_keeps_each_reason(
    proxy, tmp_path, capsys, kind
):
    proxy.inject("/api/generate", kind, body_has=GENERATION, times=10**6)
    assert tune(proxy.url, tmp_path, budget=5) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = last_line(err)
    assert line.startswith("autotune: 3 trials in a row failed") and "run the same command to resume" in line
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "faults")
    assert [r.state for r in records] == ["FAIL"] * 3
    for r in records:  # each failed trial keeps why, and every attempt
        assert "3 attempts failed (--retries 2)" in r.error and len(r.attempts) == 3
    # the rebuilt report lists each failed trial with its reason
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "report",
                "--study",
                "faults",
                "--storage",
                f"sqlite:///{tmp_path}/s.db",
                "--out",
                str(tmp_path / "r"),
            ]
        )
    assert exit_info.value.code == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Unfinished or failed trials" in report and report.count("3 attempts failed") == 3


def test_garbage_at_the_start_is_one_line(proxy, tmp_path, capsys):
    proxy.inject("/api/version", "garbage")
    assert tune(proxy.url, tmp_path) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "answered /api/version with something that is not Ollama" in err and "--host" in err


def test_a_server_that_goes_down_pauses_the_study_until_it_is_back(proxy, tmp_path, capsys):
    proxy.inject("/api/generate", "down", body_has=GENERATION, after=5, seconds=1.5)
    assert tune(proxy.url, tmp_path, "--server-wait", "60") == 0
    err = capsys.readouterr().err
    assert proxy.down_periods == 1
    assert "the server stopped answering" in err and "the server is back after" in err
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "faults")
    assert [r.state for r in records] == ["COMPLETE"] * 3
    (paused,) = [r for r in records if r.attempts]
    assert any(a.startswith("server down for") for a in paused.attempts), paused.attempts


def test_a_server_that_stays_down_ends_the_study_with_the_report_of_what_finished(proxy, tmp_path, capsys):
    proxy.inject("/api/generate", "down", body_has="[run 201]", seconds=600)  # inside the third trial
    assert tune(proxy.url, tmp_path, "--server-wait", "1", budget=5) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "still down after waiting 1 s (--server-wait)" in last_line(err)
    assert "report of the 2 finished trial(s)" in err
    assert (tmp_path / "r" / "report.md").is_file()
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "faults")
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE", "FAIL"]


def test_a_trial_whose_server_changed_under_it_is_discarded_and_run_again(proxy, tmp_path, capsys):
    """Another client loads a model in the middle of a trial: /api/ps no longer shows ours alone, the
    measurement is thrown away and the trial measured again; nothing of the intrusion is recorded."""
    proxy.inject("/api/generate", "intrude", body_has=GENERATION, after=5, model="llama3.1:8b-instruct-q8_0")
    assert tune(proxy.url, tmp_path) == 0
    err = capsys.readouterr().err
    assert "measurement is discarded" in err
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "faults")
    assert [r.state for r in records] == ["COMPLETE"] * 3
    (retried,) = [r for r in records if r.attempts]
    assert "llama3.1:8b-instruct-q8_0" in retried.attempts[0]
    assert retried.size_vram_bytes and retried.gpu_fraction is not None
    assert httpx.get(proxy.sim_url + "/api/ps").json()["models"] == []  # ours unloaded, the intruder too


# -- signals: a real process, stopped inside a trial ------------------------------------------------------
def _autotune(host: str, tmp_path: Path, budget: int = 4) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tuner", MODEL, "--host", host, "--budget", str(budget)]
    args += ["--storage", f"sqlite:///{tmp_path}/s.db", "--study", "sig", "--out", str(tmp_path / "r"), *FAST]
    args += ["--generate-timeout", "600"]  # the held generation must still be waiting when the signal comes
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_inside_a_trial_unloads_writes_the_report_and_exits_cleanly(
    proxy, tmp_path, sig, code, said
):
    proxy.inject("/api/generate", "hold", body_has="[run 201]", seconds=120)  # the third trial's warm-up
    proc = _autotune(proxy.url, tmp_path)
    try:
        assert proxy.held.wait(timeout=120), "the third trial never started"
        assert httpx.get(proxy.sim_url + "/api/ps").json()["models"], "its model is loaded"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert last_line(err).startswith(f"autotune: {said}; finished trials are stored")
    assert "report of the 2 finished trial(s)" in err
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "trials.csv").is_file()
    assert httpx.get(proxy.sim_url + "/api/ps").json()["models"] == []  # our model was unloaded
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "sig")
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE", "FAIL"]

    proxy.clear()
    rerun = _autotune(proxy.url, tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "recovered trial #2" in err  # the rerun says what it took over
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "sig")
    assert sum(r.state == "COMPLETE" for r in records) == 4
    stopped = records[2]
    assert configs(records).count((stopped.tag, stopped.num_gpu, stopped.num_ctx)) == 1


def test_a_trial_past_its_whole_deadline_fails_with_the_reason_and_the_study_goes_on(proxy, tmp_path, capsys):
    proxy.inject("/api/generate", "hold", body_has="[run 101]", seconds=120)  # the second trial's warm-up
    code = tune(proxy.url, tmp_path, "--trial-timeout", "8", "--generate-timeout", "600")
    assert code == 0
    err = capsys.readouterr().err
    assert "failed: the trial ran past --trial-timeout 8 s" in err
    _, records = load_records(f"sqlite:///{tmp_path}/s.db", "faults")
    assert [r.state for r in records] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert records[1].error.startswith("the trial ran past --trial-timeout 8 s")
