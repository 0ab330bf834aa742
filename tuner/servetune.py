"""`autotune MODEL --serve`: the study on an `ollama serve` autotune runs itself, and the server files of
its best config. Wiring between the CLI and tuner.backend.ollamamanaged / tuner.serverenv."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from tuner.backend.base import EngineOptions
from tuner.cliutil import say
from tuner.concurrency import Ladder, LevelResult, render_table, run_ladder
from tuner.config import Timeouts
from tuner.errors import BackendError, ConfigError, ModelNotFound, Unreachable
from tuner.serverenv import render_docker_flags, render_env_file, render_systemd_dropin
from tuner.space import gpu_choices

PER_STREAM = 2  # requests each stream of the study's ladder sends
PROMPT = "Request {i}: in two sentences, describe a lighthouse at dusk."


def bench_options(num_ctx: int | None, num_gpu: int | None, num_predict: int) -> dict[str, Any]:
    options: dict[str, Any] = {"num_predict": num_predict, "temperature": 0}
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    if num_gpu is not None:
        options["num_gpu"] = num_gpu
    return options


def warm_up(streamer: Any, model: str, options: dict[str, Any], host: str) -> None:
    """Load the model with these options; turn a refused connection or a missing model into a clear error."""
    record = streamer.generate(model, "Hello", options)
    if record.ok:
        return
    error = record.error or ""
    if "ConnectError" in error or "ConnectTimeout" in error:
        raise Unreachable(f"Cannot reach Ollama at '{host}' ({error}); start 'ollama serve' or pass --host.")
    if "HTTP 404" in error:
        raise ModelNotFound(f"Model '{model}' is not on the server at '{host}' ({error}); pull it first.")
    raise BackendError(f"The warm-up request for '{model}' at '{host}' failed: {error}")


def measure_ladder(
    url: str, model: str, options: dict[str, Any], max_concurrency: int, per_stream: int, quiet: bool
) -> Ladder:
    from tuner.backend.stream import OllamaStreamer  # noqa: PLC0415

    streamer = OllamaStreamer(url)
    try:
        warm_up(streamer, model, options, url)

        def send(i: int) -> Any:
            return streamer.generate(model, PROMPT.format(i=i), options)

        def progress(level: LevelResult) -> None:
            if not quiet:
                say(f"  {level.concurrency} concurrent: {level.ok} ok, {level.errors} errors")

        return run_ladder(send, max_concurrency, per_stream, on_level=progress)
    finally:
        streamer.close()


def write_ladder_files(
    out_dir: Path,
    name: str,
    data: dict[str, Any],
    ladder: Ladder,
    pick: int | None,
    sla: tuple[float | None, float | None] = (None, None),
) -> list[Path]:
    """NAME.json (the figures) and NAME.png (the curves, with the SLA lines (ttft_s, itl_s))."""
    from tuner.report.concurrency import plot_ladder  # noqa: PLC0415 - matplotlib only when asked

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"schema": 1, **data}, indent=2) + "\n")
    return [
        path,
        plot_ladder(
            {"model": data.get("model", ""), **ladder.to_json()}, pick, out_dir / f"{name}.png", *sla
        ),
    ]


def ladder_json(ladder: Ladder, pick: LevelResult | None) -> dict[str, Any]:
    return {**ladder.to_json(), "serving_pick": pick.concurrency if pick else None}


def say_ladder(ladder: Ladder, pick: LevelResult | None) -> None:
    click.echo(render_table(ladder, pick))
    click.echo(f"stopped: {ladder.stopped}")
    if pick is None:
        click.echo("serving pick: none (every level had errors, missed the SLA or was over-saturated)")
    else:
        click.echo(
            f"serving pick: {pick.concurrency} concurrent streams, {pick.aggregate_tok_s:.1f} tok/s in all"
        )


@dataclass(frozen=True)
class TuneKnobs:
    """What `--tune` asked for: the server knobs the study searches (with --serve)."""

    flash_attn: bool = False
    kv_cache: bool = False
    parallel: tuple[int, ...] = ()
    want_gpus: bool = False
    gpus: tuple[str, ...] = ()
    batch: tuple[int, ...] = ()  # per request (no restart)
    want_main_gpu: bool = False
    main_gpu: tuple[int, ...] = ()  # per request (no restart)
    want_threads: bool = False
    threads: tuple[int, ...] = ()  # num_thread per request (no restart), 0 first: Ollama's default

    def on_host(self, physical_cores: int) -> TuneKnobs:
        """num_thread to try on a host with these physical cores: Ollama's default (0, not sent), all of
        them, half of them."""
        if not self.want_threads:
            return self
        choices = [0] + [n for n in (physical_cores, physical_cores // 2) if n >= 1]
        return replace(self, threads=tuple(dict.fromkeys(choices)))

    def on_gpus(self, memory_bytes: list[int]) -> TuneKnobs:
        """The GPU subsets and main GPUs to try on this box; ConfigError where there is nothing to choose."""
        for want, knob in ((self.want_gpus, "gpus"), (self.want_main_gpu, "main-gpu")):
            if want and len(memory_bytes) < 2:
                raise ConfigError(
                    f"--tune {knob} needs two or more GPUs; the server sees {len(memory_bytes)}. "
                    f"Leave {knob} out of --tune."
                )
        return replace(
            self,
            gpus=gpu_choices(memory_bytes) if self.want_gpus else (),
            main_gpu=tuple(range(len(memory_bytes))) if self.want_main_gpu else (),
        )


TUNE_KNOBS = ("flash-attn", "kv-cache", "parallel", "gpus", "num-batch", "main-gpu", "num-thread")
SERVER_KNOBS = ("flash-attn", "kv-cache", "parallel", "gpus")  # Ollama: server environment, a restart each
BATCH_CHOICES = (512, 1024, 2048, 256)  # num_batch per request; 512 (Ollama's default in Era A/B) first


def parse_tune(text: str, parallel_values: str, *, serve: bool, engine: str) -> TuneKnobs:
    """`--tune flash-attn,kv-cache,parallel,gpus` (any subset; '' = none)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TUNE_KNOBS]
    if unknown:
        raise ConfigError(f"--tune '{unknown[0]}' is not a knob; use any of {','.join(TUNE_KNOBS)}.")
    if not names:
        return TuneKnobs()
    server_only = [n for n in names if n in ("parallel", "gpus", "num-batch", "main-gpu", "num-thread")]
    if engine == "ollama" and not serve and any(n in SERVER_KNOBS for n in names):
        raise ConfigError(
            f"--tune {','.join(names)} sets Ollama's server environment: add --serve (autotune runs and "
            "restarts its own 'ollama serve'), or tune on llama-server with --engine llama-server."
        )
    if server_only and engine != "ollama":
        raise ConfigError(f"--tune {server_only[0]} is an Ollama knob; with {engine} leave it out.")
    parallel: tuple[int, ...] = ()
    if "parallel" in names:
        try:
            values = sorted({int(v) for v in parallel_values.split(",") if v.strip()})
        except ValueError:
            values = []
        if not values or values[0] < 1:
            raise ConfigError(
                f"--parallel-values '{parallel_values}' must be whole numbers of at least 1, e.g. 1,2,4,8."
            )
        parallel = tuple(values)
    return TuneKnobs(
        "flash-attn" in names,
        "kv-cache" in names,
        parallel,
        "gpus" in names,
        batch=BATCH_CHOICES if "num-batch" in names else (),
        want_main_gpu="main-gpu" in names,
        want_threads="num-thread" in names,
    )


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
    env = server_env(
        EngineOptions(
            best.num_gpu, best.num_ctx, best.flash_attn, best.kv_cache_type, best.num_parallel, best.gpus
        )
    )
    return write_server_files(out_dir, env)


def ladder_on_best(
    backend: Any,
    meta: Any,
    records: list[Any],
    max_concurrency: int,
    num_predict: int,
    sla_ttft_s: float | None = None,
    sla_itl_s: float | None = None,
) -> dict[str, Any]:
    """After a study: the concurrency ladder on its fastest feasible config (on the server environment
    that config needs, with --serve), the table printed. Returns the block to store on the study (the
    report draws its curves from it); {} when no config is feasible."""
    from tuner.report import picks  # noqa: PLC0415

    fastest = picks(meta, records).get("fastest")
    if fastest is None:
        return {}
    best = fastest.trial
    engine_options = EngineOptions(
        best.num_gpu,
        best.num_ctx,
        best.flash_attn,
        best.kv_cache_type,
        best.num_parallel,
        best.gpus,
        best.num_batch,
        best.main_gpu,
        best.num_thread,
    )
    env: dict[str, str] = {}
    if hasattr(backend, "ensure_environment"):
        from tuner.backend.ollamamanaged import server_env  # noqa: PLC0415

        backend.ensure_environment(engine_options)
        env = server_env(engine_options)
    options = bench_options(best.num_ctx or None, best.num_gpu if best.num_gpu >= 0 else None, num_predict)
    per_request = {"num_batch": best.num_batch, "main_gpu": best.main_gpu, "num_thread": best.num_thread}
    options.update({k: v for k, v in per_request.items() if v is not None})
    say(f"concurrency ladder on the best config ({best.tag}, num_ctx {best.num_ctx}, num_gpu {best.num_gpu})")
    ladder = measure_ladder(backend.host, best.tag, options, max_concurrency, PER_STREAM, quiet=False)
    pick = ladder.pick(sla_ttft_s, sla_itl_s)
    say_ladder(ladder, pick)
    return {
        "schema": 1,
        "model": best.tag,
        "trial": best.number,
        "options": options,
        "env": env,
        "requests_per_stream": PER_STREAM,
        "sla_ttft_s": sla_ttft_s,
        "sla_itl_s": sla_itl_s,
        **ladder_json(ladder, pick),
    }
