"""The pure core: Simulation.plan (where a model lands, what it really allocates, whether it loads) and
Simulation.speed (how fast it then runs). No HTTP, no clock; the only state is the seeded noise generator.

    sim = Simulation("2xRTX4090", host_ram="64GiB", noise=0)
    p = sim.plan("llama3.3:70b", num_gpu=81, num_ctx=4096)
    p.ok, p.error, p.offloaded, p.gpu_bytes, p.size_vram_bytes
    sim.speed(p, prompt_tokens=512, depth_tokens=0).decode_tok_s
"""

from __future__ import annotations

import math
import random

from tuner.sim import perf, runner
from tuner.sim.catalog import ModelFile, lookup
from tuner.sim.hardware import GiB, GpuSpec, HostSpec, make_host, parse_gpus
from tuner.sim.memory import estimate_gpu_layers, pick_gpus
from tuner.sim.placement import Attempt, Placement, build_placement, device_errors
from tuner.sim.versions import Version, parse_version

FIT_MARGIN_BYTES = 1 * GiB  # llama.cpp --fit target per device (LLAMA_ARG_FIT_TARGET default 1024 MiB)


class Simulation:
    def __init__(
        self,
        gpus: str | list[GpuSpec] = "1x24GiB",
        host: HostSpec | None = None,
        version: str = "0.12.10",
        num_parallel: int = 1,
        seed: int = 0,
        noise: float = 0.02,
        *,
        host_ram: str | int | None = None,
        host_bandwidth: float | None = None,
    ) -> None:
        self.gpus = parse_gpus(gpus)
        self.host = host if host is not None else make_host(host_ram, host_bandwidth, self.gpus)
        parse_version(version)
        self.version = Version(version)
        if int(num_parallel) < 1:
            raise ValueError(f"Invalid num_parallel {num_parallel!r}: at least 1.")
        self.num_parallel = int(num_parallel)
        if not noise >= 0:
            raise ValueError(f"Invalid noise {noise!r}: a fraction >= 0, e.g. 0.02 (0 = noise-free).")
        self.noise = float(noise)
        self.seed = seed
        self._rng = random.Random(seed)

    def reseed(self) -> None:
        """Restart the noise sequence from the seed (POST /sim/reset does this)."""
        self._rng = random.Random(self.seed)

    # --- memory --------------------------------------------------------------------------------
    @property
    def default_num_ctx(self) -> int:
        return self.version.default_num_ctx(sum(g.memory_bytes for g in self.gpus))

    def free_gpu_bytes(self, used_gpu: list[int] | None = None, used_host: int = 0) -> list[int]:
        used = used_gpu or [0] * len(self.gpus)
        out = []
        for g, u in zip(self.gpus, used):
            free = g.memory_bytes - g.idle_reserved_bytes - u
            if g.unified:  # the host's own use comes out of the same pool
                free -= self.host.idle_used_bytes + used_host
            out.append(max(0, free))
        return out

    def free_host_bytes(self, used_gpu: list[int] | None = None, used_host: int = 0) -> int:
        free = self.host.ram_bytes - self.host.idle_used_bytes - used_host
        for g, u in zip(self.gpus, used_gpu or [0] * len(self.gpus)):
            if g.unified:
                free -= g.idle_reserved_bytes + u
        return max(0, free)

    def plan(
        self,
        tag: str,
        num_gpu: int = -1,
        num_ctx: int | None = None,
        *,
        num_batch: int = 512,
        used_gpu: list[int] | None = None,
        used_host: int = 0,
    ) -> Placement:
        """Where `tag` lands with these options on the GPUs as they are (`used_gpu` bytes already taken).

        num_gpu < 0 is Ollama's automatic placement; num_ctx None is the version's default context.
        Raises KeyError for a tag the catalog does not know.
        """
        mf = lookup(tag)
        if mf is None:
            raise KeyError(f"model '{tag}' not found")
        requested = self.default_num_ctx if num_ctx is None else int(num_ctx)
        placement = self._plan(mf, int(num_gpu), requested, int(num_batch), used_gpu, used_host)
        if not placement.ok and self.version.era == "C" and num_ctx is None and requested > 4096:
            # HEAD: after an OOM with the automatic context, step down one tier and retry once
            lower = 32768 if requested > 32768 else 4096
            placement = self._plan(mf, int(num_gpu), lower, int(num_batch), used_gpu, used_host)
        return placement

    def _plan(
        self,
        mf: ModelFile,
        num_gpu: int,
        requested_ctx: int,
        num_batch: int,
        used_gpu: list[int] | None,
        used_host: int,
    ) -> Placement:
        a = mf.arch
        ctx = max(4, min(requested_ctx, a.context_length))
        if a.vision_blocks:
            ctx = min(max(ctx, 2048), a.context_length)  # vision models need at least 2048
        fa_ok = bool(self.gpus) and all(g.supports_flash_attention for g in self.gpus)
        at = Attempt(
            mf=mf,
            num_gpu=num_gpu,
            ctx=ctx,
            requested_ctx=requested_ctx,
            num_batch=num_batch,
            parallel=self.num_parallel,
            flash_attn=self.version.flash_attention(a.name, fa_ok),
            free=self.free_gpu_bytes(used_gpu, used_host),
            host_free=self.free_host_bytes(used_gpu, used_host),
        )
        if self.version.era == "C":
            return self._plan_llama_server(at)
        return self._plan_estimated(at)

    def _allocate(
        self, at: Attempt, runner_gpus: list[int], layers: int, split: list[float]
    ) -> runner.Allocation:
        return runner.allocate(
            at.mf,
            n_devices=len(runner_gpus),
            num_gpu=layers,
            split=split,
            ctx_total=at.ctx_total,
            ubatch=at.ubatch,
            parallel=at.parallel,
            flash_attn=at.flash_attn,
        )

    def _plan_estimated(self, at: Attempt) -> Placement:
        """Era A/B: Ollama's estimate picks GPUs and the split; the runner offloads the last N layers."""
        v, mf, free = self.version, at.mf, at.free
        kw = dict(
            num_ctx=at.ctx,
            num_batch=at.num_batch,
            num_gpu=at.num_gpu,
            num_parallel=at.parallel,
            ascending=v.layers_ascending,
        )
        runner_gpus: list[int] = []
        split: list[float] = []
        layers = 0
        if self.gpus and at.num_gpu != 0:
            runner_gpus, est, _ = pick_gpus(mf, free, single_then_all=v.number < (0, 7, 0), **kw)  # type: ignore[arg-type]
            if est.layers == 0 and at.num_gpu < 0:
                runner_gpus = []  # nothing fits: the CPU runner
            else:
                layers = est.layers if at.num_gpu < 0 else at.num_gpu
                counts = [float(s) for s in est.tensor_split]
                split = counts if sum(counts) else [float(free[g]) for g in runner_gpus]
        else:
            est = estimate_gpu_layers(mf, [], **kw)  # type: ignore[arg-type]
        alloc = self._allocate(at, runner_gpus, layers, split)
        # gemma3 runs on the Ollama engine, which from 0.11.11 (and every model in Era B) measures real buffers
        measured = v.era == "B" or (mf.arch.name == "gemma3" and v.number >= (0, 11, 11))
        gpu_buffers = sum(d.weights + d.kv + d.compute for d in alloc.gpu)
        if measured:
            size = gpu_buffers + alloc.cpu.total
            vram = size if alloc.offloaded == mf.arch.block_count + 1 else gpu_buffers
            required = alloc.cpu.total
        else:
            size, vram = est.total_bytes, est.vram_bytes
            required = est.total_bytes - est.vram_bytes
        if required > at.host_free:
            error, kind = v.system_memory(required, at.host_free), "system_memory"
        else:
            error, kind = device_errors(v, alloc, runner_gpus, free)
        return build_placement(at, len(self.gpus), alloc, runner_gpus, layers, size, vram, error, kind, est)

    def _plan_llama_server(self, at: Attempt) -> Placement:
        """Era C: Ollama only picks GPUs; llama-server fits the layers itself (--fit) unless -ngl is given."""
        a, free = at.mf.arch, at.free
        runner_gpus: list[int] = []
        if self.gpus and at.num_gpu != 0:
            kv = 2 * a.block_count * a.head_count_kv * (a.embedding_length // a.head_count) * at.ctx_total * 2
            predicted = at.mf.file_bytes + kv  # PredictServerVRAM: the KV term always assumes f16
            order = sorted(range(len(free)), key=lambda i: (-free[i], i))
            single = [g for g in order if free[g] * 0.8 >= predicted]
            runner_gpus = [single[0]] if single else order
        split = [float(free[g]) for g in runner_gpus]  # llama.cpp's default split: by free memory
        layers = max(at.num_gpu, 0) if runner_gpus else 0
        if runner_gpus and at.num_gpu < 0:
            layers = 0
            for n in range(a.block_count + 1, -1, -1):
                trial = self._allocate(at, runner_gpus, n, split)
                if all(d.total + FIT_MARGIN_BYTES <= free[g] for d, g in zip(trial.gpu, runner_gpus)):
                    layers = n
                    break
        alloc = self._allocate(at, runner_gpus, layers, split)
        vram = sum(d.weights + d.kv + d.compute for d in alloc.gpu)
        size = vram if alloc.offloaded == a.block_count + 1 else vram + alloc.cpu.total
        error, kind = device_errors(self.version, alloc, runner_gpus, free)
        if not error and alloc.cpu.total > at.host_free:
            error = (
                "llama-server reported out-of-memory during startup: ggml_backend_cpu_buffer_type_alloc_buffer: "
                f"failed to allocate buffer of size {alloc.cpu.total}"
            )
            kind = "host"
        return build_placement(at, len(self.gpus), alloc, runner_gpus, layers, size, vram, error, kind, None)

    # --- speed ---------------------------------------------------------------------------------
    def layout(self, placement: Placement) -> perf.Layout:
        return perf.Layout(placement.layer_gpu, placement.flash_attn, placement.runner_gpus)

    def speed(self, placement: Placement, prompt_tokens: int = 512, depth_tokens: int = 0) -> perf.Speed:
        """Noise-free decode tok/s at `depth_tokens` of context and prefill tok/s for `prompt_tokens`."""
        mf = _file(placement)
        ubatch = max(1, min(placement.num_batch, placement.num_ctx))
        return perf.speed(
            mf, self.layout(placement), self.gpus, self.host, prompt_tokens, depth_tokens, ubatch
        )

    def load_seconds(self, placement: Placement, cached: bool = False) -> float:
        mf = _file(placement)
        return perf.load_seconds(mf, list(placement.gpu_bytes), len(placement.runner_gpus), self.host, cached)

    def noise_factor(self, scale: float = 1.0) -> float:
        """A lognormal factor around 1 (exactly 1 when noise is 0)."""
        if self.noise <= 0:
            return 1.0
        return math.exp(self._rng.gauss(0.0, self.noise * scale))

    def generation_seconds(
        self,
        placement: Placement,
        processed_tokens: int,
        depth_tokens: int,
        eval_tokens: int,
        load_factor: float = 1.0,
    ) -> tuple[float, float]:
        """(prompt seconds, eval seconds) of one generation, with per-generation noise and the load's factor."""
        mf = _file(placement)
        layout = self.layout(placement)
        ubatch = max(1, min(placement.num_batch, placement.num_ctx))
        prompt_s = perf.prefill_seconds(
            mf, layout, self.gpus, self.host, processed_tokens, depth_tokens, ubatch
        )
        mid = depth_tokens + processed_tokens + eval_tokens // 2
        eval_s = eval_tokens * perf.decode_seconds_per_token(mf, layout, self.gpus, self.host, mid)
        return prompt_s * load_factor * self.noise_factor(), eval_s * load_factor * self.noise_factor()


def _file(placement: Placement) -> ModelFile:
    mf = lookup(placement.tag)
    assert mf is not None
    return mf
