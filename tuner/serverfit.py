"""Which server settings the memory estimator says will load, before any server starts with them. Pure.

Each slot of OLLAMA_NUM_PARALLEL holds its own num_ctx of KV cache (the runner's context is
num_ctx x slots); OLLAMA_KV_CACHE_TYPE q8_0 / q4_0 shrinks it where flash attention is on; flash attention
also changes the compute buffers. The estimator (tuner.estimate) prices all of it per release.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tuner.estimate.placement import Request, predict
from tuner.estimate.spec import ModelSpec
from tuner.hardware import GpuSpec
from tuner.serverenv import ServerSettings
from tuner.units import GiB


@dataclass(frozen=True)
class SettingFit:
    settings: ServerSettings
    loads: bool  # predicted to load (an explicit num_gpu fits, or the automatic placement does)
    fully_on_gpu: bool
    vram_bytes: int  # predicted, all GPUs
    free_bytes: int

    def reason(self) -> str:
        need, have = self.vram_bytes / GiB, self.free_bytes / GiB
        if not self.loads:
            return (
                f"{self.settings.label()}: predicted not to load ({need:.1f} GiB needed, {have:.1f} GiB free)"
            )
        if not self.fully_on_gpu:
            return (
                f"{self.settings.label()}: predicted to spill layers to the CPU ({need:.1f} GiB on the GPUs)"
            )
        return f"{self.settings.label()}: fits ({need:.1f} of {have:.1f} GiB)"


def check_settings(
    spec: ModelSpec,
    gpus: Sequence[GpuSpec],
    settings: Sequence[ServerSettings],
    *,
    num_ctx: int,
    num_gpu: int | None,
    version: str,
    margin: float = 1.0,
) -> list[SettingFit]:
    """The estimator's verdict on each setting for this model, context and num_gpu on these GPUs."""
    free = [g.memory_bytes - g.idle_reserved_bytes for g in gpus]
    out = []
    for s in settings:
        req = Request(
            num_ctx=num_ctx,
            num_gpu=-1 if num_gpu is None else num_gpu,
            num_parallel=s.num_parallel or 1,
            kv_type=s.kv_cache_type or "f16",
            flash_attn=s.flash_attention,
        )
        p = predict(spec, free, req, engine="ollama", version=version)
        out.append(SettingFit(s, p.fits(free, margin), p.fully_on_gpu, p.vram_bytes, sum(free)))
    return out
