"""Managed server mode with a stand-in `ollama serve` that logs a `server config` line like the real one:
each setting gets its own start, the logged config is checked, the server is stopped on every exit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.fakeollama import write_fake_ollama
from tuner.errors import BackendError
from tuner.servemanaged import default_models_dir, run_managed
from tuner.serverenv import ServerSettings


@pytest.fixture
def fake_ollama(tmp_path: Path) -> Path:
    return write_fake_ollama(tmp_path / "ollama")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_start_per_setting_checked_and_stopped(fake_ollama: Path, tmp_path: Path) -> None:
    urls: list[str] = []
    settings = [ServerSettings(num_parallel=1), ServerSettings(num_parallel=4, flash_attention=True)]
    runs = run_managed(
        fake_ollama,
        settings,
        lambda url: urls.append(url) or len(urls),
        models_dir=tmp_path / "models",
        log_dir=tmp_path / "logs",
    )
    assert [r.result for r in runs] == [1, 2] and len(set(urls)) == 2  # a fresh server (port) each
    assert runs[1].env == {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_FLASH_ATTENTION": "1"}
    assert runs[1].logged["OLLAMA_NUM_PARALLEL"] == "4" and runs[1].version == "0.12.10"
    assert all(r.start_s > 0 for r in runs)


def test_a_setting_the_server_did_not_take_stops_the_run_and_the_server(
    fake_ollama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_IGNORES_PARALLEL", "1")
    measured: list[str] = []
    with pytest.raises(BackendError, match="did not take parallel=2.*OLLAMA_NUM_PARALLEL"):
        run_managed(
            fake_ollama,
            [ServerSettings(num_parallel=2)],
            measured.append,
            models_dir=tmp_path / "models",
            log_dir=tmp_path / "logs",
        )
    assert measured == []
    found = subprocess.run(["pgrep", "-f", str(fake_ollama)], capture_output=True, text=True, check=False)
    assert not [p for p in found.stdout.split() if alive(int(p))]


def test_a_failing_measurement_still_stops_the_server(fake_ollama: Path, tmp_path: Path) -> None:
    seen: list[str] = []

    def measure(url: str) -> None:
        seen.append(url)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_managed(
            fake_ollama, [ServerSettings()], measure, models_dir=tmp_path / "m", log_dir=tmp_path / "l"
        )
    with pytest.raises(httpx.HTTPError):
        httpx.get(seen[0] + "/api/version", timeout=2)


def test_the_model_store_is_the_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "store"))
    assert default_models_dir() == tmp_path / "store"
    monkeypatch.delenv("OLLAMA_MODELS")
    assert default_models_dir() == Path.home() / ".ollama" / "models"


def test_the_study_backend_restarts_only_for_another_server_environment(
    fake_ollama: Path, tmp_path: Path
) -> None:
    from tuner.backend.base import EngineOptions
    from tuner.backend.ollamamanaged import ManagedOllamaBackend, server_env

    assert server_env(EngineOptions(-1, 2048)) == {}
    assert server_env(EngineOptions(-1, 2048, "off", "f16")) == {
        "OLLAMA_FLASH_ATTENTION": "0",
        "OLLAMA_KV_CACHE_TYPE": "f16",
    }
    assert server_env(EngineOptions(-1, 2048, None, "q8_0"))["OLLAMA_FLASH_ATTENTION"] == "1"

    backend = ManagedOllamaBackend(fake_ollama, models_dir=tmp_path / "m", log_dir=tmp_path / "logs")
    url, first_pid = backend.host, backend.pid
    try:
        assert backend.ensure_environment(EngineOptions(-1, 2048)) == 0.0 and backend.restarts == 0
        assert backend.ensure_environment(EngineOptions(-1, 2048, "on", "q8_0")) > 0 and backend.restarts == 1
        assert (
            backend.ensure_environment(EngineOptions(8, 4096, "on", "q8_0")) == 0.0 and backend.restarts == 1
        )
        assert backend.host == url and backend.pid != first_pid  # same port, new process
        assert httpx.get(url + "/api/version", timeout=5).status_code == 200
        assert backend.env_now == {"OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0"}
    finally:
        backend.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/api/version", timeout=2)
