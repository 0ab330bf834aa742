"""What `autotune tune` and `autotune qualify` share to reach an engine and run a study on it: the backend
and its probe, the resolved variants, the estimator's check, the server lock, the report. Factored out of the
CLI so that a qualification plan runs its per-model studies with exactly the tune command's machinery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.backend.base import Backend, ModelInfo
from tuner.cliutil import say
from tuner.config import StudyConfig, Timeouts, parse_quant_list
from tuner.errors import ConfigError
from tuner.probe import Probe
from tuner.schema import StudyMeta


def build_backend(
    engine: str, host: str | None, llama_server: str | None, timeouts: Timeouts | None = None
) -> tuple[Backend, Probe]:
    from tuner.probe import choose_probe  # noqa: PLC0415

    if engine == "ollama":
        from tuner.backend.ollama import OllamaBackend  # noqa: PLC0415

        backend = OllamaBackend(host, timeouts=timeouts or Timeouts())
        return backend, choose_probe(backend.host)
    from tuner.backend.llamaserver import LlamaServerBackend  # noqa: PLC0415
    from tuner.probe import NullProbe, ProcessRssProbe  # noqa: PLC0415

    lbackend = LlamaServerBackend(llama_server)
    probe = choose_probe(None)  # NVML when this machine has a GPU
    if isinstance(probe, NullProbe):  # CPU only: the server process's peak resident memory
        probe = ProcessRssProbe(lambda: lbackend.pid)
    return lbackend, probe


def resolve_variants(
    backend: Backend, engine: str, models: tuple[str, ...], quant: str | None, tags: str | None, pull: bool
) -> list[str]:
    if engine == "ollama":
        from tuner.backend.ollama import OllamaBackend, resolve_tags  # noqa: PLC0415
        from tuner.progress import PullBar  # noqa: PLC0415

        assert isinstance(backend, OllamaBackend)
        if len(models) > 1:
            raise ConfigError(
                f"Ollama studies take one model, got {len(models)} ({', '.join(models)}); "
                "use --tags to list several tags of it."
            )
        tag_list = [t.strip() for t in tags.split(",") if t.strip()] if tags else []
        return resolve_tags(
            backend, models[0], quants=parse_quant_list(quant), tags=tag_list, pull=pull, progress=PullBar()
        )
    if quant or tags or pull:
        raise ConfigError("--quant, --tags and --pull are for Ollama; pass the GGUF files themselves.")
    return list(models)


def server_lock(engine: str, backend: Backend, config: StudyConfig) -> Any:
    """One tuner per server (tuner.serverlock): keyed by the Ollama URL, or by this machine's GPUs for the
    llama-server processes autotune starts itself."""
    from tuner.serverlock import FileLock  # noqa: PLC0415
    from tuner.serverlock import server_lock as lock_of  # noqa: PLC0415

    if engine == "ollama":
        url = str(getattr(backend, "host", ""))
        return lock_of(url, config.storage, config.study_name, config.retry.grace_s)
    return FileLock("llama-server on this machine", config.study_name)


def fitcheck(backend: Backend, probe: Any, server: Any, infos: dict[str, ModelInfo]) -> Any:
    """The estimator's check for this study, or None (no GPU visible, or no tensor lists: said once)."""
    from tuner.fitcheck import study_fitcheck  # noqa: PLC0415

    check = study_fitcheck(backend, probe, server, infos)
    if check is None and probe.source in ("nvml", "simulator"):
        say("note: the engine sent no tensor list, so configs are not screened by predicted memory.")
    return check


def write_report(meta: StudyMeta, records: list[Any], out_dir: Path) -> dict[str, Path]:
    from tuner.report import write_report as write  # noqa: PLC0415

    written = write(meta, records, out_dir)
    return {k: Path(v) for k, v in written.items()}
