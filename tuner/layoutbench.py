"""`autotune serve-bench MODEL --serve --layouts`: one `ollama serve` spread over every GPU against separate
instances, one per GPU subset, under the same total concurrent load; the layout to deploy and its files.

    autotune serve-bench llama3.1:8b --serve --layouts --parallel 2 --sla-ttft 1 --out layout/

For each candidate layout (tuner.layouts) autotune starts every instance at once, each on its own private
loopback port with CUDA_VISIBLE_DEVICES set to its GPUs, checks that each took its settings and saw exactly
its GPUs, warms the model up on each, and climbs one concurrency ladder over the whole layout: at a level of
N streams the streams are divided evenly among the instances (a stream keeps its instance). The layouts'
serving picks (most aggregate tok/s within the SLA) decide; the instances are stopped by PID on every exit.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from tuner.cliutil import say
from tuner.concurrency import Ladder, LevelResult, run_ladder
from tuner.errors import BackendError, ConfigError
from tuner.layouts import Layout, candidate_layouts, choose_layout, gpu_ids, instance_env, layout_files
from tuner.serverenv import ServerSettings, render_docker_flags
from tuner.servetune import PROMPT, ladder_json, say_ladder, warm_up, write_ladder_files, write_server_files


@dataclass(frozen=True)
class LayoutRun:
    layout: Layout
    ladder: Ladder
    pick: LevelResult | None
    start_s: float  # starting every instance of the layout, until each answered


def found_gpus(binary: str, models_dir: Path, log_dir: Path) -> tuple[list[str], str]:
    """The GPUs `ollama serve` finds with the user's environment, and its release (one short start)."""
    from tuner.backend.ollamaserve import ManagedOllama  # noqa: PLC0415

    with ManagedOllama(binary, models_dir=models_dir, log_path=log_dir / "serve-gpus.log") as server:
        version = str(httpx.get(server.url + "/api/version", timeout=10).json().get("version", ""))
        return logged_gpus(server), version


def logged_gpus(server: Any, wait_s: float = 15.0) -> list[str]:
    """The GPUs a started server lists in its log. Ollama logs them while or after it starts listening, so
    this waits (up to wait_s) for the first `inference compute` line."""
    deadline = time.monotonic() + wait_s
    while 'msg="inference compute"' not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return gpu_ids(server.log_text())


def _routed(
    urls: list[str], model: str, per_stream: int, options: dict[str, Any], stack: contextlib.ExitStack
) -> Callable[[int], Any]:
    """A sender for run_ladder that sends stream k's requests to instance k mod len(urls) (a level's
    requests are numbered stream by stream, per_stream each, from a multiple of per_stream), after one
    warm-up request per instance; the streamers close with `stack`."""
    from tuner.backend.stream import OllamaStreamer  # noqa: PLC0415

    streamers = [OllamaStreamer(u) for u in urls]
    for s in streamers:
        stack.callback(s.close)
    for url, s in zip(urls, streamers, strict=True):
        warm_up(s, model, options, url)

    def send(i: int) -> Any:
        return streamers[(i // per_stream) % len(streamers)].generate(model, PROMPT.format(i=i), options)

    return send


def run_layout(
    binary: str,
    layout: Layout,
    settings: ServerSettings,
    version: str,
    model: str,
    options: dict[str, Any],
    max_concurrency: int | None,
    per_stream: int,
    sla: tuple[float | None, float | None],
    models_dir: Path,
    log_dir: Path,
    quiet: bool,
) -> LayoutRun:
    """Every instance of `layout` up at once, checked, one ladder over all of them, every instance stopped."""
    from tuner.backend.ollamaserve import ManagedOllama  # noqa: PLC0415
    from tuner.servemanaged import check_took  # noqa: PLC0415

    slots = sum(inst.num_parallel for inst in layout.instances)
    with contextlib.ExitStack() as stack:
        began = time.monotonic()
        urls = []
        for i, inst in enumerate(layout.instances):
            env = instance_env(inst, settings, version, None)
            server = ManagedOllama(
                binary, models_dir=models_dir, env=env, log_path=log_dir / f"{layout.name}-{i}.log"
            )
            stack.enter_context(server)
            check_took(server, env, f"{layout.name} instance {i} ({render_docker_flags(env)})")
            saw = logged_gpus(server)
            if len(saw) != len(inst.gpus):
                raise BackendError(
                    f"'{binary} serve' with CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} found {len(saw)} "
                    f"GPU(s), not {len(inst.gpus)}; see '{server.log_path}'. Run --layouts on a machine whose "
                    "GPUs CUDA_VISIBLE_DEVICES selects (CUDA GPUs)."
                )
            urls.append(server.url)
        start_s = time.monotonic() - began
        send = _routed(urls, model, per_stream, options, stack)

        def progress(level: LevelResult) -> None:
            if not quiet:
                say(
                    f"  {level.concurrency} concurrent over {len(urls)} instance(s): {level.ok} ok, {level.errors} errors"
                )

        ladder = run_ladder(send, max_concurrency or 2 * slots, per_stream, on_level=progress)
    return LayoutRun(layout, ladder, ladder.pick(*sla), start_s)


def serve_layouts(
    binary: str,
    model: str,
    options: dict[str, Any],
    settings: ServerSettings,
    slots_per_gpu: int,
    max_concurrency: int | None,
    per_stream: int,
    sla: tuple[float | None, float | None],
    models_dir: Path,
    log_dir: Path,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """Compare the layouts, print the comparison, write the chosen layout's files into out_dir."""
    ids, version = found_gpus(binary, models_dir, log_dir)
    try:
        layouts = candidate_layouts(ids, slots_per_gpu)
    except ValueError as exc:
        raise ConfigError(
            f"--layouts: {exc} (the 'inference compute' lines of its log); run it on a multi-GPU machine, or "
            "leave out --layouts."
        ) from exc
    runs: list[LayoutRun] = []
    began = time.monotonic()
    for n, layout in enumerate(layouts, 1):
        if not as_json:
            eta = ""
            if runs:
                left = (time.monotonic() - began) / len(runs) * (len(layouts) - len(runs))
                eta = f", about {left:.0f} s left"
            say(f"layout {n} of {len(layouts)}: {layout.name}, {layout.describe()}{eta}")
        runs.append(
            run_layout(
                binary,
                layout,
                settings,
                version,
                model,
                options,
                max_concurrency,
                per_stream,
                sla,
                models_dir,
                log_dir,
                as_json,
            )
        )
        if not as_json:
            lead = choose_layout(
                [r.pick.aggregate_tok_s if r.pick else None for r in runs], layouts[: len(runs)]
            )
            best_name = runs[lead].layout.name if lead is not None else "none"
            say(f"  {_summary_line(runs[-1])}; best so far: {best_name}")
    chosen = choose_layout([r.pick.aggregate_tok_s if r.pick else None for r in runs], layouts)
    best = runs[chosen] if chosen is not None else None
    summary = [_summary_line(r) for r in runs]
    report: dict[str, Any] = {
        "model": model,
        "options": options,
        "version": version,
        "gpus": ids,
        "slots_per_gpu": slots_per_gpu,
        "sla_ttft_s": sla[0],
        "sla_itl_s": sla[1],
        "layouts": [
            {
                "name": r.layout.name,
                "instances": [
                    {"gpus": list(i.gpus), "num_parallel": i.num_parallel} for i in r.layout.instances
                ],
                "start_s": r.start_s,
                **ladder_json(r.ladder, r.pick),
            }
            for r in runs
        ],
        "best": best.layout.name if best else None,
    }
    if as_json:
        click.echo(json.dumps(report))
    else:
        for r in runs:
            click.echo(f"\n== {r.layout.name}: {r.layout.describe()} (started in {r.start_s:.1f} s)")
            say_ladder(r.ladder, r.pick)
        click.echo("\n" + "\n".join(summary))
        click.echo(
            f"best layout: {best.layout.describe() if best else 'none (no layout had a serving pick)'}"
        )
    if out_dir is None:
        return
    for r in runs:
        write_ladder_files(
            out_dir,
            f"concurrency-layout-{r.layout.name}",
            {"model": model, "layout": r.layout.name, **ladder_json(r.ladder, r.pick)},
            r.ladder,
            r.pick.concurrency if r.pick else None,
            sla,
        )
    (out_dir / "layouts.json").write_text(json.dumps({"schema": 1, **report}, indent=2) + "\n")
    from tuner.report.concurrency import plot_layouts  # noqa: PLC0415 - matplotlib only when asked

    say(f"wrote {plot_layouts(report['layouts'], report['best'], out_dir / 'layouts.png')}")
    for path in _deploy_files(best, settings, version, "\n".join(f"- {s}" for s in summary), out_dir):
        say(f"wrote {path}")


def _summary_line(run: LayoutRun) -> str:
    if run.pick is None:
        return f"{run.layout.name} ({run.layout.describe()}): no serving pick"
    return (
        f"{run.layout.name} ({run.layout.describe()}): {run.pick.aggregate_tok_s:.1f} tok/s in all at "
        f"{run.pick.concurrency} concurrent streams"
    )


def _deploy_files(
    best: LayoutRun | None, settings: ServerSettings, version: str, summary: str, out_dir: Path
) -> list[Path]:
    """Separate instances: their files under instances/; the spread instance: server.env and friends."""
    if best is None:
        return []
    layout = best.layout
    _remove_other_answer(out_dir, layout.separate)
    if not layout.separate:
        env = instance_env(layout.instances[0], settings, version, None)
        env.pop("CUDA_VISIBLE_DEVICES")  # every GPU: the server's own default
        return write_server_files(out_dir, env)
    paths = []
    for rel, text in layout_files(layout, settings, version, summary).items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


SPREAD_FILES = ("server.env", "ollama.service.d/autotune.conf", "docker-run-flags.txt")
INSTANCE_GLOBS = (
    "instances/instance-*.env",
    "instances/ollama@*.service.d/autotune.conf",
    "instances/docker-run-flags-*.txt",
    "instances/ollama@.service",
    "instances/nginx-ollama.conf",
    "instances/LAYOUT.md",
)


def _remove_other_answer(out_dir: Path, separate: bool) -> None:
    """The files of the other kind of answer, left by an earlier run into this folder (it holds one answer):
    the spread instance's server files when separate instances won, the instances' files when spread won."""
    stale = [out_dir / name for name in SPREAD_FILES] if separate else []
    if not separate:
        stale = [p for pattern in INSTANCE_GLOBS for p in out_dir.glob(pattern)]
    for path in stale:
        if path.is_file():
            path.unlink()
