"""Serving against real Ollama, once per release built: managed restarts with different environments
(each checked in the server's startup log), a concurrency ladder on the tiny model, and the emitted env file
taken by a real `ollama serve`. No GPU here: this checks behaviour (counts, fields, errors, the settings the
server reports), never timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MODEL, ollama_releases
from tests.real.stores import tiny_store
from tuner.backend.ollamaserve import ManagedOllama
from tuner.cli import main
from tuner.serverenv import expected_log_values, parse_server_config

pytestmark = pytest.mark.engine
MODEL = f"{TINY_MODEL}:q8_0"


@pytest.fixture(scope="module", params=ollama_releases())
def store(
    request: pytest.FixtureRequest, tiny_quants: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """(the ollama binary, a model store holding MODEL), imported by the real `ollama create`."""
    return tiny_store(request.param, MODEL, tiny_quants["q8_0"], tmp_path_factory, "serving")


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_managed_restarts_and_ladders_then_a_real_server_takes_the_env_file(
    store: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    binary, models = store
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    out = tmp_path / "out"
    args = [
        "serve-bench",
        MODEL,
        "--serve",
        "--ollama",
        binary,
        "--parallel",
        "1,2",
        "--kv-cache",
        "q8_0",
        "--flash-attn",
        "on",
        "--num-predict",
        "4",
        "--requests-per-stream",
        "1",
        "--json",
        "--out",
        str(out),
    ]
    assert run_cli(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["restarts"] == 2 and report["start_s_total"] > 0
    runs = report["runs"]
    assert [r["env"]["OLLAMA_NUM_PARALLEL"] for r in runs] == ["1", "2"]
    assert all(
        r["env"]["OLLAMA_KV_CACHE_TYPE"] == "q8_0" and r["env"]["OLLAMA_FLASH_ATTENTION"] == "1" for r in runs
    )
    for run, top in zip(runs, (2, 4)):  # the ladder climbs to twice the slots
        levels = run["levels"]
        assert levels[0]["concurrency"] == 1 and levels[-1]["concurrency"] <= top
        for lv in levels:  # more streams than slots queue in real Ollama: no request is refused
            assert lv["requests"] == lv["concurrency"] and lv["errors"] == 0 and lv["ok"] == lv["requests"]
            assert 0 < lv["output_tokens"] <= 4 * lv["ok"]
            assert lv["ttft_s"]["p50"] is not None and lv["e2e_s"]["p99"] is not None
        assert run["serving_pick"] in [lv["concurrency"] for lv in levels]
    for name in ("server.env", "ollama.service.d/autotune.conf", "docker-run-flags.txt", "serve-bench.json"):
        assert (out / name).is_file()
    # each managed start logged the settings it was given
    for log in sorted((out / "logs").rglob("serve-*.log")):
        config = parse_server_config(log.read_text())
        assert config["OLLAMA_KV_CACHE_TYPE"] == "q8_0" and config["OLLAMA_FLASH_ATTENTION"] == "true"

    env = dict(line.split("=", 1) for line in (out / "server.env").read_text().splitlines())
    with ManagedOllama(binary, models_dir=models, env=env, log_path=tmp_path / "fromfile.log") as server:
        config = parse_server_config(server.log_text())
    assert {k: config[k] for k in env} == expected_log_values(env)


def test_settings_the_estimator_says_cannot_load_are_never_started(
    store: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    binary, models = store
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    out = tmp_path / "out"
    args = [
        "serve-bench",
        MODEL,
        "--serve",
        "--ollama",
        binary,
        "--parallel",
        "1,64",
        "--gpus",
        "1GiB",
        "--num-ctx",
        "2048",
        "--num-gpu",
        "99",
        "--num-predict",
        "4",
        "--requests-per-stream",
        "1",
        "--max-concurrency",
        "1",
        "--out",
        str(out),
    ]
    assert run_cli(args) == 0
    captured = capsys.readouterr()
    assert "skip parallel=64: predicted not to load" in captured.err
    report = json.loads((out / "serve-bench.json").read_text())
    assert [r["settings"] for r in report["runs"]] == ["parallel=1"] and report["restarts"] == 1
    assert not list((out / "logs").glob("parallel=64/*"))  # no server ever started with 64 slots


def _ps_size(binary: str, models: Path, log: Path, parallel: int) -> tuple[int, Any, str]:
    """/api/ps size of the tiny model at num_ctx 2048 under OLLAMA_NUM_PARALLEL, and the model's spec."""
    import httpx

    from tuner.backend.ollama import OllamaBackend
    from tuner.fitcheck import spec_of

    env = {"OLLAMA_NUM_PARALLEL": str(parallel)}
    with ManagedOllama(binary, models_dir=models, env=env, log_path=log) as server:
        body = {
            "model": MODEL,
            "prompt": "hi",
            "stream": False,
            "options": {"num_ctx": 2048, "num_predict": 1},
        }
        httpx.post(server.url + "/api/generate", json=body, timeout=120).raise_for_status()
        size = int(httpx.get(server.url + "/api/ps", timeout=10).json()["models"][0]["size"])
        version = str(httpx.get(server.url + "/api/version", timeout=10).json()["version"])
        backend = OllamaBackend(server.url)
        try:
            spec = spec_of(backend.model_info(MODEL))
        finally:
            backend.close()
    return size, spec, version


def test_one_more_slot_costs_what_the_estimator_predicts_for_its_kv_cache(
    store: tuple[str, Path], tmp_path: Path
) -> None:
    """Real Ollama's own report (/api/ps size) grows by one slot's KV cache from 1 to 2 slots, as the
    estimator prices it (num_ctx x layers x KV heads x head size x 2 bytes, f16)."""
    from tuner.estimate.placement import Request, predict

    binary, models = store
    one, spec, version = _ps_size(binary, models, tmp_path / "p1.log", 1)
    two, _, _ = _ps_size(binary, models, tmp_path / "p2.log", 2)

    def kv(parallel: int) -> int:
        p = predict(spec, [0], Request(num_ctx=2048, num_parallel=parallel), engine="ollama", version=version)
        return p.allocation.cpu.kv + sum(d.kv for d in p.allocation.gpu)

    assert two > one
    assert abs((two - one) - (kv(2) - kv(1))) <= 0.02 * (kv(2) - kv(1))


def test_a_study_with_serve_tunes_the_kv_cache_restarting_its_own_server(
    store: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`autotune MODEL --serve --tune-kv-cache --tune-flash-attn`: trials with another KV cache type restart the
    managed server with it (each start's log reports it), and the best config's server files are written."""
    from tuner.study import load_records

    binary, models = store
    monkeypatch.setenv("OLLAMA_MODELS", str(models))
    out, storage = tmp_path / "report", f"sqlite:///{tmp_path}/s.db"
    args = [MODEL, "--serve", "--ollama", binary, "--tune-kv-cache", "--tune-flash-attn", "--budget", "6"]
    args += ["--storage", storage, "--out", str(out), "--num-predict", "16", "--remeasure-rounds", "0"]
    args += ["--no-quality", "--study", "served", "--concurrency", "2"]
    assert run_cli(args) == 0
    _, records = load_records(storage, "served")
    assert len(records) == 6
    kv_types = {r.kv_cache_type for r in records if r.kv_cache_type}
    assert len(kv_types) >= 2  # the search tried more than one server environment
    logged = [
        c for c in (parse_server_config(chunk) for chunk in _starts(out / "serve-logs" / "ollama-serve.log"))
    ]
    assert {c.get("OLLAMA_KV_CACHE_TYPE") for c in logged} >= kv_types - {"f16"}
    assert (out / "best.Modelfile").is_file() and (out / "server.env").is_file()
    env = dict(line.split("=", 1) for line in (out / "server.env").read_text().splitlines())
    assert set(env) <= {"OLLAMA_KV_CACHE_TYPE", "OLLAMA_FLASH_ATTENTION"}
    ladder = json.loads((out / "concurrency.json").read_text())  # --concurrency 2: on the best config
    assert [lv["concurrency"] for lv in ladder["levels"]] == [1, 2]
    assert all(lv["errors"] == 0 and lv["ok"] == 2 * lv["concurrency"] for lv in ladder["levels"])
    assert (out / "concurrency.png").stat().st_size > 0


def _starts(log: Path) -> list[str]:
    """The log of each start of the managed server (they append to one file)."""
    return [line for line in log.read_text().splitlines() if 'msg="server config"' in line]
