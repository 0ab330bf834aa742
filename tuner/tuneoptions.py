"""The tune command's options, in the order --help lists them: `@tune_options` applies them all to the
command (tuner.cli), as the stacked decorators would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tuner.cliutil import Fraction, Seconds, WholeNumber
from tuner.config import RetryPolicy, Timeouts

DEFAULT_STORAGE = "sqlite:///studies/autotune.db"

F = TypeVar("F", bound=Callable[..., Any])

# Top to bottom as they stood above the function.
TUNE_OPTIONS = [
    click.argument("models", nargs=-1, required=True),
    click.option(
        "--budget",
        type=WholeNumber("--budget 40"),
        default=40,
        show_default=True,
        help="Total finished trials in the study.",
    ),
    click.option(
        "--engine", type=click.Choice(["ollama", "llama-server"]), default="ollama", show_default=True
    ),
    click.option(
        "--host", default=None, help="Ollama URL (default: OLLAMA_HOST, else http://127.0.0.1:11434)."
    ),
    click.option(
        "--llama-server",
        "llama_server",
        default=None,
        help="llama-server binary (default: LLAMA_SERVER, PATH, or the build cache).",
    ),
    click.option("--quant", default=None, help="Quantizations to compare, e.g. q4_K_M,q8_0,fp16."),
    click.option("--tags", default=None, help="Full tags to compare, comma-separated."),
    click.option("--pull", is_flag=True, help="Pull tags that are not local, with a progress bar."),
    click.option(
        "--max-ctx",
        type=WholeNumber("--max-ctx 32768"),
        default=None,
        help="Largest num_ctx to try (default: the trained context).",
    ),
    click.option(
        "--min-ctx",
        type=WholeNumber("--min-ctx 8192"),
        default=None,
        help="Constraint: num_ctx must be at least this.",
    ),
    click.option("--vram-limit", default=None, help="Constraint: peak VRAM at most this, e.g. 20GiB."),
    click.option("--gpu-only", is_flag=True, help="Constraint: no part of the model on the CPU."),
    click.option(
        "--depth",
        type=Fraction(),
        default=0.0,
        show_default=True,
        help="Fill this fraction of num_ctx with prompt before measuring.",
    ),
    click.option(
        "--num-predict",
        type=WholeNumber("--num-predict 64"),
        default=64,
        show_default=True,
        help="Tokens per measured generation.",
    ),
    click.option(
        "--max-repeats",
        type=WholeNumber("--max-repeats 8"),
        default=8,
        show_default=True,
        help="At most this many measured generations per trial (at least 3 are made).",
    ),
    click.option(
        "--baseline-ctx",
        type=WholeNumber("--baseline-ctx 4096"),
        default=None,
        help="num_ctx of the baseline trial (the engine's own placement); default: the engine's own default context.",
    ),
    click.option(
        "--remeasure-rounds",
        type=click.IntRange(0, 50),
        default=3,
        show_default=True,
        help="After the budget, measure the configs within noise of the fastest again, interleaved, up to this many rounds (0: never).",
    ),
    click.option(
        "--allow-other-machine",
        is_flag=True,
        help="Resume a study on another machine or server (other GPUs, driver, server version or build), mixing their trials.",
    ),
    click.option(
        "--allow-cpu-only",
        is_flag=True,
        help="Let the picks name a config that runs entirely on the CPU even where a GPU config loads.",
    ),
    click.option(
        "--quality/--no-quality",
        default=True,
        show_default=True,
        help="Measure each tag's quality loss (KL divergence of its next-token log-probabilities from the most precise tag's), once per tag.",
    ),
    click.option(
        "--max-quality-loss",
        type=click.FloatRange(min=0.0),
        default=None,
        help="Constraint: a tag may lose at most this mean KL divergence (nats per token) against the most precise tag, e.g. 0.05.",
    ),
    click.option(
        "--quality-tokens",
        type=click.IntRange(4, 512),
        default=32,
        show_default=True,
        help="Tokens the quality measure reads per prompt of its set.",
    ),
    click.option(
        "--tune-flash-attn",
        is_flag=True,
        help="llama-server, or Ollama with --serve: also tune flash attention.",
    ),
    click.option(
        "--tune-kv-cache",
        is_flag=True,
        help="llama-server, or Ollama with --serve: also tune the KV cache type f16/q8_0/q4_0.",
    ),
    click.option(
        "--tune",
        "tune_knobs",
        default="",
        help="Knobs to search: flash-attn,kv-cache,parallel,gpus (Ollama: with --serve, a restart each), "
        "num-batch,main-gpu,num-thread (per request).",
    ),
    click.option(
        "--parallel-values",
        default="1,2,4,8",
        show_default=True,
        help="With --tune parallel: the OLLAMA_NUM_PARALLEL values to try.",
    ),
    click.option(
        "--serve",
        is_flag=True,
        help="Run 'ollama serve' here (private port, your model store), restarting it for server-wide settings.",
    ),
    click.option(
        "--ollama", "ollama_path", default=None, help="With --serve: the ollama binary (default: on PATH)."
    ),
    click.option(
        "--concurrency",
        "ladder_max",
        default=0,
        type=click.IntRange(0, 256),
        show_default=True,
        help="After the study, the concurrency ladder (1, 2, 4 ... up to N streams) on the best config; 0: none.",
    ),
    click.option(
        "--sla-ttft",
        default=None,
        type=Seconds("2"),
        help="With --concurrency: target p90 time to first token, seconds (the serving pick meets it).",
    ),
    click.option(
        "--sla-itl",
        default=None,
        type=Seconds("0.1"),
        help="With --concurrency: target p90 inter-token latency, seconds.",
    ),
    click.option(
        "--predict/--no-predict",
        "predict_memory",
        default=True,
        show_default=True,
        help="Skip configs the memory estimator predicts cannot fit (with a margin learned from the trials).",
    ),
    click.option(
        "--sampler",
        type=click.Choice(["auto", "tpe", "tpe-mv", "random", "gp"]),
        default="auto",
        show_default=True,
        help="auto: structure-aware search (ours); the others are plain Optuna samplers over the whole space.",
    ),
    click.option("--seed", default=0, type=int, show_default=True),
    click.option(
        "--study", "study_name", default=None, help="Study name (default: from the model and quants)."
    ),
    click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Any Optuna storage URL."),
    click.option("--out", default=None, help="Report folder (default: reports/<study>)."),
    click.option(
        "--apply", "apply_name", default=None, help="Create this Ollama model from the best config."
    ),
    click.option(
        "--connect-timeout",
        type=Seconds("--connect-timeout 10"),
        default=Timeouts.connect_s,
        show_default=True,
        help="Seconds to open a connection to the server.",
    ),
    click.option(
        "--read-timeout",
        type=Seconds("--read-timeout 120"),
        default=Timeouts.read_s,
        show_default=True,
        help="Longest silence, in seconds, between two bytes of an answer that has started.",
    ),
    click.option(
        "--load-timeout",
        type=Seconds("--load-timeout 3600"),
        default=Timeouts.load_s,
        show_default=True,
        help="Seconds a model load may take (a 671B model from slow disks takes most of an hour).",
    ),
    click.option(
        "--generate-timeout",
        type=Seconds("--generate-timeout 1800"),
        default=Timeouts.generate_s,
        show_default=True,
        help="Seconds one generation may take, prompt processing included.",
    ),
    click.option(
        "--trial-timeout",
        type=Seconds("--trial-timeout 14400"),
        default=Timeouts.trial_s,
        show_default=True,
        help="Seconds a whole trial may take, its retries included.",
    ),
    click.option(
        "--retries",
        type=WholeNumber("--retries 3", min=0),
        default=RetryPolicy.retries,
        show_default=True,
        help="Further attempts of a trial after a transient failure (timeout, reset, 5xx).",
    ),
    click.option(
        "--retry-backoff",
        type=Seconds("--retry-backoff 2", zero_ok=True),
        default=RetryPolicy.backoff_s,
        show_default=True,
        help="Seconds before the first retry; doubled for each further one (at most 60).",
    ),
    click.option(
        "--server-wait",
        type=Seconds("--server-wait 900", zero_ok=True),
        default=RetryPolicy.server_wait_s,
        show_default=True,
        help="Seconds the study waits for a server that went down before it stops.",
    ),
    click.option(
        "--heartbeat",
        type=WholeNumber("--heartbeat 30"),
        default=RetryPolicy.heartbeat_s,
        show_default=True,
        help="Seconds between heartbeats of a running trial; one silent for 3 is taken over as its worker died.",
    ),
]


def tune_options(f: F) -> F:
    """Apply TUNE_OPTIONS as stacked decorators: the first in the list outermost."""
    for option in reversed(TUNE_OPTIONS):
        f = option(f)
    return f
