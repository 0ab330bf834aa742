"""The search space: which (tag, num_gpu, num_ctx[, flash_attn, kv_cache_type]) a trial may take. Pure.

num_ctx is searched as its base-2 exponent (`log2_ctx`) so the sampler sees an ordered ladder.
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

    @property
    def options(self) -> EngineOptions:
        return EngineOptions(self.num_gpu, self.num_ctx, self.flash_attn, self.kv_cache_type)


@dataclass(frozen=True)
class Space:
    tags: tuple[str, ...]
    max_layers: int  # block_count + 1 (the largest over the tags)
    ctx_ladder: tuple[int, ...]
    tune_flash_attn: bool = False
    tune_kv_cache: bool = False

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
        return Config(tag, num_gpu, num_ctx, fa, kv)

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
        return params

    def config(self, params: dict[str, Any]) -> Config:
        """The config that Optuna `params` make (what `suggest` returns for a trial with these params)."""
        kv = str(params.get("kv_cache_type", KV_CACHE_CHOICES[0])) if self.tune_kv_cache else None
        fa = None
        if self.tune_flash_attn:
            fa = str(params.get("flash_attn", FLASH_ATTN_CHOICES[0])) if kv in (None, "f16") else "on"
        elif kv not in (None, "f16"):
            fa = "on"
        return Config(str(params["tag"]), int(params["num_gpu"]), 2 ** int(params["log2_ctx"]), fa, kv)

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
                            params: dict[str, Any] = {
                                "tag": tag,
                                "num_gpu": n,
                                "log2_ctx": int(math.log2(ctx)),
                            }
                            if kv is not None:
                                params["kv_cache_type"] = kv
                            if fa is not None:
                                params["flash_attn"] = fa
                            yield self.config(params)

    def nearest_ctx(self, num_ctx: int) -> int:
        return min(self.ctx_ladder, key=lambda c: (abs(math.log2(c) - math.log2(num_ctx)), c))

    def size(self) -> int:
        n = len(self.tags) * (self.max_layers + 1) * len(self.ctx_ladder)
        kv = len(KV_CACHE_CHOICES) if self.tune_kv_cache else 1
        fa = len(FLASH_ATTN_CHOICES) if self.tune_flash_attn else 1
        return n * (kv - 1 + fa if self.tune_kv_cache else fa)  # a quantized KV cache needs flash attention
