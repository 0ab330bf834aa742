"""A qualification plan on PostgreSQL: two `autotune qualify` workers of one machine share its studies, one is
killed mid-trial and the plan finishes with no trial lost or duplicated and each soak run once; a second
machine runs the same plan, and `autotune qualify PLAN --summary` compares the hosts from the storage alone.

Needs a PostgreSQL server: AUTOTUNE_TEST_POSTGRES (scripts/postgres start), see tests/pgdb.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import optuna

from tests.pgdb import pg_storage  # noqa: F401 - the fixture
from tests.test_fleet import HERE, _database_text, _env, two_workers_one_killed
from tuner.qualify.fleet import host_studies
from tuner.qualify.plan import load_plan
from tuner.sim import SimServer
from tuner.storage import close_storage, make_storage, study_names
from tuner.study import load_records

PLAN = """
name = "fleet-a"
budget_per_model = 4
time_budget_h = 2
soak_minutes = 0.02
heat_soak_minutes = 0
depth_steps = 0
soak_num_predict = 16
num_predict = 32
remeasure_rounds = 0
heartbeat_s = 1

[[models]]
model = "llama3.1:8b"

[[models]]
model = "qwen2.5:7b"

[[criteria]]
name = "fast enough"
metric = "decode_tok_s"
min = 20

[[criteria]]
name = "faster than any GPU today"
metric = "decode_tok_s"
min = 100000
models = ["qwen2.5:7b"]
"""


def _qualify(plan: Path, url: str, storage: str, out: Path, *, die: bool = False, summary: bool = False):
    args = ["qualify", str(plan), "--storage", storage, "--out", str(out)]
    args += ["--summary"] if summary else ["--host", url]
    if die:
        return [sys.executable, str(HERE / "die_mid_trial.py"), "1", *args]
    return [sys.executable, "-m", "tuner", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)


def _trial_workers(storage: str, name: str) -> list[tuple[str, int]]:
    opened = make_storage(storage)
    try:
        trials = optuna.load_study(study_name=name, storage=opened).get_trials(deepcopy=False)
        return [(t.state.name, int(t.user_attrs.get("worker", {}).get("pid", 0))) for t in trials]
    finally:
        close_storage(opened)


def test_two_qualify_workers_one_killed_then_a_fleet_summary(pg_storage, tmp_path):  # noqa: F811
    password = urllib.parse.urlsplit(pg_storage).password or ""
    assert len(password) >= 8
    plan_path = tmp_path / "fleet-a.toml"
    plan_path.write_text(PLAN, encoding="utf-8")
    plan = load_plan(str(plan_path))
    outs = [tmp_path / "w0", tmp_path / "w1"]
    with SimServer(gpus="1xRTX4090", seed=21) as sim:
        commands = [_qualify(plan_path, sim.url, pg_storage, out, die=True) for out in outs]
        codes, errs = two_workers_one_killed(commands, tmp_path / "go", tmp_path)
        assert sorted(codes) == [-signal.SIGKILL, 0], errs
        survivor, dead = codes.index(0), codes.index(-signal.SIGKILL)
        # the killed worker's command again: everything is finished, by the other worker
        again = _run(_qualify(plan_path, sim.url, pg_storage, outs[dead]))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("finished earlier") == 2, again.stderr

    (machine,) = host_studies(plan, study_names(pg_storage)).values()  # one machine: one set of studies
    assert set(machine) == {"llama3.1:8b", "qwen2.5:7b"}
    failed = []
    for model, name in machine.items():
        _, records = load_records(pg_storage, name)
        complete = [(r.tag, r.num_gpu, r.num_ctx) for r in records if r.state == "COMPLETE"]
        assert len(complete) == 4, (model, [r.state for r in records])  # nothing lost
        assert len(set(complete)) == 4, f"{model}: a config was measured twice"
        assert not [r for r in records if r.state == "RUNNING"]
        for r in records:
            if r.state == "FAIL":  # the killed worker's trial: run again once, after it
                failed.append(r)
                assert complete.count((r.tag, r.num_gpu, r.num_ctx)) == 1
    assert len(failed) == 1, failed  # exactly one trial was killed
    assert f"recovered trial #{failed[0].number}" in errs[survivor] and "no heartbeat" in errs[survivor]
    states = {model: _trial_workers(pg_storage, name) for model, name in machine.items()}
    assert len({pid for s in states.values() for _, pid in s}) == 2, states  # both workers measured
    soaks = sum(e.count("] soak at ") for e in [*errs, again.stderr])
    summaries = [json.loads((out / "summary.json").read_text()) for out in outs]
    for s in summaries:
        assert s["complete"] and s["totals"]["done"] == 2, s["totals"]
    assert all(m["soak"] for m in summaries[survivor]["models"])  # each model soaked
    assert soaks == 2  # one soak per model on this machine, by whichever worker got there first

    # A second machine (the same card model, another UUID) runs the same plan on the same storage.
    with SimServer(gpus="1xRTX4090", seed=22, machine="host-b") as sim:
        other = _run(_qualify(plan_path, sim.url, pg_storage, tmp_path / "host-b"))
    assert other.returncode == 0, other.stderr
    fleet_out = tmp_path / "fleet"
    summary = _run(_qualify(plan_path, "", pg_storage, fleet_out, summary=True))
    assert summary.returncode == 0, summary.stderr
    fleet = json.loads((fleet_out / "fleet.json").read_text())
    assert len(fleet["hosts"]) == 2 and fleet["hosts"][0]["fleet_id"] != fleet["hosts"][1]["fleet_id"]
    uuids = [h["fingerprint"]["gpus"][0]["uuid"] for h in fleet["hosts"]]
    assert len(set(uuids)) == 2 and all(u.startswith("GPU-") for u in uuids)
    for host in fleet["hosts"]:
        verdicts = {(m["model"], v["criterion"]): v["verdict"] for m in host["models"] for v in m["verdicts"]}
        assert verdicts == {
            ("llama3.1:8b", "c1"): "pass",
            ("qwen2.5:7b", "c1"): "pass",
            ("qwen2.5:7b", "c2"): "fail",
        }
        assert [m["trials"] for m in host["models"]] == [4, 4]
        assert [bool(m["best"]) for m in host["models"]] == [True, True]
        assert any("PCIe gen" in line for line in host["details"])
    assert "2 host(s)" in summary.stderr and "PASS" in summary.stderr and "FAIL" in summary.stderr
    for host in fleet["hosts"]:  # the soak's figures came from the storage, for both hosts
        assert all(m["soak"]["soak_decode_tok_s"] > 0 for m in host["models"])
    soak_rows = [line for line in summary.stderr.splitlines() if " soak tok/s " in line]
    assert len(soak_rows) == 2 and "–" not in "".join(soak_rows)
    # no password anywhere: the terminal, the summaries, the reports
    outputs = errs + [again.stdout, again.stderr, other.stdout, other.stderr, summary.stdout, summary.stderr]
    assert not [o for o in outputs if password in o]
    assert password not in _database_text(pg_storage)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("go", "go.claimed"):
            assert password.encode() not in path.read_bytes(), path
