"""The whole pipeline against real Ollama, once per release built: the study and every output, its
Modelfiles taken by the real `ollama create`, --apply, a load real Ollama refuses for lack of memory, and
kill-and-resume. The machine has no GPU, so every config runs on the CPU: this checks that autotune drives
a real server correctly, not which config is fastest (the simulator's GPUs are for that)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.conftest import LONG_MODEL, TEST_PARAMETERS, RealOllama, get_real_ollama, ollama_releases
from tuner.cli import main
from tuner.errors import is_out_of_memory
from tuner.modelfile import parse_modelfile
from tuner.study import load_records

pytestmark = pytest.mark.engine
_TEST_PARAMETERS = {k: str(v) for k, v in TEST_PARAMETERS.items()}  # baked into the test models


@pytest.fixture(scope="module", params=ollama_releases())
def real(
    request: pytest.FixtureRequest,
    real_ollama_pool: dict[str, RealOllama],
    real_ollama_base: Path,
    served_models: dict[str, Path],
) -> RealOllama:
    return get_real_ollama(request.param, real_ollama_pool, real_ollama_base, served_models)


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def _show(real: RealOllama, name: str) -> dict:
    r = httpx.post(real.url + "/api/show", json={"model": name}, timeout=30)
    r.raise_for_status()
    return r.json()


def _parameters(show: dict) -> dict[str, str]:
    return dict(line.split(None, 1) for line in (show.get("parameters") or "").splitlines())


def test_study_writes_every_output_and_real_ollama_takes_its_modelfiles(
    real: RealOllama, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    storage = f"sqlite:///{tmp_path}/s.db"
    applied = f"tiny-tuned-{real.version.replace('.', '-')}"
    args = ["tiny-llama", "--quant", "q4_K_M,q8_0", "--budget", "8", "--host", real.url]
    args += ["--storage", storage, "--out", str(out), "--num-predict", "32", "--apply", applied]
    args += ["--remeasure-rounds", "2"]  # the interleaved re-measure against a real server, kept short
    assert run_cli(args) == 0

    for name in ("report.html", "report.md", "trials.csv", "pareto.png", "best.Modelfile"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["tag"] for r in rows} == {"tiny-llama:q4_K_M", "tiny-llama:q8_0"}
    measured = [r for r in rows if r["decode_tok_s"]]
    assert measured and all(float(r["decode_tok_s"]) > 0 for r in measured)
    meta, records = load_records(storage, "tiny-llama-q4_k_m-q8_0")
    assert meta.fingerprint["server"]["version"] == real.version  # type: ignore[index]
    assert len({(r.tag, r.num_gpu, r.num_ctx) for r in records}) == len(records)  # no config twice

    picks = sorted(out.glob("pick-*.Modelfile"))
    assert picks
    for path in [out / "best.Modelfile", *picks]:
        wanted = parse_modelfile(path.read_text())
        name = "from-" + path.stem.lower().replace(".", "-")
        real.server.cli("create", name, "-f", str(path), cwd=out)  # the real `ollama create`
        got = _parameters(_show(real, name))
        assert got == {**_TEST_PARAMETERS, **{k: str(v) for k, v in wanted["parameters"].items()}}, path.name

    best = parse_modelfile((out / "best.Modelfile").read_text())
    assert _parameters(_show(real, applied)) == {
        **_TEST_PARAMETERS,
        **{k: str(v) for k, v in best["parameters"].items()},
    }


def test_a_load_real_ollama_refuses_for_memory_is_an_infeasible_trial(
    real: RealOllama, tmp_path: Path
) -> None:
    """The baseline asks for 8M tokens of context: a 32 GiB KV cache no host here has. Real Ollama refuses
    it; the study records the refusal with the server's own words and goes on."""
    storage = f"sqlite:///{tmp_path}/s.db"
    args = [LONG_MODEL, "--budget", "3", "--host", real.url, "--storage", storage, "--study", "oom"]
    args += [
        "--out",
        str(tmp_path / "r"),
        "--baseline-ctx",
        str(1 << 23),
        "--max-ctx",
        "4096",
        "--num-predict",
        "16",
        "--remeasure-rounds",
        "0",
    ]
    assert run_cli(args) == 0
    _, records = load_records(storage, "oom")
    baseline = records[0]
    assert baseline.state == "COMPLETE" and not baseline.feasible and baseline.decode_tok_s is None
    assert baseline.error and is_out_of_memory(baseline.error), baseline.error
    assert any(r.feasible and r.decode_tok_s for r in records[1:])  # the study went on
    assert httpx.get(real.url + "/api/ps").json()["models"] == []


def _autotune(url: str, storage: str, out: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tuner", "tiny-llama", "--quant", "q4_K_M,q8_0", "--host", url]
    args += ["--budget", "6", "--storage", storage, "--study", "resume", "--out", out, "--num-predict", "32"]
    args += ["--heartbeat", "1", "--remeasure-rounds", "0"]
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    return subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def test_kill_mid_trial_then_resume(real: RealOllama, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    proc = _autotune(real.url, storage, str(tmp_path / "r"))
    assert proc.stderr is not None
    try:
        seen, deadline = 0, time.monotonic() + 300
        while seen < 2 and time.monotonic() < deadline and proc.poll() is None:
            seen += "trial " in proc.stderr.readline()
        assert seen == 2, f"the study did not get going (exit {proc.poll()})"
        while not httpx.get(real.url + "/api/ps").json()["models"]:  # trial 3 has loaded: inside it
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    _, before = load_records(storage, "resume")
    done_before = [r for r in before if r.state == "COMPLETE"]
    assert len(done_before) == 2 and [r.state for r in before].count("RUNNING") == 1

    proc = _autotune(real.url, storage, str(tmp_path / "r"))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "recovered trial #2" in err  # found by its stopped heartbeat
    _, after = load_records(storage, "resume")
    done_after = [r for r in after if r.state == "COMPLETE"]
    # nothing finished was lost or redone (the re-measure after the budget adds samples only when read back)
    assert len(done_after) == 6
    assert [replace(r, remeasure_samples=[]) for r in done_after[:2]] == done_before
    (interrupted,) = [r for r in after if r.state == "FAIL"]
    key = (interrupted.tag, interrupted.num_gpu, interrupted.num_ctx)
    assert [(r.tag, r.num_gpu, r.num_ctx) for r in done_after].count(key) == 1  # run again exactly once


@pytest.fixture(scope="module")
def one_real(
    real_ollama_pool: dict[str, RealOllama], real_ollama_base: Path, served_models: dict[str, Path]
) -> RealOllama:
    """One real release (the first pinned) for the tests whose subject is the tuner, not the release."""
    return get_real_ollama(ollama_releases()[0], real_ollama_pool, real_ollama_base, served_models)


def _tiny(url: str, storage: str, out: str, budget: int, study: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tuner", "tiny-llama", "--quant", "q4_K_M,q8_0", "--host", url]
    args += ["--budget", str(budget), "--storage", storage, "--study", study, "--out", out]
    args += ["--num-predict", "64", "--heartbeat", "1"]
    env = {k: v for k, v in os.environ.items() if k != "TUNER_DEBUG"}
    return subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def test_sigterm_inside_a_trial_unloads_the_model_and_writes_the_report(
    one_real: RealOllama, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    proc = _tiny(one_real.url, storage, str(tmp_path / "r"), 6, "term")
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 600
        while "trial " not in proc.stderr.readline():
            assert time.monotonic() < deadline and proc.poll() is None, "the study did not get going"
        while not httpx.get(one_real.url + "/api/ps").json()["models"]:  # the next trial has loaded
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err.strip().splitlines()[-1]
    assert httpx.get(one_real.url + "/api/ps").json()["models"] == []  # unloaded before it exited
    assert (tmp_path / "r" / "report.md").is_file() and "report of the" in err
    _, records = load_records(storage, "term")
    assert "FAIL" in [r.state for r in records] and any(r.state == "COMPLETE" for r in records)


def test_two_workers_on_one_real_server_take_turns(one_real: RealOllama, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    procs = [_tiny(one_real.url, storage, str(tmp_path / f"r{i}"), 4, "two") for i in range(2)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert any("waiting for the tuner of study 'two'" in e for e in errs)
    _, records = load_records(storage, "two")
    done = [(r.tag, r.num_gpu, r.num_ctx) for r in records if r.state == "COMPLETE"]
    assert len(done) == 4 == len(records) and len(set(done)) == 4
    for r in records:
        if r.decode_tok_s is not None and not r.baseline:
            assert r.context_length_loaded in (None, r.num_ctx), r  # measured its own model, as loaded
