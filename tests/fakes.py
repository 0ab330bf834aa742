"""In-memory engine and probe for the core's unit tests: a toy memory and speed model, no HTTP."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tuner.backend.base import AUTO, EngineOptions, Generation, ModelInfo, Residency, ServerInfo
from tuner.errors import ModelNotFound, OutOfMemory
from tuner.probe import GpuInfo
from tuner.units import GiB


@dataclass
class FakeMachine:
    gpu_bytes: int = 24 * GiB
    block_count: int = 32
    layer_bytes: int = 600 * 1024**2
    kv_bytes_per_token: int = 128 * 1024  # all layers
    overhead_bytes: int = 1 * GiB
    noise: float = 0.0
    used: int = 0
    loads: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def need(self, num_gpu: int, num_ctx: int) -> int:
        layers = min(num_gpu, self.block_count + 1)
        kv = self.kv_bytes_per_token * num_ctx * layers // (self.block_count + 1)
        return layers * self.layer_bytes + kv + (self.overhead_bytes if layers else 0)

    def auto_layers(self, num_ctx: int) -> int:
        n = self.block_count + 1
        while n > 0 and self.need(n, num_ctx) > 0.9 * self.gpu_bytes:
            n -= 1
        return n


class FakeBackend:
    engine = "fake"

    def __init__(self, machine: FakeMachine | None = None, tags: tuple[str, ...] = ("toy:q4",)) -> None:
        self.m = machine or FakeMachine()
        self.tags = tags
        self.loaded: tuple[str, EngineOptions, int] | None = None
        self.calls: list[str] = []

    def server_info(self) -> ServerInfo:
        return ServerInfo("fake", "0.0.1", "memory")

    def model_info(self, model: str) -> ModelInfo:
        if model not in self.tags:
            raise ModelNotFound(f"no model '{model}'")
        return ModelInfo(model, "llama", self.m.block_count, 131072, "Q4_K_M", 20 * GiB)

    def load(self, model: str, options: EngineOptions) -> float:
        self.calls.append(f"load {options.num_gpu} {options.num_ctx}")
        self.m.loads += 1
        layers = self.m.auto_layers(options.num_ctx) if options.num_gpu == AUTO else options.num_gpu
        need = self.m.need(layers, options.num_ctx)
        if need > self.m.gpu_bytes:
            raise OutOfMemory("llama runner process has terminated: cudaMalloc failed: out of memory")
        self.loaded = (model, options, layers)
        self.m.used = need
        return 1.0

    def residency(self, model: str) -> Residency | None:
        if not self.loaded:
            return None
        _, options, layers = self.loaded
        total = self.m.need(self.m.block_count + 1, options.num_ctx)
        return Residency(total, self.m.need(layers, options.num_ctx), options.num_ctx)

    def generate(
        self, model: str, prompt: str, options: EngineOptions, *, num_predict: int, seed: int = 0
    ) -> Generation:
        assert self.loaded is not None, "generate before load"
        _, _, layers = self.loaded
        cpu_layers = self.m.block_count + 1 - layers
        s_per_tok = 0.01 + 0.004 * cpu_layers
        s_per_tok *= 1 + self.m.rng.gauss(0, self.m.noise) if self.m.noise else 1
        return Generation(len(prompt) // 4, 0.05, num_predict, num_predict * s_per_tok, 0.06, 1.0)

    def check_alone(self, model: str, expected: Residency | None) -> None:
        assert self.loaded is not None and self.loaded[0] == model, "the model was unloaded"

    def unload_all(self) -> None:
        self.loaded = None
        self.m.used = 0

    def close(self) -> None:
        pass


class FakeProbe:
    source = "fake"

    def __init__(self, machine: FakeMachine) -> None:
        self.m = machine

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo(0, "Fake GPU", self.m.gpu_bytes, "0")]

    def used_bytes(self) -> list[int]:
        return [self.m.used]

    def close(self) -> None:
        pass
