"""What a run needs, as frozen dataclasses, and the parsers for user-given values. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuner.errors import ConfigError
from tuner.units import GiB, KiB, MiB, TiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_BINARY = {"k": KiB, "m": MiB, "g": GiB, "t": TiB}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def bytes_of(text: str) -> int | None:
    """'20GiB' -> bytes, or None if `text` is not a size. KB/MB/GB/TB are decimal; KiB..TiB and the bare
    letters K/M/G/T are binary; no unit (or B) is bytes. The one size parser of the project."""
    match = _SIZE_RE.match(text or "")
    if not match:
        return None
    number = float(match.group(1))
    unit = (match.group(2) or "b").lower()
    if unit == "b":
        return int(number)
    decimal = unit.endswith("b") and not unit.endswith("ib")
    return int(number * (_DECIMAL if decimal else _BINARY)[unit[0]])


def parse_bytes(text: str, flag: str = "value") -> int:
    """A size given on the command line; ConfigError quoting it when it is not one or not positive."""
    value = bytes_of(text)
    if value is None:
        raise ConfigError(f"{flag} '{text}' is not a size; use e.g. 20GiB, 24GB or 512MiB.")
    if value <= 0:
        raise ConfigError(f"{flag} '{text}' must be larger than zero; use e.g. 20GiB.")
    return value


def parse_quant_list(text: str | None) -> list[str]:
    if not text:
        return []
    items = [q.strip() for q in text.split(",") if q.strip()]
    for item in items:
        if not re.fullmatch(r"[A-Za-z0-9_]+", item):
            raise ConfigError(
                f"--quant entry '{item}' is not a quantization name; use e.g. q4_K_M,q8_0,fp16."
            )
    return items


def ctx_ladder(trained_ctx: int, max_ctx: int | None = None, min_ctx: int | None = None) -> list[int]:
    """Powers of two from 2048 (or the first one >= min_ctx) up to min(trained context, max_ctx)."""
    top = min(trained_ctx, max_ctx) if max_ctx else trained_ctx
    low = 2048
    while min_ctx and low < min_ctx:
        low *= 2
    ladder = []
    ctx = low
    while ctx <= top:
        ladder.append(ctx)
        ctx *= 2
    if not ladder:
        raise ConfigError(
            f"No context length between {low} and {top} to try (trained context {trained_ctx}, "
            f"--max-ctx {max_ctx}, --min-ctx {min_ctx}); lower --min-ctx or raise --max-ctx."
        )
    return ladder


@dataclass(frozen=True)
class MeasureSettings:
    num_predict: int = 64  # tokens per measured generation
    depth: float = 0.0  # fraction of num_ctx filled with prompt before measuring (0 = a short prompt)
    min_repeats: int = 3
    max_repeats: int = 8
    target_rse: float = 0.02  # stop repeating when the relative standard error of decode tok/s is below this
    warmup: int = 1


@dataclass(frozen=True)
class Timeouts:
    """How long anything may take (seconds). The defaults fit a 671B model loading from slow disks: about
    400 GB (q4_K_M) at 150 MB/s is 45 minutes; a generation on a model that spills to the CPU, with a deep
    prompt, can take many minutes before its first token."""

    connect_s: float = 10.0  # --connect-timeout: opening a connection to the server
    read_s: float = 120.0  # --read-timeout: silence between two bytes of an answer that has started
    load_s: float = 3600.0  # --load-timeout: a model load, from the request to the server's answer
    generate_s: float = 1800.0  # --generate-timeout: one generation, prompt processing included
    trial_s: float = 14400.0  # --trial-timeout: a whole trial (unload, load, warm-up, every repeat, unload)
    request_s: float = 120.0  # a small request (version, ps, show, list, the unload request)
    unload_s: float = 120.0  # after an unload, until the server lists no model


@dataclass(frozen=True)
class RetryPolicy:
    """What a study does about failures that are not the config's fault."""

    retries: int = 3  # --retries: further attempts of a trial after a transient failure
    backoff_s: float = (
        2.0  # --retry-backoff: the wait before the first retry; doubles each time, at most 60 s
    )
    server_wait_s: float = 900.0  # --server-wait: how long the study waits for a server that went down
    poll_s: float = 5.0  # how often it asks whether the server is back
    failed_in_row: int = 3  # this many trials failing in a row (attempts spent) stop the study
    heartbeat_s: int = 30  # --heartbeat: a running trial's heartbeat; stale after 3 of them (RDB storages)

    def backoff(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1, 2, ...)."""
        return min(60.0, self.backoff_s * 2 ** (attempt - 1))

    @property
    def grace_s(self) -> int:
        return 3 * self.heartbeat_s


@dataclass(frozen=True)
class StudyConfig:
    model: str  # what the user typed (tag or first GGUF path)
    tags: tuple[str, ...]  # the resolved variants
    engine: str
    budget: int
    storage: str
    study_name: str
    max_ctx: int | None = None
    min_ctx: int | None = None
    vram_limit_bytes: int | None = None
    gpu_only: bool = False
    baseline_ctx: int | None = None
    seed: int = 0
    sampler: str = "auto"  # "auto" (ours) | "tpe" | "tpe-mv" | "random" | "gp" (study.SAMPLERS)
    tune_flash_attn: bool = False  # llama-server only
    tune_kv_cache: bool = False  # llama-server only
    tune_parallel: tuple[int, ...] = ()  # Ollama --serve: OLLAMA_NUM_PARALLEL values to search
    tune_gpus: tuple[str, ...] = ()  # Ollama --serve: GPU subsets ("0", "0,1", "0,1+spread") to search
    tune_batch: tuple[int, ...] = ()  # Ollama: num_batch values to search per request (first: the default)
    tune_main_gpu: tuple[int, ...] = ()  # Ollama: main_gpu values to search per request (first: the default)
    tune_threads: tuple[int, ...] = ()  # Ollama: num_thread values per request (0 first: Ollama's default)
    serve: bool = False  # Ollama --serve: trials are grouped by server environment (few restarts)
    measure: MeasureSettings = MeasureSettings()
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    remeasure_rounds: int = 0  # after the budget: rounds of the interleaved re-measure of the contenders
    allow_other_machine: bool = False  # resume a study on another machine or server, mixing their trials
    allow_cpu_only: bool = False  # picks may run entirely on the CPU even where a GPU config loads
    quality: bool = True  # measure each tag's fidelity against the most precise one (tuner.quality)
    max_quality_loss: float | None = None  # constraint: mean KL divergence (nats) against the reference
    quality_tokens: int = 32  # reference tokens per prompt of the quality measure

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"--budget {self.budget} must be at least 1; use e.g. --budget 40.")
        if not 0.0 <= self.measure.depth < 1.0:
            raise ConfigError(f"--depth {self.measure.depth} must be in [0, 1); use e.g. --depth 0.5.")
        if self.max_quality_loss is not None and not self.max_quality_loss >= 0:
            raise ConfigError(
                f"--max-quality-loss {self.max_quality_loss} must be a KL divergence >= 0 in nats; "
                "use e.g. --max-quality-loss 0.05."
            )
        if self.max_quality_loss is not None and not self.quality:
            raise ConfigError("--max-quality-loss needs the quality measure; drop --no-quality.")


def slug(text: str) -> str:
    """A study name from a model name: 'deepseek-r1:32b' -> 'deepseek-r1-32b'."""
    base = text.rsplit("/", 1)[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-").lower() or "study"
