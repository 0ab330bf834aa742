"""`autotune serve-bench MODEL`: the concurrency ladder, the serving pick, and (with --serve) the server
settings that serve best.

    autotune serve-bench llama3.2:1b --host http://127.0.0.1:11434 --max-concurrency 8 --sla-ttft 2
    autotune serve-bench llama3.2:1b --serve --parallel 1,2,4 --flash-attn on --kv-cache q8_0 --out DIR
    autotune serve-bench llama3.1:8b --serve --layouts --parallel 2 --out DIR   (multi-GPU: tuner.layoutbench)

Wiring only: the ladder and its figures are tuner.concurrency, the timed requests tuner.backend.stream, the
managed server tuner.servemanaged, the knobs and their files tuner.serverenv. One warm-up request loads the
model with these options first (not counted), so level 1 is not a cold load.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import click

from tuner.cliutil import Seconds, WholeNumber, say
from tuner.concurrency import Ladder, LevelResult, choose_setting
from tuner.errors import BackendError, ConfigError
from tuner.serverenv import ServerSettings, render_docker_flags
from tuner.servetune import (
    bench_options,
    ladder_json,
    measure_ladder,
    say_ladder,
    write_ladder_files,
    write_server_files,
)


def parse_parallel(value: str | None) -> list[int | None]:
    if not value:
        return [None]
    out: list[int | None] = []
    for part in value.split(","):
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n < 1:
            raise click.BadParameter(
                f"--parallel '{value}' must be whole numbers of at least 1; use e.g. 1,2,4."
            )
        out.append(n)
    return out


@click.command("serve-bench")
@click.argument("model")
@click.option("--host", default=None, help="Ollama URL (default: OLLAMA_HOST, else http://127.0.0.1:11434).")
@click.option("--num-ctx", default=None, type=WholeNumber("4096", min=4), help="Context per slot (num_ctx).")
@click.option("--num-gpu", default=None, type=WholeNumber("99", min=0), help="Layers on the GPU (num_gpu).")
@click.option(
    "--max-concurrency",
    default=None,
    type=WholeNumber("8"),
    help="The top rung: 1, 2, 4 ... up to this many concurrent streams (default 8; with --serve twice "
    "the slots, to see the queue).",
)
@click.option(
    "--requests-per-stream",
    default=2,
    show_default=True,
    type=WholeNumber("2"),
    help="Requests each stream sends.",
)
@click.option(
    "--num-predict", default=64, show_default=True, type=WholeNumber("64"), help="Tokens per answer."
)
@click.option("--sla-ttft", default=None, type=Seconds("2"), help="Target p90 time to first token, seconds.")
@click.option("--sla-itl", default=None, type=Seconds("0.1"), help="Target p90 inter-token latency, seconds.")
@click.option(
    "--serve", is_flag=True, help="Start 'ollama serve' here (private port, your model store) per setting."
)
@click.option(
    "--ollama", "ollama_path", default=None, help="With --serve: the ollama binary (default: on PATH)."
)
@click.option(
    "--parallel", default=None, help="With --serve: OLLAMA_NUM_PARALLEL values to compare, e.g. 1,2,4."
)
@click.option(
    "--flash-attn",
    type=click.Choice(["on", "off"]),
    default=None,
    help="With --serve: OLLAMA_FLASH_ATTENTION.",
)
@click.option(
    "--kv-cache",
    type=click.Choice(["f16", "q8_0", "q4_0"]),
    default=None,
    help="With --serve: OLLAMA_KV_CACHE_TYPE.",
)
@click.option(
    "--gpus",
    default=None,
    help="With --serve: the GPUs (e.g. 24GiB, 2xRTX4090) to check each setting against with the memory "
    "estimator; settings predicted not to load are skipped, never started.",
)
@click.option(
    "--layouts",
    is_flag=True,
    help="With --serve on a multi-GPU box: one instance spread over every GPU against separate instances, one "
    "per GPU subset (each its own port), under the same total load; writes the winner's files. --parallel "
    "is then the slots per GPU.",
)
@click.option(
    "--out", default=None, help="Write the ladders (JSON, PNG) and, with --serve, the server files here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON for scripts.")
def serve_bench_cmd(
    model: str,
    host: str | None,
    num_ctx: int | None,
    num_gpu: int | None,
    max_concurrency: int | None,
    requests_per_stream: int,
    num_predict: int,
    sla_ttft: float | None,
    sla_itl: float | None,
    serve: bool,
    ollama_path: str | None,
    parallel: str | None,
    flash_attn: str | None,
    kv_cache: str | None,
    gpus: str | None,
    layouts: bool,
    out: str | None,
    as_json: bool,
) -> None:
    """Concurrent streams 1, 2, 4 ...: throughput, TTFT / ITL / latency percentiles, the serving pick."""
    options = bench_options(num_ctx, num_gpu, num_predict)
    out_dir = Path(out) if out else None
    if not serve:
        if parallel or flash_attn or kv_cache or ollama_path or gpus or layouts:
            raise click.UsageError(
                "--parallel, --flash-attn, --kv-cache, --gpus, --layouts and --ollama need --serve: autotune only "
                "changes the environment of a server it starts itself."
            )
        from tuner.backend.ollama import resolve_host  # noqa: PLC0415

        url = resolve_host(host)
        ladder = measure_ladder(url, model, options, max_concurrency or 8, requests_per_stream, as_json)
        pick = ladder.pick(sla_ttft, sla_itl)
        meta = {"model": model, "host": url, "options": options, "sla_ttft_s": sla_ttft, "sla_itl_s": sla_itl}
        if as_json:
            click.echo(json.dumps({**meta, **ladder_json(ladder, pick)}))
        else:
            say_ladder(ladder, pick)
        if out_dir:
            paths = write_ladder_files(
                out_dir,
                "concurrency",
                {**meta, **ladder_json(ladder, pick)},
                ladder,
                pick.concurrency if pick else None,
                (sla_ttft, sla_itl),
            )
            for path in paths:
                say(f"wrote {path}")
        return
    if layouts:
        serve_layouts_cmd(
            model,
            options,
            ollama_path,
            parallel,
            flash_attn,
            kv_cache,
            gpus,
            max_concurrency,
            requests_per_stream,
            (sla_ttft, sla_itl),
            out_dir,
            as_json,
        )
        return
    cards = None
    if gpus:
        from tuner.plan import parse_gpu_list  # noqa: PLC0415

        cards = parse_gpu_list(gpus)
    serve_managed(
        model,
        options,
        cards,
        ollama_path,
        parse_parallel(parallel),
        flash_attn,
        kv_cache,
        max_concurrency,
        requests_per_stream,
        sla_ttft,
        sla_itl,
        out_dir,
        as_json,
    )


def serve_layouts_cmd(
    model: str,
    options: dict[str, Any],
    ollama_path: str | None,
    parallel: str | None,
    flash_attn: str | None,
    kv_cache: str | None,
    gpus: str | None,
    max_concurrency: int | None,
    per_stream: int,
    sla: tuple[float | None, float | None],
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """--layouts: the checks of its flags, then tuner.layoutbench."""
    import tempfile  # noqa: PLC0415

    from tuner.layoutbench import serve_layouts  # noqa: PLC0415
    from tuner.servemanaged import default_models_dir  # noqa: PLC0415

    slots = parse_parallel(parallel)
    if len(slots) > 1:
        raise click.UsageError(
            f"--layouts takes one --parallel value (the slots per GPU), not '{parallel}'; compare slot counts "
            "without --layouts first."
        )
    if gpus:
        raise click.UsageError("--layouts measures the GPUs the server finds; leave out --gpus.")
    binary = ollama_path or shutil.which("ollama")
    if not binary:
        raise ConfigError("No 'ollama' on PATH for --serve; pass --ollama PATH to the ollama binary.")
    fa = None if flash_attn is None else flash_attn == "on"
    log_dir = out_dir / "logs" if out_dir else Path(tempfile.mkdtemp(prefix="autotune-layouts-"))
    serve_layouts(
        binary,
        model,
        options,
        ServerSettings(flash_attention=fa, kv_cache_type=kv_cache),
        slots[0] or 1,
        max_concurrency,
        per_stream,
        sla,
        default_models_dir(),
        log_dir,
        out_dir,
        as_json,
    )


def fitting_settings(
    binary: str,
    model: str,
    settings: list[ServerSettings],
    cards: list[Any],
    options: dict[str, Any],
    log_dir: Path,
    quiet: bool,
) -> list[ServerSettings]:
    """The settings the memory estimator says load on these GPUs; the others are named and skipped."""
    from tuner.fitcheck import spec_of  # noqa: PLC0415
    from tuner.servemanaged import default_models_dir, read_model  # noqa: PLC0415
    from tuner.serverfit import check_settings  # noqa: PLC0415

    info, version = read_model(binary, model, models_dir=default_models_dir(), log_dir=log_dir)
    spec = spec_of(info)
    if spec is None:
        raise BackendError(f"Ollama sent no tensor list for '{model}'; run without --gpus.")
    num_ctx = int(options.get("num_ctx") or 4096)
    verdicts = check_settings(
        spec, cards, settings, num_ctx=num_ctx, num_gpu=options.get("num_gpu"), version=version
    )
    for v in verdicts:
        if not quiet:
            say(("skip " if not v.loads else "") + v.reason())
    kept = [v.settings for v in verdicts if v.loads]
    if not kept:
        raise ConfigError(
            f"No setting is predicted to load '{model}' at num_ctx {num_ctx} on --gpus; use fewer --parallel "
            "slots, --kv-cache q8_0 with --flash-attn on, or a smaller --num-ctx."
        )
    return kept


def serve_managed(
    model: str,
    options: dict[str, Any],
    cards: list[Any] | None,
    ollama_path: str | None,
    parallels: list[int | None],
    flash_attn: str | None,
    kv_cache: str | None,
    max_concurrency: int | None,
    per_stream: int,
    sla_ttft: float | None,
    sla_itl: float | None,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """One managed server per OLLAMA_NUM_PARALLEL value, a ladder on each, the best settings' files."""
    import tempfile  # noqa: PLC0415

    from tuner.servemanaged import default_models_dir, run_managed  # noqa: PLC0415

    binary = ollama_path or shutil.which("ollama")
    if not binary:
        raise ConfigError("No 'ollama' on PATH for --serve; pass --ollama PATH to the ollama binary.")
    fa = None if flash_attn is None else flash_attn == "on"
    settings = [ServerSettings(flash_attention=fa, kv_cache_type=kv_cache, num_parallel=n) for n in parallels]
    log_dir = out_dir / "logs" if out_dir else Path(tempfile.mkdtemp(prefix="autotune-serve-"))
    if cards:
        settings = fitting_settings(binary, model, settings, cards, options, log_dir, as_json)

    def measure(url: str, n: int | None) -> tuple[Ladder, LevelResult | None]:
        top = max_concurrency or 2 * (n or 1)
        ladder = measure_ladder(url, model, options, top, per_stream, as_json)
        return ladder, ladder.pick(sla_ttft, sla_itl)

    runs: list[Any] = []
    for s in settings:  # one start per setting, in order: as few restarts as settings
        if not as_json:
            say(f"ollama serve with {s.label()}")
        runs += run_managed(
            binary,
            [s],
            functools.partial(measure, n=s.num_parallel),
            models_dir=default_models_dir(),
            log_dir=log_dir / s.label(),
        )
    chosen = choose_setting(
        [r.result[1].aggregate_tok_s if r.result[1] else None for r in runs],
        [r.settings.num_parallel or 1 for r in runs],
    )
    best = runs[chosen] if chosen is not None else None
    report = {
        "model": model,
        "options": options,
        "sla_ttft_s": sla_ttft,
        "sla_itl_s": sla_itl,
        "runs": [
            {
                "settings": r.settings.label(),
                "env": r.env,
                "version": r.version,
                "start_s": r.start_s,
                **ladder_json(*r.result),
            }
            for r in runs
        ],
        "best": best.settings.label() if best else None,
        "restarts": len(runs),
        "start_s_total": sum(r.start_s for r in runs),
    }
    if as_json:
        click.echo(json.dumps(report))
    else:
        for r in runs:
            click.echo(f"\n== {r.settings.label()} (Ollama {r.version}, started in {r.start_s:.1f} s)")
            say_ladder(*r.result)
        click.echo(f"\nbest server settings: {best.settings.label() if best else 'none met the SLA'}")
        if best:
            click.echo(f"  env: {render_docker_flags(best.env) or '(the defaults)'}")
    if out_dir:
        for r in runs:
            ladder, pick = r.result
            name = "concurrency-" + r.settings.label().replace(",", "-").replace("=", "")
            write_ladder_files(
                out_dir,
                name,
                {"model": model, "settings": r.settings.label(), **ladder_json(ladder, pick)},
                ladder,
                pick.concurrency if pick else None,
                (sla_ttft, sla_itl),
            )
        (out_dir / "serve-bench.json").write_text(json.dumps({"schema": 1, **report}, indent=2) + "\n")
        if best:
            for path in write_server_files(out_dir, best.env):
                say(f"wrote {path}")
