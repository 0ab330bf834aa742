"""Thin click wiring: parse, build the config, call, render errors. No engine or study logic here.

autotune MODEL [MODEL ...] [options]      tune (the default command)
autotune plan MODEL --gpus 2x24GiB        will it fit (the memory estimator, nothing loaded)
autotune report --study NAME              rebuild a report from a stored study
autotune serve-bench MODEL --host URL     the concurrency ladder and the serving pick
autotune qualify studies/PLAN.toml        a night's qualification of this machine (tuner.qualify)

The tune command's option declarations are in tuner.tuneoptions (applied by @tune_options), the option
types and the error runner in tuner.cliutil, the progress display in tuner.progress.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import click

from tuner import __version__
from tuner.backend.base import Backend, ModelInfo
from tuner.cliutil import run_command, say
from tuner.config import (
    MeasureSettings,
    RetryPolicy,
    StudyConfig,
    Timeouts,
    parse_bytes,
    parse_quant_list,
    slug,
)
from tuner.errors import ConfigError, TunerError
from tuner.plancmd import plan_cmd
from tuner.qualifycmd import qualify_cmd
from tuner.redact import remember_secrets_of
from tuner.schema import StudyMeta
from tuner.servebench import serve_bench_cmd
from tuner.tuneoptions import DEFAULT_STORAGE, tune_options
from tuner.tunesetup import build_backend as _build_backend
from tuner.tunesetup import fitcheck as _fitcheck
from tuner.tunesetup import resolve_variants as _resolve_variants
from tuner.tunesetup import server_lock as _server_lock
from tuner.tunesetup import write_report as _write_report
from tuner.units import GiB


class DefaultGroup(click.Group):
    """`autotune MODEL ...` means `autotune tune MODEL ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["tune", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autotune")
def cli() -> None:
    """autotune: measure the fastest num_gpu / num_ctx / quant tag that fits your GPUs.

    \b
    autotune deepseek-r1:32b --budget 40
    autotune report --study deepseek-r1-32b
    """


@cli.command("tune")
@tune_options
def tune_cmd(
    models: tuple[str, ...],
    budget: int,
    engine: str,
    host: str | None,
    llama_server: str | None,
    quant: str | None,
    tags: str | None,
    pull: bool,
    max_ctx: int | None,
    min_ctx: int | None,
    vram_limit: str | None,
    gpu_only: bool,
    depth: float,
    num_predict: int,
    max_repeats: int,
    baseline_ctx: int | None,
    remeasure_rounds: int,
    allow_other_machine: bool,
    allow_cpu_only: bool,
    quality: bool,
    max_quality_loss: float | None,
    quality_tokens: int,
    tune_flash_attn: bool,
    tune_kv_cache: bool,
    tune_knobs: str,
    parallel_values: str,
    serve: bool,
    ollama_path: str | None,
    ladder_max: int,
    sla_ttft: float | None,
    sla_itl: float | None,
    predict_memory: bool,
    sampler: str,
    seed: int,
    study_name: str | None,
    storage: str,
    out: str | None,
    apply_name: str | None,
    connect_timeout: float,
    read_timeout: float,
    load_timeout: float,
    generate_timeout: float,
    trial_timeout: float,
    retries: int,
    retry_backoff: float,
    server_wait: float,
    heartbeat: int,
) -> None:
    """Tune MODEL: an Ollama tag, or GGUF files with --engine llama-server."""
    for url in (host, os.environ.get("OLLAMA_HOST"), storage):
        remember_secrets_of(url)  # masked in every line printed from here on
    settings = MeasureSettings(num_predict=num_predict, depth=depth, max_repeats=max(3, max_repeats))
    timeouts = Timeouts(
        connect_s=connect_timeout,
        read_s=read_timeout,
        load_s=load_timeout,
        generate_s=generate_timeout,
        trial_s=trial_timeout,
        request_s=max(read_timeout, min(Timeouts.request_s, generate_timeout)),  # a small request: ps, show
    )
    retry = RetryPolicy(
        retries=retries,
        backoff_s=retry_backoff,
        server_wait_s=server_wait,
        poll_s=min(RetryPolicy.poll_s, max(0.1, server_wait / 10)),
        heartbeat_s=heartbeat,
    )
    limit = parse_bytes(vram_limit, "--vram-limit") if vram_limit else None
    from tuner.servetune import parse_tune  # noqa: PLC0415

    knobs = parse_tune(tune_knobs, parallel_values, serve=serve, engine=engine)
    tune_flash_attn = tune_flash_attn or knobs.flash_attn
    tune_kv_cache = tune_kv_cache or knobs.kv_cache
    if engine == "ollama" and (tune_flash_attn or tune_kv_cache) and not serve:
        raise ConfigError(
            "--tune-flash-attn and --tune-kv-cache need --serve with Ollama (it sets them server-wide: autotune "
            "restarts a server it runs itself), or --engine llama-server."
        )
    if serve and (engine != "ollama" or host):
        raise ConfigError("--serve runs its own 'ollama serve': leave out --host and --engine llama-server.")
    if (sla_ttft or sla_itl) and not ladder_max:
        raise ConfigError("--sla-ttft and --sla-itl set the serving pick's targets; add --concurrency N.")
    if apply_name and engine != "ollama":
        raise ConfigError("--apply creates an Ollama model; with llama-server use the command in best.sh.")

    from tuner.report import report_dir  # noqa: PLC0415
    from tuner.study import make_sampler  # noqa: PLC0415

    make_sampler(sampler, seed)  # a sampler that cannot run is a usage error, before any server is touched
    name = study_name or slug(models[0]) + (
        "-" + "-".join(q.lower() for q in parse_quant_list(quant)) if quant else ""
    )
    out_dir = report_dir(out, name)  # an unusable --out is found now, not after the last trial
    from tuner.storage import close_storage, make_storage  # noqa: PLC0415

    # and a storage that cannot be opened (or is damaged), before any server is touched
    close_storage(make_storage(storage))
    if serve:
        from tuner.servetune import managed_backend  # noqa: PLC0415

        backend, probe = managed_backend(ollama_path, out_dir / "serve-logs", timeouts)
    else:
        backend, probe = _build_backend(engine, host, llama_server, timeouts)
    try:
        knobs = knobs.on_gpus([g.memory_bytes for g in probe.gpus()])
        if knobs.want_threads:
            from tuner.probe import physical_cores_of  # noqa: PLC0415

            knobs = knobs.on_host(physical_cores_of(probe))
    except TunerError:
        backend.close()  # a server autotune started is stopped on every way out
        probe.close()
        raise
    try:
        server = backend.server_info()  # fails fast, one line, if the engine is not there
        variants = _resolve_variants(backend, engine, models, quant, tags, pull)
        infos: dict[str, ModelInfo] = {v: backend.model_info(v) for v in variants}
        config = StudyConfig(
            model=models[0],
            tags=tuple(variants),
            engine=engine,
            budget=budget,
            storage=storage,
            study_name=name,
            max_ctx=max_ctx,
            min_ctx=min_ctx,
            vram_limit_bytes=limit,
            gpu_only=gpu_only,
            baseline_ctx=baseline_ctx,
            seed=seed,
            sampler=sampler,
            tune_flash_attn=tune_flash_attn,
            tune_kv_cache=tune_kv_cache,
            tune_parallel=knobs.parallel,
            tune_gpus=knobs.gpus,
            tune_batch=knobs.batch,
            tune_main_gpu=knobs.main_gpu,
            tune_threads=knobs.threads,
            serve=serve,
            measure=settings,
            timeouts=timeouts,
            retry=retry,
            remeasure_rounds=remeasure_rounds,
            allow_other_machine=allow_other_machine,
            allow_cpu_only=allow_cpu_only,
            quality=quality,
            max_quality_loss=max_quality_loss,
            quality_tokens=quality_tokens,
        )
        from tuner.fingerprint import fingerprint, model_identities  # noqa: PLC0415
        from tuner.progress import Progress  # noqa: PLC0415
        from tuner.runloop import run_study  # noqa: PLC0415
        from tuner.study import check_resume, study_meta, study_space  # noqa: PLC0415

        space = study_space(config, infos)
        engine_args = {"binary": str(getattr(backend, "binary", ""))} if engine != "ollama" else {}
        machine = fingerprint(probe, server, model_identities(backend, variants))
        meta = study_meta(config, infos, space, machine, engine_args)
        check_resume(config, meta)
        ladder = space.ctx_ladder
        gpus = ", ".join(f"{g.name} {g.memory_bytes / GiB:.0f} GiB" for g in probe.gpus()) or "no GPU visible"
        say(
            f"autotune {name}: {len(variants)} variant(s) x {space.max_layers + 1} num_gpu x {len(ladder)} contexts "
            f"({space.size()} configs), budget {budget}; {server.engine} {server.version}; GPUs: {gpus}"
        )
        if probe.source == "none":
            say(f"note: peak VRAM falls back to the engine's own figure ({getattr(probe, 'reason', '')}).")
        check = _fitcheck(backend, probe, server, infos) if predict_memory else None
        progress = Progress()
        lock = _server_lock(engine, backend, config)
        try:
            meta, records = run_study(
                config,
                backend,
                probe,
                meta,
                space,
                on_trial=progress,
                fitcheck=check,
                lock=lock,
                notify=progress.note,
                on_remeasure=lambda todo, rounds: progress.note(
                    f"re-measuring the {len(todo)} configs within noise of the fastest "
                    f"({', '.join(f'#{r.number}' for r in todo)}), interleaved, {rounds} rounds"
                ),
                on_quality=lambda variant: progress.note(f"quality: reading log-probabilities of {variant}"),
            )
        except (KeyboardInterrupt, TunerError):
            progress.close()
            _report_what_finished(storage, name, out_dir)
            raise
        finally:
            progress.close()
        _say_quality(meta.quality)
        paths = _write_report(meta, records, out_dir)
        if serve:
            from tuner.servetune import best_server_files  # noqa: PLC0415

            for path in best_server_files(meta, records, out_dir):
                paths[path.name] = path
        if ladder_max:
            from tuner.serveslots import ladders_per_slot_count  # noqa: PLC0415
            from tuner.servetune import ladder_on_best  # noqa: PLC0415
            from tuner.study import store_concurrency  # noqa: PLC0415

            sla = (sla_ttft, sla_itl)
            block = ladders_per_slot_count(backend, meta, records, ladder_max, num_predict, sla)
            if block.get("chosen") is not None:  # the server files follow the serving pick's slots
                from tuner.servetune import write_server_files  # noqa: PLC0415

                for path in write_server_files(out_dir, block["env"]):
                    paths[path.name] = path
            block = block or ladder_on_best(backend, meta, records, ladder_max, num_predict, *sla)
            if block:  # kept on the study first, so `autotune report` redraws the curves
                store_concurrency(storage, name, block)
                paths.update(_write_report(dataclasses.replace(meta, concurrency=block), records, out_dir))
        if apply_name:
            _apply(backend, apply_name, meta, records)
    finally:
        backend.close()
        probe.close()
    click.echo(f"report: {paths.get('report.html', '')}")
    if "best" in paths:
        click.echo(f"best config: {paths['best']}")


def _report_what_finished(storage: str, name: str, out_dir: Path) -> None:
    """On the way out of a stopped study: the report of the trials that finished, where it can be written."""
    from tuner.study import load_records  # noqa: PLC0415

    try:
        meta, records = load_records(storage, name)
        finished = sum(1 for r in records if r.state == "COMPLETE")
        if not finished:
            return
        paths = _write_report(meta, records, out_dir)
    except TunerError:
        return  # the storage or the disk is what failed: the error itself says so
    say(f"report of the {finished} finished trial(s): {paths.get('report.html', out_dir)}")


def _say_quality(block: dict[str, Any]) -> None:
    """One line per measured variant, or the one reason quality was not measured."""
    from tuner.fidelity import TagQuality, fmt_loss, fmt_top1  # noqa: PLC0415

    found = [TagQuality.from_dict(v) for v in (block.get("variants") or {}).values() if isinstance(v, dict)]
    measured = [q for q in found if q.measured]
    if found and not measured:
        say(f"quality not measured: {found[0].why_not}")
    for q in sorted((q for q in measured if not q.is_reference), key=lambda q: q.loss or 0.0):
        kv = f" (KV {q.kv_cache_type})" if q.kv_cache_type else ""
        say(f"quality: {q.tag}{kv}: {fmt_loss(q)}, top-1 {fmt_top1(q)} against {q.reference}")


def _apply(backend: Backend, name: str, meta: StudyMeta, records: list[Any]) -> None:
    """Create `name` from the same pick as best.Modelfile (the fastest feasible config)."""
    from tuner.report import picks  # noqa: PLC0415

    fastest = picks(meta, records).get("fastest")
    if fastest is None:
        raise TunerError(f"No feasible config to apply as '{name}'; see the report's failed trials.")
    best = fastest.trial
    params: dict[str, Any] = {"num_ctx": best.num_ctx}
    if best.num_gpu >= 0:
        params["num_gpu"] = best.num_gpu
    for knob in ("num_batch", "main_gpu", "num_thread"):  # per-request knobs the study searched and won
        if getattr(best, knob) is not None:
            params[knob] = getattr(best, knob)
    backend.create(name, best.tag, params)  # type: ignore[attr-defined]
    click.echo(f"created Ollama model '{name}' from {best.tag} with {params}")


@cli.command("report")
@click.option("--study", "study_name", required=True, help="The study to report on.")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True)
@click.option("--out", default=None, help="Report folder (default: reports/<study>).")
def report_cmd(study_name: str, storage: str, out: str | None) -> None:
    """Rebuild the whole report from a stored study (no server needed)."""
    from tuner.report import report_dir  # noqa: PLC0415
    from tuner.study import load_records  # noqa: PLC0415

    remember_secrets_of(storage)
    out_dir = report_dir(out, study_name)
    meta, records = load_records(storage, study_name)
    paths = _write_report(meta, records, out_dir)
    click.echo(f"report: {paths.get('report.html', '')}")


cli.add_command(plan_cmd)
cli.add_command(serve_bench_cmd)
cli.add_command(qualify_cmd)


def main(argv: list[str] | None = None) -> None:
    run_command(
        cli,
        argv,
        prog="autotune",
        name="autotune",
        interrupted="; finished trials are stored, run the same command again to resume.",
    )


if __name__ == "__main__":  # pragma: no cover
    main()
