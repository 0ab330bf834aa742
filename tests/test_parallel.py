"""Several workers, one server: one trial at a time on it, the budget exact, no config twice, no trial
reading another's model; a new SQLite storage made by three workers at once; and a worker killed under
another host name taken over by its heartbeat, not by host name or PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_resume import autotune as resumable
from tuner.sim import SimServer
from tuner.study import load_records
from tuner.units import GiB

HERE = Path(__file__).resolve().parent


def _worker(url: str, storage: str, out: Path, budget: int) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tuner", "llama3.1:8b", "--quant", "q4_K_M,q8_0", "--host", url]
    args += ["--budget", str(budget), "--storage", storage, "--study", "par", "--out", str(out)]
    args += ["--num-predict", "16", "--heartbeat", "1"]
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_three_workers_on_one_server_and_a_new_storage(tmp_path):
    storage = f"sqlite:///{tmp_path}/new/s.db"  # created by the three at once
    budget = 12
    with SimServer(gpus="1xRTX4090", seed=11) as sim:
        procs = [_worker(sim.url, storage, tmp_path / f"r{i}", budget) for i in range(3)]
        results = [p.communicate(timeout=600) for p in procs]
    errs = [err for _, err in results]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert not any("Traceback" in e or "IntegrityError" in e for e in errs)
    assert any("waiting for the tuner of study 'par'" in e for e in errs)  # one waited, and said so
    _, records = load_records(storage, "par")
    complete = [r for r in records if r.state == "COMPLETE"]
    assert len(complete) == budget and len(records) == budget  # the budget exactly, nothing failed
    keys = [(r.tag, r.num_gpu, r.num_ctx) for r in complete]
    assert len(set(keys)) == len(keys), "a config was measured twice"
    for r in complete:  # nothing measured another worker's model
        if r.decode_tok_s is None:
            continue
        if not r.baseline:
            assert r.context_length_loaded == r.num_ctx, r
        if r.num_gpu == 0:
            assert (r.peak_vram_bytes or 0) < 0.5 * GiB, r  # CPU only: no GPU memory of its own
        assert r.size_vram_bytes is not None and (r.peak_vram_bytes or 0) >= 0.8 * r.size_vram_bytes, r


def test_a_worker_killed_under_another_host_name_is_taken_over_by_its_heartbeat(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    with SimServer(gpus="1xRTX4090", seed=5) as sim:
        env = {**os.environ, "DIE_AS_HOST": "another-container"}
        cmd = [sys.executable, str(HERE / "die_mid_trial.py"), "2", "llama3.1:8b", "--host", sim.url]
        cmd += ["--budget", "6", "--storage", storage, "--study", "resume", "--out", str(tmp_path / "r")]
        cmd += ["--num-predict", "32", "--heartbeat", "1"]
        killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode < 0, killed.stderr
    _, before = load_records(storage, "resume")
    (stranded,) = [r for r in before if r.state == "RUNNING"]
    with SimServer(gpus="1xRTX4090", seed=6) as sim:
        resumed = resumable(sim.url, storage, 6, str(tmp_path / "r"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"recovered trial #{stranded.number}" in resumed.stderr and "no heartbeat" in resumed.stderr
    _, after = load_records(storage, "resume")
    done = [(r.tag, r.num_gpu, r.num_ctx) for r in after if r.state == "COMPLETE"]
    assert len(done) == 6 and done.count((stranded.tag, stranded.num_gpu, stranded.num_ctx)) == 1
    assert [r.state for r in after].count("RUNNING") == 0
