"""The search space: which (tag, num_gpu, num_ctx[, flash_attn, kv_cache_type, num_parallel, gpus]) a trial
may take. Pure.

With Ollama --serve, flash_attn, kv_cache_type, num_parallel and gpus are server environment
(OLLAMA_FLASH_ATTENTION, _KV_CACHE_TYPE, _NUM_PARALLEL, CUDA_VISIBLE_DEVICES + OLLAMA_SCHED_SPREAD): a
trial that needs other values restarts the server. `server_key` is what a trial's server must have.

num_ctx is searched as its base-2 exponent (`log2_ctx`) so the sampler sees an ordered ladder.
num_thread (per request, like num_batch and main_gpu) only matters for layers left on the CPU: it is searched
only where num_gpu leaves some there (num_gpu < max_layers); a config fully on the GPU runs with Ollama's
default and spends no trials on it. Its choices start with 0, Ollama's default (the option is not sent).

num_gpu runs from 0 (CPU only) to block_count + 1 (every layer, the output layer included);
the baseline trial uses -1 (the engine decides), enqueued outside that range on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from tuner.backend.base import EngineOptions

FLASH_ATTN_CHOICES = ("on", "off")
KV_CACHE_CHOICES = ("f16", "q8_0", "q4_0")
SPREAD = "+spread"  # a `gpus` choice with OLLAMA_SCHED_SPREAD=1


def gpu_choices(memory_bytes: list[int]) -> tuple[str, ...]:
    """The GPU subsets worth a server start on a box with these GPUs (NVML order): every subset up to three
    GPUs, else the largest-first prefixes; each set of two or more also spread. One GPU: nothing to choose."""
    n = len(memory_bytes)
    if n < 2:
        return ()
    if n <= 3:
        subsets = [[i for i in range(n) if mask >> i & 1] for mask in range(1, 2**n)]
        subsets.sort(key=lambda s: (len(s), s))
    else:
        order = sorted(range(n), key=lambda i: (-memory_bytes[i], i))
        subsets = [sorted(order[:k]) for k in range(1, n + 1)]
    out: list[str] = []
    for s in subsets:
        label = ",".join(str(i) for i in s)
        out.append(label)
        if len(s) > 1:
            out.append(label + SPREAD)
    return tuple(out)


def parse_gpus_choice(label: str) -> tuple[tuple[int, ...], bool]:
    """'0,1+spread' -> ((0, 1), True)."""
    spread = label.endswith(SPREAD)
    body = label[: -len(SPREAD)] if spread else label
    return tuple(int(x) for x in body.split(",") if x != ""), spread


class Suggester(Protocol):
    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Config:
    tag: str
    num_gpu: int
    num_ctx: int
    flash_attn: str | None = None
    kv_cache_type: str | None = None
    num_parallel: int | None = None
    gpus: str | None = None
    num_batch: int | None = None  # per request: no restart
    main_gpu: int | None = None  # per request: no restart
    num_thread: int | None = None  # per request: CPU threads for the CPU's layers; None = Ollama's default

    @property
    def options(self) -> EngineOptions:
        return EngineOptions(
            self.num_gpu,
            self.num_ctx,
            self.flash_attn,
            self.kv_cache_type,
            self.num_parallel,
            self.gpus,
            self.num_batch,
            self.main_gpu,
            self.num_thread,
        )

    @property
    def server_key(self) -> tuple[str | None, str | None, int | None, str | None]:
        """The server environment this config runs under (with --serve)."""
        return (self.flash_attn, self.kv_cache_type, self.num_parallel, self.gpus)


@dataclass(frozen=True)
class Space:
    tags: tuple[str, ...]
    max_layers: int  # block_count + 1 (the largest over the tags)
    ctx_ladder: tuple[int, ...]
    tune_flash_attn: bool = False
    tune_kv_cache: bool = False
    parallel_choices: tuple[int, ...] = ()  # OLLAMA_NUM_PARALLEL values (empty: not searched)
    gpu_choices: tuple[str, ...] = ()  # GPU subsets (empty: not searched)
    batch_choices: tuple[int, ...] = ()  # num_batch per request (empty: not searched; first = the default)
    main_gpu_choices: tuple[int, ...] = ()  # main_gpu per request (empty: not searched; first = the default)
    thread_choices: tuple[
        int, ...
    ] = ()  # num_thread per request, 0 first (Ollama's default); CPU layers only
    grouped: bool = False  # --serve: the search runs one server environment at a time (tuner.servergroups)

    @property
    def default_gpus(self) -> str:
        """The GPU choice the server has without CUDA_VISIBLE_DEVICES: every GPU, not spread."""
        plain = [g for g in self.gpu_choices if not g.endswith(SPREAD)]
        return max(plain, key=lambda g: len(g.split(",")), default=self.gpu_choices[-1])

    @property
    def log2_range(self) -> tuple[int, int]:
        return int(math.log2(self.ctx_ladder[0])), int(math.log2(self.ctx_ladder[-1]))

    def suggest(self, trial: Suggester) -> Config:
        tag = trial.suggest_categorical("tag", list(self.tags))
        num_gpu = trial.suggest_int("num_gpu", 0, self.max_layers)
        low, high = self.log2_range
        num_ctx = 2 ** trial.suggest_int("log2_ctx", low, high)
        kv = (
            trial.suggest_categorical("kv_cache_type", list(KV_CACHE_CHOICES)) if self.tune_kv_cache else None
        )
        fa = None
        if self.tune_flash_attn:
            # llama.cpp refuses a quantized V cache without flash attention: only f16 may turn it off
            fa = (
                trial.suggest_categorical("flash_attn", list(FLASH_ATTN_CHOICES))
                if kv in (None, "f16")
                else "on"
            )
        elif kv not in (None, "f16"):
            fa = "on"
        par = (
            int(trial.suggest_categorical("num_parallel", list(self.parallel_choices)))
            if self.parallel_choices
            else None
        )
        gpus = str(trial.suggest_categorical("gpus", list(self.gpu_choices))) if self.gpu_choices else None
        batch = (
            int(trial.suggest_categorical("num_batch", list(self.batch_choices)))
            if self.batch_choices
            else None
        )
        main = (
            int(trial.suggest_categorical("main_gpu", list(self.main_gpu_choices)))
            if self.main_gpu_choices
            else None
        )
        threads = (
            int(trial.suggest_categorical("num_thread", list(self.thread_choices))) or None
            if self.threads_matter(num_gpu)
            else None
        )
        return Config(tag, num_gpu, num_ctx, fa, kv, par, gpus, batch, main, threads)

    def threads_matter(self, num_gpu: int) -> bool:
        """Whether num_thread is searched for this num_gpu: some layers stay on the CPU."""
        return bool(self.thread_choices) and 0 <= num_gpu < self.max_layers

    def params(self, config: Config) -> dict[str, Any]:
        """The Optuna params that make `config` (for enqueue_trial)."""
        params: dict[str, Any] = {
            "tag": config.tag,
            "num_gpu": config.num_gpu,
            "log2_ctx": int(math.log2(config.num_ctx)),
        }
        if self.tune_kv_cache:
            params["kv_cache_type"] = config.kv_cache_type or KV_CACHE_CHOICES[0]
        if self.tune_flash_attn and params.get("kv_cache_type", "f16") == "f16":
            params["flash_attn"] = config.flash_attn or FLASH_ATTN_CHOICES[0]
        if self.parallel_choices:
            params["num_parallel"] = config.num_parallel or self.parallel_choices[0]
        if self.gpu_choices:
            params["gpus"] = config.gpus or self.default_gpus
        if self.batch_choices:
            params["num_batch"] = config.num_batch or self.batch_choices[0]
        if self.main_gpu_choices:
            params["main_gpu"] = config.main_gpu if config.main_gpu is not None else self.main_gpu_choices[0]
        if self.threads_matter(config.num_gpu):
            params["num_thread"] = config.num_thread or self.thread_choices[0]
        return params

    def config(self, params: dict[str, Any]) -> Config:
        """The config that Optuna `params` make (what `suggest` returns for a trial with these params)."""
        kv = str(params.get("kv_cache_type", KV_CACHE_CHOICES[0])) if self.tune_kv_cache else None
        fa = None
        if self.tune_flash_attn:
            fa = str(params.get("flash_attn", FLASH_ATTN_CHOICES[0])) if kv in (None, "f16") else "on"
        elif kv not in (None, "f16"):
            fa = "on"
        par = int(params.get("num_parallel", self.parallel_choices[0])) if self.parallel_choices else None
        gpus = str(params.get("gpus", self.default_gpus)) if self.gpu_choices else None
        batch = int(params.get("num_batch", self.batch_choices[0])) if self.batch_choices else None
        main = int(params.get("main_gpu", self.main_gpu_choices[0])) if self.main_gpu_choices else None
        num_gpu = int(params["num_gpu"])
        threads = (
            int(params.get("num_thread", self.thread_choices[0])) or None
            if self.threads_matter(num_gpu)
            else None
        )
        return Config(
            str(params["tag"]),
            num_gpu,
            2 ** int(params["log2_ctx"]),
            fa,
            kv,
            par,
            gpus,
            batch,
            main,
            threads,
        )

    def all_configs(self) -> Iterator[Config]:
        """Every config of the space, once each (the same set `suggest` can return)."""
        kvs: tuple[str | None, ...] = KV_CACHE_CHOICES if self.tune_kv_cache else (None,)
        for tag in self.tags:
            for ctx in self.ctx_ladder:
                for n in range(self.max_layers + 1):
                    for kv in kvs:
                        fas: tuple[str | None, ...] = (None,)
                        if self.tune_flash_attn and kv in (None, "f16"):
                            fas = FLASH_ATTN_CHOICES
                        for fa in fas:
                            threads = self.thread_choices if self.threads_matter(n) else (0,)
                            for server in self._server_extras():
                                for t in threads:
                                    params: dict[str, Any] = {
                                        "tag": tag,
                                        "num_gpu": n,
                                        "log2_ctx": int(math.log2(ctx)),
                                        "num_thread": t,
                                        **server,
                                    }
                                    if kv is not None:
                                        params["kv_cache_type"] = kv
                                    if fa is not None:
                                        params["flash_attn"] = fa
                                    yield self.config(params)

    def _server_extras(self) -> list[dict[str, Any]]:
        axes: list[tuple[str, tuple[Any, ...]]] = [
            ("num_parallel", self.parallel_choices),
            ("gpus", self.gpu_choices),
            ("num_batch", self.batch_choices),
            ("main_gpu", self.main_gpu_choices),
        ]
        out: list[dict[str, Any]] = [{}]
        for name, choices in axes:
            if choices:
                out = [{**e, name: v} for e in out for v in choices]
        return out

    def server_points(self) -> list[tuple[str | None, str | None, int | None, str | None]]:
        """Every server environment of the space (Config.server_key), in the space's order."""
        seen: dict[tuple[str | None, str | None, int | None, str | None], None] = {}
        tag, ctx = self.tags[0], self.ctx_ladder[0]
        for c in self.all_configs():
            if c.tag == tag and c.num_ctx == ctx and c.num_gpu == 0:
                seen.setdefault(c.server_key)
        return list(seen)

    def nearest_ctx(self, num_ctx: int) -> int:
        return min(self.ctx_ladder, key=lambda c: (abs(math.log2(c) - math.log2(num_ctx)), c))

    def size(self) -> int:
        layers = self.max_layers * max(1, len(self.thread_choices)) + 1  # num_thread: CPU layers only
        n = len(self.tags) * layers * len(self.ctx_ladder)
        kv = len(KV_CACHE_CHOICES) if self.tune_kv_cache else 1
        fa = len(FLASH_ATTN_CHOICES) if self.tune_flash_attn else 1
        n *= max(1, len(self.parallel_choices)) * max(1, len(self.gpu_choices))
        n *= max(1, len(self.batch_choices)) * max(1, len(self.main_gpu_choices))
        return n * (kv - 1 + fa if self.tune_kv_cache else fa)  # a quantized KV cache needs flash attention
