"""An OllamaBackend over an `ollama serve` that autotune runs itself (`autotune MODEL --serve`).

Flash attention, the KV cache type, the slots and the GPUs are server-wide in Ollama (OLLAMA_FLASH_ATTENTION,
OLLAMA_KV_CACHE_TYPE, OLLAMA_NUM_PARALLEL, CUDA_VISIBLE_DEVICES with OLLAMA_SCHED_SPREAD). A trial that asks for other values than the running server's restarts it with them,
on the same private loopback port (the URL, and so the study's server lock and fingerprint, stay the same),
and the restart's seconds are added to the trial's load time: restarts are charged to the study. The
server uses the user's model store and is stopped by process group on close().
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tuner.backend.base import EngineOptions, TokenStep
from tuner.backend.ollama import OllamaBackend
from tuner.backend.ollamaserve import ManagedOllama, free_port
from tuner.config import Timeouts


def server_env(options: EngineOptions) -> dict[str, str]:
    """The server environment a trial's options need ({} = the release's defaults)."""
    env: dict[str, str] = {}
    if options.flash_attn in ("on", "off"):
        env["OLLAMA_FLASH_ATTENTION"] = "1" if options.flash_attn == "on" else "0"
    if options.kv_cache_type is not None:
        env["OLLAMA_KV_CACHE_TYPE"] = options.kv_cache_type
        if (
            options.kv_cache_type != "f16"
        ):  # a quantized KV cache needs flash attention (0.13.5 on: explicitly)
            env["OLLAMA_FLASH_ATTENTION"] = "1"
    if options.num_parallel is not None:
        env["OLLAMA_NUM_PARALLEL"] = str(options.num_parallel)
    if options.gpus is not None:
        spread = options.gpus.endswith("+spread")
        env["CUDA_VISIBLE_DEVICES"] = options.gpus.removesuffix("+spread")
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's indices = NVML's (the probe's), not fastest-first
        env["OLLAMA_SCHED_SPREAD"] = "1" if spread else "0"
    return env


class ManagedOllamaBackend(OllamaBackend):
    def __init__(
        self,
        binary: str | os.PathLike[str],
        *,
        models_dir: Path,
        log_dir: Path,
        base_env: Mapping[str, str] | None = None,
        timeouts: Timeouts | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.binary = str(binary)
        self._models_dir = models_dir
        self._log_dir = log_dir
        self._base_env = dict(base_env or {})
        self._port = free_port()
        self.env_now: dict[str, str] = {}
        self.restarts = 0
        self.restart_s = 0.0
        self._server = self._start({})
        super().__init__(self._server.url, timeouts=timeouts, clock=clock)

    @property
    def pid(self) -> int | None:
        return self._server.pid

    def _start(self, env: dict[str, str]) -> ManagedOllama:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        server = ManagedOllama(
            self.binary,
            models_dir=self._models_dir,
            env={**self._base_env, **env},
            log_path=self._log_dir / "ollama-serve.log",
            port=self._port,
        )
        server.start()
        self.env_now = dict(env)
        return server

    def ensure_environment(self, options: EngineOptions) -> float:
        """Restart the server if this trial needs another environment; the seconds it took."""
        env = server_env(options)
        if env == self.env_now:
            return 0.0
        began = self._clock()
        self._server.stop()
        self._server = self._start(env)
        took = self._clock() - began
        self.restarts += 1
        self.restart_s += took
        return took

    def load(self, model: str, options: EngineOptions) -> float:
        restart_s = self.ensure_environment(options)
        return restart_s + super().load(model, options)

    def token_logprobs(
        self,
        model: str,
        prompt: str,
        options: EngineOptions,
        *,
        num_predict: int,
        top_k: int,
        forced: Sequence[str] = (),
    ) -> list[TokenStep]:
        self.ensure_environment(options)
        return super().token_logprobs(
            model, prompt, options, num_predict=num_predict, top_k=top_k, forced=forced
        )

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._server.stop()
