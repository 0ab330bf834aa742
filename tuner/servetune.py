"""`autotune MODEL --serve`: the study on an `ollama serve` autotune runs itself, and the server files of
its best config. Wiring between the CLI and tuner.backend.ollamamanaged / tuner.serverenv."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tuner.backend.base import EngineOptions
from tuner.config import Timeouts
from tuner.errors import ConfigError
from tuner.serverenv import render_docker_flags, render_env_file, render_systemd_dropin


def managed_backend(ollama_path: str | None, log_dir: Path, timeouts: Timeouts) -> tuple[Any, Any]:
    """A ManagedOllamaBackend on the user's model store, and the probe for its host."""
    from tuner.backend.ollamamanaged import ManagedOllamaBackend  # noqa: PLC0415
    from tuner.probe import choose_probe  # noqa: PLC0415
    from tuner.servemanaged import default_models_dir  # noqa: PLC0415

    binary = ollama_path or shutil.which("ollama")
    if not binary:
        raise ConfigError("No 'ollama' on PATH for --serve; pass --ollama PATH to the ollama binary.")
    backend = ManagedOllamaBackend(
        binary, models_dir=default_models_dir(), log_dir=log_dir, timeouts=timeouts
    )
    return backend, choose_probe(backend.host)


def write_server_files(out_dir: Path, env: dict[str, str]) -> list[Path]:
    """server.env, ollama.service.d/autotune.conf and docker-run-flags.txt for these settings."""
    dropin = out_dir / "ollama.service.d" / "autotune.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    files = {
        out_dir / "server.env": render_env_file(env),
        dropin: render_systemd_dropin(env),
        out_dir / "docker-run-flags.txt": render_docker_flags(env) + "\n",
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def best_server_files(meta: Any, records: list[Any], out_dir: Path) -> list[Path]:
    """The server files for the fastest feasible config (the one best.Modelfile holds)."""
    from tuner.backend.ollamamanaged import server_env  # noqa: PLC0415
    from tuner.report import picks  # noqa: PLC0415

    fastest = picks(meta, records).get("fastest")
    if fastest is None:
        return []
    best = fastest.trial
    env = server_env(EngineOptions(best.num_gpu, best.num_ctx, best.flash_attn, best.kv_cache_type))
    return write_server_files(out_dir, env)
