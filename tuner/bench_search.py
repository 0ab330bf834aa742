"""The search benchmark's command: each strategy's studies against the simulator, scored against the truth.

    python -m tuner.bench_search --scenarios tuner/bench/scenarios.toml --budget 40 --seeds 10 \\
        [--strategies grid,random,tpe,tpe-mv,gp,auto] [--errors 0,1,2,foreign] [--jobs 2] [--only NAME,...]
        [--out FILE.md]
    python -m tuner.bench_search --profile      # one study under cProfile: where a trial's time goes

Prints the Markdown tables (and writes them to --out). The scenario file's format is in
tuner/bench/scenarios.py; what each number means is in the report's header (tuner.bench.table).
Bad input: one line, exit 2. Runs that fail are listed in the report, exit 1.
"""

from __future__ import annotations

import cProfile
import os
import platform
import pstats
import shlex
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import click

from tuner.bench.run import (
    FAST_MEASURE,
    NOISE,
    STRATEGIES,
    Job,
    run_benchmark,
    run_job,
    truth_job,
    unavailable,
)
from tuner.bench.scenarios import (
    DEFAULT_SCENARIOS,
    MEMORY_MODES,
    Scenario,
    load_scenarios,
    memory_mode,
    select,
)
from tuner.bench.table import render
from tuner.cliutil import run_command
from tuner.errors import ConfigError, TunerError
from tuner.fingerprint import cpu_name

HOW_TO_READ = """\
How to read: every run is one real study (tuner.runloop.run_study, the real OllamaBackend and SimProbe)
against an in-process simulator with noise {noise}; its finished trials are scored with the simulator's
noise-free truth, evaluated exhaustively over every (tag, num_gpu, num_ctx) the study can try. Every scenario
runs at each memory mode: the simulator's hidden error between autotune's estimate and the real buffers at
scale 0 (exact), 1 and 2 (the real H100 showed about 2), and "foreign", where the real buffers follow a
per-card-family model of another form (tuner/sim/memtruth.py), so no search wins by trusting its own model.
- best found / true best: the best true decode tok/s among the configs the study measured and judged feasible
  (scored noise-free, as the HV is, so noise cannot inflate it; a config judged feasible that truly is not
  counts for nothing) over the best feasible true decode.
- deployable HV: hypervolume of the measured configs that are truly feasible and deployable (fully on the
  GPU, or at least half the best decode: tuner.schema.deployable), scored with their true decode tok/s and
  peak VRAM, over the hypervolume of every deployable config; reference point 0 tok/s and the GPUs' total
  memory (or the scenario's vram_limit). The CPU-only config counts only where it is deployable.
- sim. time to 99% of best: simulated seconds until a config with true decode >= 99% of the best was first
  measured and judged feasible ("never": not within the budget; such runs count as infinite in the median);
  trials to 99%: the same in trials (never = budget + 1).
- sim. time: what the simulator charged for the study's loads, failed loads, generations and unloads
  (seconds a real machine would spend). Skips: trials not loaded because predicted not to fit (they cost a
  trial, next to no time); failed loads: trials whose load failed for lack of memory, with their share of the
  simulated time.
- misjudged feasibility: trials judged feasible that truly are not, and trials judged infeasible (skipped or
  failed) whose config truly fits and meets the constraints.
- trials where a user would deploy: the share of trials whose config truly is deployable.
- real ms per trial: wall time inside run_study per finished trial on this machine (storage: {storage}).
Strategies: grid = a llama-bench-style sweep (each tag, contexts ascending, num_gpu descending from every
layer); random, tpe (Optuna 5.0 defaults), tpe-mv (multivariate), gp (GPSampler) = plain Optuna samplers
over the whole space, no probes; auto = what `autotune --sampler auto` runs (its probes and sampler, and
the CLI's memory screen)."""


def _versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("optuna", "torch"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def _parse_strategies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if name not in STRATEGIES:
            raise ConfigError(f"--strategies entry '{name}' is unknown; use some of {','.join(STRATEGIES)}.")
    if not names:
        raise ConfigError(f"--strategies is empty; use e.g. --strategies {','.join(STRATEGIES)}.")
    return list(dict.fromkeys(names))


def _parse_modes(text: str) -> list[str]:
    modes = []
    for item in (m.strip() for m in text.split(",")):
        if item:

            def fail(why: str, item: str = item) -> ConfigError:
                return ConfigError(f"--errors entry {item!r} {why}.")

            modes.append(memory_mode(item, fail))
    return list(dict.fromkeys(modes))


def _profile(scenario: Scenario, strategy: str, budget: int) -> None:
    truth = truth_job(scenario if scenario.estimator_error else replace(scenario, estimator_error="1"))
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    score = run_job(Job(truth, strategy, 0, budget))
    profiler.disable()
    wall = time.perf_counter() - start
    click.echo(
        f"{scenario.name} / {strategy} / budget {budget}: {wall:.2f} s under cProfile, "
        f"{1000 * score.study_s / max(1, score.trials):.0f} ms per trial in run_study {score.error}"
    )
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--scenarios",
    "scenario_file",
    default=str(DEFAULT_SCENARIOS),
    show_default=True,
    help="TOML file of scenarios (format: tuner/bench/scenarios.py).",
)
@click.option("--budget", type=click.IntRange(min=1), default=40, show_default=True, help="Trials per study.")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Studies per scenario and strategy.",
)
@click.option("--strategies", default=",".join(STRATEGIES), show_default=True, help="Comma-separated.")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None, help="Processes at a time (default: CPU count)."
)
@click.option(
    "--errors",
    default=",".join(MEMORY_MODES),
    show_default=True,
    help="Memory modes: estimator-error scales (0 = exact) and/or 'foreign' (comma-separated).",
)
@click.option("--only", default="", help="Only these scenarios (comma-separated names).")
@click.option("--out", default=None, help="Also write the Markdown report here.")
@click.option(
    "--profile", is_flag=True, help="Profile one study (first scenario, first strategy, seed 0) and exit."
)
def bench(
    scenario_file: str,
    budget: int,
    seeds: int,
    strategies: str,
    jobs: int | None,
    errors: str,
    only: str,
    out: str | None,
    profile: bool,
) -> None:
    """Benchmark the search strategies against the simulator's noise-free truth."""
    names = _parse_strategies(strategies)
    modes = _parse_modes(errors)
    if not modes:
        raise ConfigError("--errors is empty; use e.g. --errors 0,1,2,foreign.")
    scenarios = select(load_scenarios(scenario_file), [n.strip() for n in only.split(",") if n.strip()])
    if profile:
        _profile(scenarios[0], names[0], budget)
        return
    jobs_n = jobs or os.cpu_count() or 1
    skipped = {n: why for n in names if (why := unavailable(n))}
    started = time.perf_counter()
    truths, scores = run_benchmark(
        scenarios, [n for n in names if n not in skipped], seeds, budget, jobs_n, modes=modes
    )
    wall = time.perf_counter() - started
    n_trials = sum(s.trials for s in scores)
    storage = "Optuna's InMemoryStorage"
    command = [
        "python",
        "-m",
        "tuner.bench_search",
        "--scenarios",
        scenario_file,
        "--budget",
        str(budget),
        "--seeds",
        str(seeds),
        "--strategies",
        ",".join(names),
        "--errors",
        ",".join(modes),
        "--jobs",
        str(jobs_n),
    ]
    command += ["--only", only] if only else []
    command += ["--out", out] if out else []
    header = [
        "    " + shlex.join(command),
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; {_versions()}; --jobs {jobs_n}.",
        f"Wall time: {wall:.0f} s for {len(scores)} studies ({len(scenarios)} scenarios x {len(modes)} memory "
        f"modes x {len(names) - len(skipped)} strategies x {seeds} seeds), {n_trials} simulated trials; "
        f"truth: {sum(t.eval_s for t in truths):.1f} s over all scenarios.",
        f"Measurement per trial: 1 warm-up + {FAST_MEASURE.min_repeats} measured generations of "
        f"{FAST_MEASURE.num_predict} tokens; simulator noise {NOISE}.",
        "",
        HOW_TO_READ.format(noise=NOISE, storage=storage),
    ]
    text = render(truths, scores, names, skipped, header)
    click.echo(text, nl=False)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"report: {out}", err=True)
    failed = sum(1 for s in scores if s.error)
    if failed:
        raise TunerError(
            f"{failed} of {len(scores)} runs failed (listed at the end of the report); "
            "TUNER_DEBUG=1 with --jobs 1 stops at the first one with its traceback."
        )


def main(argv: list[str] | None = None) -> None:
    run_command(bench, argv, prog="python -m tuner.bench_search", name="bench_search", interrupted=".")


if __name__ == "__main__":  # pragma: no cover
    main()
