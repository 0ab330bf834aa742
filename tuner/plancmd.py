"""`autotune plan`: how a model fits GPUs at each context, predicted without loading anything (the click
command; the plan itself is tuner.plan)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from tuner.errors import ConfigError, TunerError
from tuner.redact import remember_secrets_of


@click.command("plan")
@click.argument("model", required=False)
@click.option(
    "--gpus", required=True, help="The GPUs to plan for, e.g. 2x24GiB, 4x8GB, 8xA800-80GB, 24GiB,12GiB."
)
@click.option(
    "--ctx", "ctx_list", default=None, help="Contexts to check, e.g. 8192,32768,131072 (default 4k..128k)."
)
@click.option(
    "--kv",
    "kv_type",
    type=click.Choice(["f16", "q8_0", "q4_0"]),
    default="f16",
    show_default=True,
    help="KV cache type; a quantized one turns flash attention on unless --flash-attn off.",
)
@click.option("--flash-attn", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--parallel", "num_parallel", default=1, type=click.IntRange(1, 64), show_default=True)
@click.option("--engine", type=click.Choice(["ollama", "llama-server"]), default="ollama", show_default=True)
@click.option(
    "--ollama-version",
    default=None,
    help="The Ollama release whose rule to follow (default: the server's, or 0.12.10 with --show).",
)
@click.option(
    "--margin",
    default=1.0,
    type=click.FloatRange(0.5, 3.0),
    show_default=True,
    help="Factor on the predicted compute buffers and CUDA context.",
)
@click.option("--host", default=None, help="Ollama (or the simulator) to read /api/show from.")
@click.option(
    "--show", "show_file", default=None, help="A saved /api/show response (JSON) instead of a server."
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON for scripts.")
def plan_cmd(
    model: str | None,
    gpus: str,
    ctx_list: str | None,
    kv_type: str,
    flash_attn: str,
    num_parallel: int,
    engine: str,
    ollama_version: str | None,
    margin: float,
    host: str | None,
    show_file: str | None,
    as_json: bool,
) -> None:
    """Predict, without loading anything, how MODEL fits GPUS at each context."""
    import json  # noqa: PLC0415

    from tuner.plan import load_show, make_plan, parse_ctx_list, parse_gpu_list, render, spec_from_show  # noqa: PLC0415

    cards = parse_gpu_list(gpus)
    if show_file:
        spec = spec_from_show(load_show(show_file), model or Path(show_file).stem, f"--show '{show_file}'")
        version = ollama_version or "0.12.10"
    else:
        if not model:
            raise ConfigError("autotune plan needs a MODEL (read from --host) or --show FILE.json.")
        from tuner.backend.ollama import OllamaBackend  # noqa: PLC0415
        from tuner.fitcheck import spec_of  # noqa: PLC0415

        remember_secrets_of(host)
        remember_secrets_of(os.environ.get("OLLAMA_HOST"))
        backend = OllamaBackend(host)
        try:
            version = ollama_version or backend.server_info().version
            info = backend.model_info(model)
        finally:
            backend.close()
        read = spec_of(info)
        if read is None:
            raise TunerError(
                f"Ollama at '{backend.host}' sent no tensor list for '{model}'; save /api/show and use --show."
            )
        spec = read
    try:
        from tuner.estimate.versions import parse_version  # noqa: PLC0415

        parse_version(version)
    except ValueError as exc:
        raise ConfigError(f"--ollama-version '{version}': {exc}") from exc
    contexts = parse_ctx_list(ctx_list, spec.context_length or 131072)
    fa = None if flash_attn == "auto" else flash_attn == "on"
    if kv_type != "f16" and fa is None:
        fa = True  # a quantized KV cache is what OLLAMA_FLASH_ATTENTION=1 is set for; without it Ollama uses f16
    result = make_plan(
        spec,
        cards,
        contexts,
        engine=engine,
        version=version,
        kv_type=kv_type,
        num_parallel=num_parallel,
        flash_attn=fa,
        margin=margin,
    )
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else render(result))
