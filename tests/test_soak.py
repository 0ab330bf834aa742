"""A 300-trial soak through the CLI against the simulator (which does not sleep): the tuner's memory does
not grow (under 50 MB from trial 50 to trial 300), with a plain sampler, since our structured search stops
once every config a user would deploy is measured; given the same 300 trials, our search measures no config
twice and says why it stopped early (tests/test_search.py holds it to that at every budget)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psutil
import pytest

from tuner.sim import SimServer
from tuner.study import load_records

BUDGET = 300
AFTER = 50  # the first trials fill caches and imports; growth is measured from here on
MiB = 1024 * 1024


@pytest.mark.slow
def test_a_300_trial_study_keeps_its_memory(tmp_path):
    storage = f"sqlite:///{tmp_path}/soak.db"
    with SimServer(gpus="2xRTX4090", seed=13) as sim:
        args = [
            sys.executable,
            "-m",
            "tuner",
            "llama3.1:8b",
            "--quant",
            "q4_K_M,q8_0,fp16",
            "--host",
            sim.url,
        ]
        args += [
            "--budget",
            str(BUDGET),
            "--storage",
            storage,
            "--study",
            "soak",
            "--out",
            str(tmp_path / "r"),
            "--sampler",
            "tpe",
        ]
        args += ["--num-predict", "8", "--max-repeats", "3", "--heartbeat", "5"]
        env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        child = psutil.Process(proc.pid)
        rss: dict[int, int] = {}
        lines: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = re.match(r"trial (\d+)/", line)
            if match:
                rss[int(match.group(1))] = child.memory_info().rss
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == 0, "".join(lines[-20:])
    _, records = load_records(storage, "soak")
    complete = [r for r in records if r.state == "COMPLETE"]
    assert len(complete) == BUDGET and len(records) == BUDGET
    growth = max(v for n, v in rss.items() if n >= AFTER) - rss[AFTER]
    print(
        f"soak: RSS at trial {AFTER} {rss[AFTER] / MiB:.1f} MiB, growth to trial {BUDGET} {growth / MiB:.1f} MiB"
    )
    assert growth < 50 * MiB


@pytest.mark.slow
def test_our_search_given_300_trials_stops_rather_than_repeat_a_config(tmp_path):
    storage = f"sqlite:///{tmp_path}/soak.db"
    with SimServer(gpus="2xRTX4090", seed=13) as sim:
        args = ["llama3.1:8b", "--quant", "q4_K_M,q8_0,fp16", "--host", sim.url, "--budget", str(BUDGET)]
        args += ["--storage", storage, "--study", "soak", "--out", str(tmp_path / "r"), "--num-predict", "8"]
        args += ["--max-repeats", "3", "--remeasure-rounds", "0"]
        env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
        proc = subprocess.run(
            [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, env=env, timeout=600
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, records = load_records(storage, "soak")
    complete = [r for r in records if r.state == "COMPLETE"]
    keys = [(r.tag, r.num_gpu, r.num_ctx) for r in complete]
    assert len(set(keys)) == len(keys), "a config was measured twice"
    assert 0 < len(complete) < BUDGET and f"stopping after {len(complete)} of {BUDGET} trials" in proc.stderr
