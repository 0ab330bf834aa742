"""A study on PostgreSQL (the fleet's shared storage): `autotune tune --storage postgresql://...` runs and
resumes there, its password reaches no output, report or row; two workers share one study and a worker
killed mid-trial is failed by its heartbeat and its trial run again by the other, nothing lost or doubled.

Needs a PostgreSQL server: AUTOTUNE_TEST_POSTGRES (scripts/postgres start), see tests/pgdb.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from tests.pgdb import pg_storage  # noqa: F401 - the fixture
from tuner.sim import SimServer
from tuner.study import load_records

HERE = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}


def _tune(url: str, storage: str, out: Path, budget: int, *, die_in_trial: int | None = None) -> list[str]:
    args = ["tune", "llama3.1:8b", "--host", url, "--budget", str(budget), "--storage", storage]
    args += ["--study", "fleet", "--out", str(out), "--num-predict", "32", "--heartbeat", "1"]
    if die_in_trial is not None:
        return [sys.executable, str(HERE / "die_mid_trial.py"), str(die_in_trial), *args]
    return [sys.executable, "-m", "tuner", *args]


def _password(storage: str) -> str:
    password = urllib.parse.urlsplit(storage).password
    assert password and len(password) >= 8  # scripts/postgres makes a random one: the test looks for it
    return password


def _database_text(storage: str) -> str:
    """Every row of every table in the database, as text."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(storage)
    chunks = []
    try:
        with engine.connect() as conn:
            for table in sqlalchemy.inspect(conn).get_table_names():
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    chunks.append(" ".join(str(v) for v in row))
    finally:
        engine.dispose()
    return "\n".join(chunks)


def test_tune_on_postgresql_keeps_the_password_out_of_every_output(pg_storage, tmp_path):  # noqa: F811
    password = _password(pg_storage)
    out = tmp_path / "r"
    with SimServer(gpus="1xRTX4090", seed=3) as sim:
        run = subprocess.run(
            _tune(sim.url, pg_storage, out, 3), capture_output=True, text=True, env=_env(), timeout=300
        )
    assert run.returncode == 0, run.stderr
    _, records = load_records(pg_storage, "fleet")
    assert [r.state for r in records].count("COMPLETE") == 3
    assert len(records) == 3
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    assert password not in run.stdout + run.stderr
    for path in files:
        assert password.encode() not in path.read_bytes(), path
    text = _database_text(pg_storage)
    assert "trial_user_attributes" not in text and "fleet" in text  # the rows, not the names, were read
    assert password not in text

    # The same command with a larger budget resumes the study on PostgreSQL: the finished trials kept.
    with SimServer(gpus="1xRTX4090", seed=4) as sim:
        more = subprocess.run(
            _tune(sim.url, pg_storage, out, 4), capture_output=True, text=True, env=_env(), timeout=300
        )
    assert more.returncode == 0, more.stderr
    assert password not in more.stdout + more.stderr
    _, after = load_records(pg_storage, "fleet")
    assert [r.state for r in after] == ["COMPLETE"] * 4
    assert [(r.number, r.decode_tok_s) for r in after[:3]] == [(r.number, r.decode_tok_s) for r in records]

    # A wrong password: one line naming the storage with the password masked, no traceback.
    wrong = pg_storage.replace(f":{password}@", ":not-the-password-1234@")
    with SimServer(gpus="1xRTX4090", seed=3) as sim:
        bad = subprocess.run(
            _tune(sim.url, wrong, out, 3), capture_output=True, text=True, env=_env(), timeout=120
        )
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "not-the-password-1234" not in bad.stdout + bad.stderr
    assert "postgresql+psycopg://autotune:***@127.0.0.1" in bad.stderr, bad.stderr
    assert "password authentication failed" in bad.stderr and "check the server, user, password" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def _wait_for(predicate, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def two_workers_one_killed(commands, go: Path, logs: Path) -> tuple[list[int], list[str]]:
    """Start both commands (die_mid_trial.py with DIE_ONCE_AFTER=go), say go once both are in the study (one
    finished a trial, the other waits for the server), and return their exit codes and stderr."""
    env = {**_env(), "DIE_ONCE_AFTER": str(go)}
    errs = [logs / f"w{i}.err" for i in range(len(commands))]
    procs = []
    for cmd, err in zip(commands, errs):
        with open(err, "w") as fh:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, text=True, env=env))
    try:
        _wait_for(
            lambda: (
                any("waiting for the tuner of study" in e.read_text() for e in errs)
                and any(re.search(r"trial \d+/\d+", e.read_text()) for e in errs)
            ),
            "both workers in the study",
        )
        go.touch()  # the worker on the server now dies in its next trial, after the load
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes, [e.read_text() for e in errs]


def test_two_workers_on_postgresql_one_killed_mid_trial(pg_storage, tmp_path):  # noqa: F811
    budget = 6
    with SimServer(gpus="1xRTX4090", seed=7) as sim:
        commands = [_tune(sim.url, pg_storage, tmp_path / f"r{i}", budget, die_in_trial=1) for i in range(2)]
        codes, errs = two_workers_one_killed(commands, tmp_path / "go", tmp_path)
    assert sorted(codes) == [-signal.SIGKILL, 0], errs
    survivor = errs[codes.index(0)]
    _, records = load_records(pg_storage, "fleet")
    states = [r.state for r in records]
    assert states.count("RUNNING") == 0
    (killed,) = [r for r in records if r.state == "FAIL"]  # the dead worker's trial, failed by its heartbeat
    assert f"recovered trial #{killed.number}" in survivor and "no heartbeat" in survivor, survivor
    complete = [(r.tag, r.num_gpu, r.num_ctx) for r in records if r.state == "COMPLETE"]
    assert len(complete) == budget  # nothing lost
    assert len(set(complete)) == len(complete), "a config was measured twice"
    again = [
        r
        for r in records
        if r.state == "COMPLETE"
        and (r.tag, r.num_gpu, r.num_ctx) == (killed.tag, killed.num_gpu, killed.num_ctx)
    ]
    assert len(again) == 1 and again[0].number > killed.number  # run again, once, by the survivor
    assert len(_worker_pids(pg_storage, "fleet")) == 2  # both workers measured


def _worker_pids(storage: str, study_name: str) -> set[int]:
    import optuna

    from tuner.storage import close_storage, make_storage

    opened = make_storage(storage)
    try:
        trials = optuna.load_study(study_name=study_name, storage=opened).get_trials(deepcopy=False)
        return {int(t.user_attrs["worker"]["pid"]) for t in trials if "worker" in t.user_attrs}
    finally:
        close_storage(opened)


def test_the_server_row_lock_on_postgresql(pg_storage):  # noqa: F811
    """Hosts sharing one remote server take turns through a lease row in the shared database."""
    import threading

    from tuner.serverlock import Locks, RowLock, server_lock

    lock = server_lock("http://10.0.0.5:11434", pg_storage, "s", 90)
    assert isinstance(lock, Locks) and isinstance(lock.locks[1], RowLock)  # the file lock, and the row
    lock.locks[1].close()
    a = RowLock(pg_storage, "http://gpu-box:11434", "a", lease_s=60, poll_s=0.01)
    b = RowLock(pg_storage, "http://gpu-box:11434", "b", lease_s=60, poll_s=0.01)
    c = RowLock(pg_storage, "http://gpu-box:11434", "c", lease_s=60, poll_s=0.01)
    try:
        a.acquire(print)
        notes: list[str] = []
        taker = threading.Thread(target=b.acquire, args=(notes.append,))
        taker.start()
        _wait_for(lambda: bool(notes), "b to wait")
        assert "study 'a'" in notes[0] and "one tuner per server" in notes[0]
        assert taker.is_alive()  # still waiting: a holds the row
        a.release()
        taker.join(timeout=30)
        assert not taker.is_alive()
        b._stop.set()  # b's host dies: its lease is no longer renewed, and has run out
        b._renewer.join()  # type: ignore[union-attr]
        with b._engine.begin() as conn:
            conn.execute(b._sa.update(b._table).values(expires_at=time.time() - 1))
        said: list[str] = []
        c.acquire(said.append)  # takes the server at once
        assert said == []
        c.release()
    finally:
        for held in (a, b, c):
            held.close()
