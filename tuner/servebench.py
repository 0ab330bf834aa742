"""`autotune serve-bench MODEL`: the concurrency ladder against a running Ollama, and the serving pick.

    autotune serve-bench llama3.2:1b --host http://127.0.0.1:11434 --num-ctx 4096 --max-concurrency 8 \
        --sla-ttft 2 --sla-itl 0.1 --out reports/serving

Wiring only: the ladder and its figures are tuner.concurrency, the timed requests tuner.backend.stream.
One warm-up request loads the model with these options first (not counted), so level 1 is not a cold load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuner.cliutil import Seconds, WholeNumber, say
from tuner.concurrency import Ladder, LevelResult, render_table, run_ladder
from tuner.errors import BackendError, ModelNotFound, Unreachable

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


def write_outputs(
    out_dir: Path, ladder: Ladder, pick: LevelResult | None, meta: dict[str, Any]
) -> list[Path]:
    from tuner.report.concurrency import plot_ladder  # noqa: PLC0415 - matplotlib only when asked

    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "schema": 1,
        **meta,
        **ladder.to_json(),
        "serving_pick": pick.concurrency if pick else None,
    }
    path = out_dir / "concurrency.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return [
        path,
        plot_ladder(ladder.to_json(), pick.concurrency if pick else None, out_dir / "concurrency.png"),
    ]


@click.command("serve-bench")
@click.argument("model")
@click.option("--host", default=None, help="Ollama URL (default: OLLAMA_HOST, else http://127.0.0.1:11434).")
@click.option("--num-ctx", default=None, type=WholeNumber("4096", min=4), help="Context per slot (num_ctx).")
@click.option("--num-gpu", default=None, type=WholeNumber("99", min=0), help="Layers on the GPU (num_gpu).")
@click.option(
    "--max-concurrency",
    default=8,
    show_default=True,
    type=WholeNumber("8"),
    help="The top rung: 1, 2, 4 ... up to this many concurrent streams (set it to OLLAMA_NUM_PARALLEL "
    "or a little above to see the queue).",
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
@click.option("--out", default=None, help="Also write concurrency.json and concurrency.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the ladder as JSON for scripts.")
def serve_bench_cmd(
    model: str,
    host: str | None,
    num_ctx: int | None,
    num_gpu: int | None,
    max_concurrency: int,
    requests_per_stream: int,
    num_predict: int,
    sla_ttft: float | None,
    sla_itl: float | None,
    out: str | None,
    as_json: bool,
) -> None:
    """Concurrent streams 1, 2, 4 ...: throughput, TTFT / ITL / latency percentiles, the serving pick."""
    from tuner.backend.ollama import resolve_host  # noqa: PLC0415
    from tuner.backend.stream import OllamaStreamer  # noqa: PLC0415

    url = resolve_host(host)
    options = bench_options(num_ctx, num_gpu, num_predict)
    streamer = OllamaStreamer(url)
    try:
        warm_up(streamer, model, options, url)

        def send(i: int) -> Any:
            return streamer.generate(model, PROMPT.format(i=i), options)

        def progress(level: LevelResult) -> None:
            if not as_json:
                say(f"  {level.concurrency} concurrent: {level.ok} ok, {level.errors} errors")

        ladder = run_ladder(send, max_concurrency, requests_per_stream, on_level=progress)
    finally:
        streamer.close()
    pick = ladder.pick(sla_ttft, sla_itl)
    meta = {"model": model, "host": url, "options": options, "sla_ttft_s": sla_ttft, "sla_itl_s": sla_itl}
    if as_json:
        click.echo(
            json.dumps({**meta, **ladder.to_json(), "serving_pick": pick.concurrency if pick else None})
        )
    else:
        click.echo(render_table(ladder, pick))
        click.echo(f"stopped: {ladder.stopped}")
        if pick is None:
            click.echo("serving pick: none (every level had errors or missed the SLA)")
        else:
            click.echo(
                f"serving pick: {pick.concurrency} concurrent streams, {pick.aggregate_tok_s:.1f} tok/s in all"
            )
    if out:
        for path in write_outputs(Path(out), ladder, pick, meta):
            say(f"wrote {path}")
