"""Managed server mode: start `ollama serve` once per server setting, check it took the setting, run a
measurement against it, stop it (by process group, on every exit).

The server runs on a private loopback port with the user's model store (OLLAMA_MODELS, else
~/.ollama/models), so it sees the user's models and nothing else of theirs changes. Settings are run in the
order given, one start each: the restarts are as few as the settings, and each start's time is recorded
(`start_s`) and charged to the run. The startup log's `server config` line must report every variable
autotune set, or the run stops: a setting the server ignored would make the measurement a lie.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import httpx

from tuner.backend.base import ModelInfo
from tuner.backend.ollamaserve import ManagedOllama
from tuner.errors import BackendError, ConfigError
from tuner.serverenv import ServerSettings, expected_log_values, parse_server_config

T = TypeVar("T")


def read_model(
    binary: str | os.PathLike[str], model: str, *, models_dir: Path, log_dir: Path
) -> tuple[ModelInfo, str]:
    """The model's /api/show and the release, from a short-lived server with the defaults."""
    from tuner.backend.ollama import OllamaBackend  # noqa: PLC0415

    log_dir.mkdir(parents=True, exist_ok=True)
    with ManagedOllama(binary, models_dir=models_dir, log_path=log_dir / "serve-show.log") as server:
        backend = OllamaBackend(server.url)
        try:
            return backend.model_info(model), backend.server_info().version
        finally:
            backend.close()


def default_models_dir() -> Path:
    """The user's model store: OLLAMA_MODELS, else ~/.ollama/models (Ollama's own default)."""
    value = os.environ.get("OLLAMA_MODELS")
    return Path(value).expanduser() if value else Path.home() / ".ollama" / "models"


@dataclass(frozen=True)
class ServedRun(Generic[T]):
    settings: ServerSettings
    env: dict[str, str]
    version: str
    start_s: float  # from spawning `ollama serve` to its first answer
    logged: dict[str, str]  # the server config it logged at startup
    result: T


def check_took(server: ManagedOllama, env: dict[str, str], label: str) -> dict[str, str]:
    """The server config the started server logged; BackendError when it does not report every variable of
    `env` as set (a setting the server ignored would make the measurement a lie). CUDA_VISIBLE_DEVICES is
    checked where the release logs it."""
    logged = parse_server_config(server.log_text())
    expected = expected_log_values({k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"})
    if "CUDA_VISIBLE_DEVICES" in env and "CUDA_VISIBLE_DEVICES" in logged:
        expected["CUDA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]
    wrong = {k: logged.get(k) for k, v in expected.items() if logged.get(k) != v}
    if wrong:
        raise BackendError(
            f"'{server.binary} serve' did not take {label}: its startup log reports {wrong}; "
            f"see '{server.log_path}'."
        )
    return logged


def run_managed(
    binary: str | os.PathLike[str],
    settings: Sequence[ServerSettings],
    measure: Callable[[str], T],
    *,
    models_dir: Path,
    log_dir: Path,
    clock: Callable[[], float] = time.monotonic,
) -> list[ServedRun[T]]:
    """For each setting: start the server, verify its startup config, `measure(url)`, stop it."""
    runs: list[ServedRun[T]] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for i, setting in enumerate(settings):
        env = setting.env("0.32.15")  # the knobs autotune sets exist in every supported release
        server = ManagedOllama(binary, models_dir=models_dir, env=env, log_path=log_dir / f"serve-{i}.log")
        began = clock()
        server.start()
        try:
            start_s = clock() - began
            version = str(httpx.get(server.url + "/api/version", timeout=10).json().get("version", ""))
            try:
                setting.env(version)
            except ValueError as exc:
                raise ConfigError(f"{exc} Leave that setting out for this release.") from exc
            logged = check_took(server, env, setting.label())
            result = measure(server.url)
        finally:
            server.stop()
        runs.append(ServedRun(setting, env, version, start_s, logged, result))
    return runs
