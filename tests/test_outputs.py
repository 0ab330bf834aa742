"""What a run leaves behind: --out checked before trial 1, study names made safe for paths, reports written
whole or not at all, a full disk said in one line with nothing finished lost, and no password anywhere."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.faultproxy import FaultProxy
from tuner.sim import SimServer
from tuner.study import load_records

PLANTED = "Planted-Pw-7319"


def autotune(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, fsize: int | None = None
):
    """`python -m tuner ARGS`; with `fsize`, no file it writes may grow past that many bytes (a full disk)."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    full_env = {k: v for k, v in os.environ.items() if k not in ("TUNER_DEBUG", "OLLAMA_HOST")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=600,
        preexec_fn=limit,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and "AssertionError" not in result.stderr, result.stderr
    return lines[-1]


# -- --out and study names ----------------------------------------------------------------------------------
@pytest.fixture
def sim():
    with SimServer(gpus="1xRTX4090", seed=2) as server:
        yield server


def test_an_unusable_out_is_refused_before_any_trial(sim, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "notes.txt").write_text("mine")
    storage = f"sqlite:///{tmp_path}/s.db"
    cases = [
        (str(tmp_path / "afile"), "is a file, not a folder"),
        (str(tmp_path / "afile" / "sub"), "is not writable"),
        (str(tmp_path / "others"), "already holds other files (notes.txt)"),
        ("../outside", "is outside reports/"),
    ]
    for out, said in cases:
        result = autotune("llama3.1:8b", "--host", sim.url, "--storage", storage, "--out", out, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = one_line(result)
        assert len(result.stderr.strip().splitlines()) == 1 and said in line, line
    assert not (tmp_path / "s.db").exists()  # refused before the study was even opened


def test_a_study_name_cannot_write_outside_reports(sim, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    result = autotune(
        "llama3.1:8b",
        "--host",
        sim.url,
        "--storage",
        storage,
        "--study",
        "../../x",
        "--budget",
        "2",
        "--num-predict",
        "16",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reports" / "x" / "report.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", "s.db", "s.db.lock"]
    assert load_records(storage, "../../x")[0].study_name == "../../x"  # the name itself is kept as given


# -- a full disk --------------------------------------------------------------------------------------------
def test_a_full_disk_under_the_storage_is_one_line_and_loses_nothing_finished(sim, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    common = [
        "llama3.1:8b",
        "--host",
        sim.url,
        "--storage",
        storage,
        "--study",
        "disk",
        "--num-predict",
        "16",
        "--out",
        str(tmp_path / "r"),
        "--heartbeat",
        "1",
        "--sampler",
        "tpe",  # a plain sampler runs its whole budget (ours stops when every deployable config is measured)
    ]
    assert autotune(*common, "--budget", "3").returncode == 0
    _, before = load_records(storage, "disk")
    size = (tmp_path / "s.db").stat().st_size
    full = autotune(*common, "--budget", "40", fsize=size + 8192)  # the database cannot grow much
    assert full.returncode == 1, full.stderr
    line = one_line(full)
    assert line.startswith("autotune: The study storage") and "disk is full or failing" in line, line
    assert "run the same command to resume" in line
    _, after = load_records(storage, "disk")
    done = [r for r in after if r.state == "COMPLETE"]
    assert done[:3] == [r for r in before if r.state == "COMPLETE"]  # nothing finished was lost
    budget = len(done) + 2
    again = autotune(*common, "--budget", str(budget))  # space again: the study resumes
    assert again.returncode == 0, again.stderr
    _, final = load_records(storage, "disk")
    assert sum(r.state == "COMPLETE" for r in final) == budget


def test_a_report_rewrite_on_a_full_disk_leaves_the_previous_report_whole(sim, tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "r"
    first = autotune(
        "llama3.1:8b",
        "--host",
        sim.url,
        "--storage",
        storage,
        "--study",
        "rw",
        "--budget",
        "3",
        "--num-predict",
        "16",
        "--out",
        str(out),
    )
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert max(len(b) for b in before.values()) > 100_000  # report.html holds its figures
    result = autotune("report", "--study", "rw", "--storage", storage, "--out", str(out), fsize=100_000)
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert "Cannot write the report" in line and "the previous report is unchanged" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # every file as it was, no temp files


# -- secrets ------------------------------------------------------------------------------------------------
def test_a_planted_password_appears_in_no_output(tmp_path):
    """The password of --host, OLLAMA_HOST and --storage, through a run, a failed run and a report: nowhere in
    the terminal, the reports, the study database or its attributes; and it did reach the server."""
    storage = f"sqlite:///{tmp_path}/s.db"
    outputs = []
    with SimServer(gpus="1xRTX4090", seed=4) as server, FaultProxy(server.url) as proxy:
        host = proxy.url.replace("http://", f"http://tuner:{PLANTED}@")
        run = autotune(
            "llama3.1:8b",
            "--host",
            host,
            "--storage",
            storage,
            "--study",
            "secret",
            "--budget",
            "3",
            "--num-predict",
            "16",
            "--out",
            str(tmp_path / "r"),
        )
        assert run.returncode == 0, run.stderr
        outputs.append(run)
        env_run = autotune(
            "llama3.1:8b",
            "--storage",
            storage,
            "--study",
            "secret",
            "--budget",
            "3",
            "--out",
            str(tmp_path / "r"),
            env={"OLLAMA_HOST": host},
        )
        assert env_run.returncode == 0, env_run.stderr
        outputs.append(env_run)
        assert proxy.authorizations, "the credentials were sent"
        bad_storage = autotune(
            "llama3.1:8b",
            "--host",
            proxy.url,
            "--storage",
            f"postgresql://tuner:{PLANTED}@127.0.0.1:9/optuna",
        )
        assert bad_storage.returncode == 2 and "'postgresql://tuner:***@127.0.0.1:9/optuna'" in one_line(
            bad_storage
        )
        outputs.append(bad_storage)
    down = autotune("llama3.1:8b", "--host", f"http://tuner:{PLANTED}@127.0.0.1:9", "--storage", storage)
    assert down.returncode == 1 and "Cannot reach Ollama at 'http://127.0.0.1:9'" in one_line(down)
    outputs.append(down)
    report = autotune("report", "--study", "secret", "--storage", storage, "--out", str(tmp_path / "r2"))
    assert report.returncode == 0, report.stderr
    outputs.append(report)

    for result in outputs:
        assert PLANTED not in result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.name == "s.db" for p in files)
    for path in files:
        assert PLANTED.encode() not in path.read_bytes(), path
    study = optuna.load_study(study_name="secret", storage=storage)
    assert PLANTED not in repr(study.user_attrs) + repr([t.user_attrs for t in study.trials])


def test_a_damaged_database_is_one_line(sim, tmp_path):
    (tmp_path / "s.db").write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    storage = f"sqlite:///{tmp_path}/s.db"
    for args in (
        ["llama3.1:8b", "--host", sim.url, "--storage", storage, "--out", str(tmp_path / "r")],
        ["report", "--study", "x", "--storage", storage, "--out", str(tmp_path / "r")],
    ):
        result = autotune(*args)
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        line = one_line(result)
        assert "The study storage" in line and "is damaged" in line and "move the file away" in line, line
