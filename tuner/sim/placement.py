"""One load attempt as the simulator sees it: Ollama's plan, the runner's true allocation, the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner.estimate.llamacpp import Allocation
from tuner.estimate.ollama import Estimate
from tuner.estimate.versions import Version
from tuner.sim.catalog import ModelFile


@dataclass(frozen=True)
class Attempt:
    """The inputs of one load attempt, resolved."""

    mf: ModelFile
    num_gpu: int  # as requested (-1 = automatic)
    ctx: int  # per slot, capped at the trained context
    requested_ctx: int
    num_batch: int
    parallel: int
    flash_attn: bool
    free: list[int]  # free bytes per simulator GPU
    host_free: int

    @property
    def ctx_total(self) -> int:
        return self.ctx * self.parallel

    @property
    def ubatch(self) -> int:
        return max(1, min(self.num_batch, self.ctx))


@dataclass(frozen=True)
class Placement:
    """One load attempt: Ollama's plan, the runner's true allocation, and whether it loads."""

    tag: str  # catalog tag of the file
    num_gpu_requested: int  # -1 = automatic
    num_gpu: int  # layers the runner was told to offload
    num_ctx: int  # per-slot context actually used (capped at the trained context)
    num_ctx_requested: int
    num_batch: int
    num_parallel: int
    ctx_total: int
    runner_gpus: tuple[int, ...]  # simulator GPU indices the runner opened, CUDA0 first
    layer_gpu: tuple[int, ...]  # per offloadable layer (block_count + 1): GPU index, or -1 for the CPU
    layers_per_gpu: tuple[int, ...]  # per simulator GPU
    gpu_bytes: tuple[int, ...]  # true bytes per simulator GPU
    cpu_bytes: int  # true bytes in host memory
    size_bytes: int  # what /api/ps reports as size
    size_vram_bytes: int  # ... and as size_vram
    flash_attn: bool
    ok: bool
    error: str = ""
    error_kind: str = ""  # "" | "weights" | "kv" | "compute" | "system_memory" | "host"
    estimate: Estimate | None = None
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> weights/kv/compute/context
    num_thread: int = 0  # the request's num_thread (0 = Ollama's default: the host's physical cores)

    @property
    def offloaded(self) -> int:
        return sum(1 for d in self.layer_gpu if d >= 0)

    @property
    def total_layers(self) -> int:
        return len(self.layer_gpu)

    @property
    def cpu_layers(self) -> int:
        return self.total_layers - self.offloaded

    @property
    def fully_on_gpu(self) -> bool:
        return self.offloaded == self.total_layers

    @property
    def meets_require_full(self) -> bool:
        """What a model loaded next to others must satisfy (requireFull): Ollama's plan puts it all on GPU
        (automatic) or at least the requested layers (explicit)."""
        if self.estimate is not None:
            want = self.total_layers if self.num_gpu_requested < 0 else self.num_gpu_requested
            return self.estimate.layers > 0 and self.estimate.layers >= want
        return self.ok and (self.num_gpu_requested >= 0 or self.fully_on_gpu)


def device_errors(
    version: Version, alloc: Allocation, runner_gpus: list[int], free: list[int]
) -> tuple[str, str]:
    """llama.cpp allocates all weights, then all KV, then all compute buffers; the first miss fails."""
    avail = [free[g] - d.context for d, g in zip(alloc.gpu, runner_gpus)]
    for i, (d, room) in enumerate(zip(alloc.gpu, avail)):
        if d.weights > room:
            return version.weights_oom(i, d.weights / 2**20), "weights"
    for i, (d, room) in enumerate(zip(alloc.gpu, avail)):
        if d.weights + d.kv > room:
            return version.buffer_oom(i, d.kv / 2**20), "kv"
    for i, (d, room) in enumerate(zip(alloc.gpu, avail)):
        if d.weights + d.kv + d.compute > room:
            return version.buffer_oom(i, d.compute / 2**20), "compute"
    return "", ""


def build_placement(
    at: Attempt,
    n_gpus: int,
    alloc: Allocation,
    runner_gpus: list[int],
    layers: int,
    size: int,
    vram: int,
    error: str,
    kind: str,
    est: Estimate | None,
) -> Placement:
    gpu_bytes = [0] * n_gpus
    per_gpu = [0] * n_gpus
    breakdown: dict[str, dict[str, int]] = {}
    for i, (d, g) in enumerate(zip(alloc.gpu, runner_gpus)):
        gpu_bytes[g] = d.total
        per_gpu[g] = alloc.layers_on(i)
        breakdown[f"CUDA{i}"] = {
            "gpu": g,
            "weights": d.weights,
            "kv": d.kv,
            "compute": d.compute,
            "context": d.context,
        }
    breakdown["CPU"] = {"weights": alloc.cpu.weights, "kv": alloc.cpu.kv, "compute": alloc.cpu.compute}
    return Placement(
        tag=at.mf.tag,
        num_gpu_requested=at.num_gpu,
        num_gpu=layers,
        num_ctx=at.ctx,
        num_ctx_requested=at.requested_ctx,
        num_batch=at.num_batch,
        num_parallel=at.parallel,
        ctx_total=at.ctx_total,
        runner_gpus=tuple(runner_gpus),
        layer_gpu=tuple(runner_gpus[d] if d >= 0 else -1 for d in alloc.devices),
        layers_per_gpu=tuple(per_gpu),
        gpu_bytes=tuple(gpu_bytes),
        cpu_bytes=alloc.cpu.total,
        size_bytes=int(size),
        size_vram_bytes=int(vram),
        flash_attn=at.flash_attn,
        ok=not error,
        error=error,
        error_kind=kind,
        estimate=est,
        breakdown=breakdown,
    )
