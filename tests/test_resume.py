"""A study killed mid-trial resumes where it stopped: no finished trial lost, none run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from tuner.sim import SimServer
from tuner.study import load_records

HERE = Path(__file__).resolve().parent


def autotune(url: str, storage: str, budget: int, out: str, *, die_in_trial: int | None = None):
    """`python -m tuner ...`, or the same command dying (SIGKILL) inside trial `die_in_trial`."""
    args = ["llama3.1:8b", "--host", url, "--budget", str(budget), "--storage", storage, "--study", "resume"]
    args += ["--out", out, "--num-predict", "32", "--heartbeat", "1"]
    cmd = [sys.executable, "-m", "tuner", *args]
    if die_in_trial is not None:
        cmd = [sys.executable, str(HERE / "die_mid_trial.py"), str(die_in_trial), *args]
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_sigkill_mid_trial_then_resume(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    with SimServer(gpus="1xRTX4090", seed=5) as sim:
        killed = autotune(sim.url, storage, 8, str(tmp_path / "r"), die_in_trial=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stderr.count("trial ") == 3, "three trials finished before the kill"
    _, before = load_records(storage, "resume")
    done_before = [r for r in before if r.state == "COMPLETE"]
    assert len(done_before) == 3 and [r.state for r in before].count("RUNNING") == 1

    with SimServer(gpus="1xRTX4090", seed=6) as sim:
        resumed = autotune(sim.url, storage, 8, str(tmp_path / "r"))
        assert resumed.returncode == 0, resumed.stderr
    _, after = load_records(storage, "resume")
    done_after = [r for r in after if r.state == "COMPLETE"]
    assert len(done_after) == 8  # (an 8B on a 24 GB card has nine configs a user would deploy)
    # the finished trials, untouched (the re-measure after the budget adds its samples only when read back)
    assert [replace(r, remeasure_samples=[]) for r in done_after[:3]] == done_before
    interrupted = [r for r in after if r.state == "FAIL"]
    assert len(interrupted) == 1
    # its config was run again exactly once, after the resume
    again = [
        r
        for r in done_after
        if (r.tag, r.num_gpu, r.num_ctx)
        == (interrupted[0].tag, interrupted[0].num_gpu, interrupted[0].num_ctx)
    ]
    assert len(again) == 1 and again[0].number > interrupted[0].number
    # the rerun says what it took over: found by its stopped heartbeat, not by host name or PID
    assert f"recovered trial #{interrupted[0].number}" in resumed.stderr
    assert "no heartbeat" in resumed.stderr
