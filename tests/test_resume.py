"""A study killed mid-trial resumes where it stopped: no finished trial lost, none run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tuner.sim import SimServer
from tuner.study import load_records


def start_autotune(url: str, storage: str, budget: int, out: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner",
            "llama3.1:8b",
            "--host",
            url,
            "--budget",
            str(budget),
            "--storage",
            storage,
            "--study",
            "resume",
            "--out",
            out,
            "--num-predict",
            "32",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"},
    )


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    # realtime: the simulator sleeps its durations, so a trial takes long enough to be killed inside it
    with SimServer(gpus="1xRTX4090", seed=5, realtime=True) as sim:
        proc = start_autotune(sim.url, storage, 12, str(tmp_path / "r"))
        seen = 0
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        while seen < 3 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += "trial " in line
        assert seen == 3, "the study did not get going"
        time.sleep(0.4)  # well inside trial 4 (a load alone takes seconds here)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    _, before = load_records(storage, "resume")
    done_before = [r for r in before if r.state == "COMPLETE"]
    assert len(done_before) == 3 and [r.state for r in before].count("RUNNING") == 1

    with SimServer(gpus="1xRTX4090", seed=6) as sim:  # not realtime: finish quickly
        proc = start_autotune(sim.url, storage, 12, str(tmp_path / "r"))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    _, after = load_records(storage, "resume")
    done_after = [r for r in after if r.state == "COMPLETE"]
    assert len(done_after) == 12
    assert done_after[:3] == done_before  # the finished trials, untouched
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
