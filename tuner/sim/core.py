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
from dataclasses import dataclass, replace

from tuner.config import bytes_of
from tuner.estimate import Request, predict
from tuner.estimate.versions import Version, parse_version
from tuner.hardware import GpuSpec, parse_gpus
from tuner.sim import perf
from tuner.sim.catalog import ModelFile, lookup
from tuner.sim.hardware import HostSpec, make_host
from tuner.sim.knobs import ServerKnobs
from tuner.sim.memtruth import MEMORY_TRUTHS, Adjust, estimator_truth, foreign_truth
from tuner.sim.modelinfo import spec_of
from tuner.sim.placement import Attempt, Placement, build_placement, device_errors
from tuner.sim.power import PowerModel, gpus_of


@dataclass(frozen=True)
class Interference:
    """Another tenant on the simulated machine, injected to test how autotune copes with noise.

    cpu_cores   other processes' CPU use on the simulated host (what autotune records as interference)
    gpu_bytes   another process holding this much memory on every simulated GPU (less free memory)
    throttle    clock throttle reasons the simulated GPUs report (NVML names, e.g. HwSlowdown)
    jitter      sigma of an extra one-sided slowdown of every generation, exp(|N(0, jitter)|): 0.3 makes
                repeats differ by tens of percent, as a busy neighbour on a shared core does
    """

    cpu_cores: float = 0.0
    gpu_bytes: int = 0
    throttle: tuple[str, ...] = ()
    jitter: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.cpu_cores or self.gpu_bytes or self.throttle or self.jitter)

    @classmethod
    def parse(cls, text: str) -> Interference:
        """'cpu=1.5,gpu=2GiB,throttle=HwSlowdown+SwPowerCap,jitter=0.3' (any subset; '' or 'none' = none)."""
        fields: dict[str, object] = {}
        for part in (p.strip() for p in (text or "").split(",")):
            if not part or part == "none":
                continue
            key, _, value = part.partition("=")
            try:
                if key == "cpu":
                    fields["cpu_cores"] = float(value)
                elif key == "gpu":
                    size = bytes_of(value)
                    if size is None:
                        raise ValueError(value)
                    fields["gpu_bytes"] = size
                elif key == "throttle":
                    fields["throttle"] = tuple(t for t in value.split("+") if t)
                elif key == "jitter":
                    fields["jitter"] = float(value)
                else:
                    raise KeyError(key)
            except (ValueError, KeyError) as exc:
                raise ValueError(
                    f"Invalid interference '{part}': use cpu=CORES, gpu=SIZE, throttle=NAME+NAME, jitter=SIGMA"
                ) from exc
        made = cls(**fields)  # type: ignore[arg-type]
        if made.cpu_cores < 0 or made.gpu_bytes < 0 or made.jitter < 0:
            raise ValueError(f"Invalid interference '{text}': every value must be >= 0")
        return made

    def to_json(self) -> dict[str, object]:
        return {
            "cpu_cores": self.cpu_cores,
            "gpu_bytes": self.gpu_bytes,
            "throttle": list(self.throttle),
            "jitter": self.jitter,
        }


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
        host_cores: int | None = None,
        estimator_error: float = 1.0,
        memory_truth: str = "estimator",
    ) -> None:
        self.gpus = parse_gpus(gpus)
        self.host = host if host is not None else make_host(host_ram, host_bandwidth, self.gpus, host_cores)
        parse_version(version)
        self.version = Version(version)
        if int(num_parallel) < 1:
            raise ValueError(f"Invalid num_parallel {num_parallel!r}: at least 1.")
        self.num_parallel = int(num_parallel)
        if not noise >= 0:
            raise ValueError(f"Invalid noise {noise!r}: a fraction >= 0, e.g. 0.02 (0 = noise-free).")
        self.noise = float(noise)
        if not estimator_error >= 0:
            raise ValueError(
                f"Invalid estimator_error {estimator_error!r}: a scale >= 0 (0 = the estimator is exact)."
            )
        self.estimator_error = float(estimator_error)
        if memory_truth not in MEMORY_TRUTHS:
            raise ValueError(f"Invalid memory_truth {memory_truth!r}: use one of {', '.join(MEMORY_TRUTHS)}.")
        self.memory_truth = memory_truth
        self.seed = seed
        self._rng = random.Random(seed)
        self.interference = Interference()
        # the server environment (OLLAMA_FLASH_ATTENTION, _KV_CACHE_TYPE, _SCHED_SPREAD; tuner.sim.knobs)
        self.knobs = ServerKnobs(num_parallel=self.num_parallel)
        self.power = PowerModel(self.gpus)  # clocks, heat and energy on the simulated clock (tuner.sim.power)

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
            free = g.memory_bytes - g.idle_reserved_bytes - self.interference.gpu_bytes - u
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
        num_batch: int | None = None,
        used_gpu: list[int] | None = None,
        used_host: int = 0,
        main_gpu: int | None = None,
        num_thread: int | None = None,
    ) -> Placement:
        """Where `tag` lands with these options on the GPUs as they are (`used_gpu` bytes already taken).

        num_gpu < 0 is Ollama's automatic placement; num_ctx None is the version's default context.
        Raises KeyError for a tag the catalog does not know.
        """
        mf = lookup(tag)
        if mf is None:
            raise KeyError(f"model '{tag}' not found")
        requested = self.default_num_ctx if num_ctx is None else int(num_ctx)
        placement = self._plan(mf, int(num_gpu), requested, num_batch, used_gpu, used_host, main_gpu)
        if not placement.ok and self.version.era == "C" and num_ctx is None and requested > 4096:
            # HEAD: after an OOM with the automatic context, step down one tier and retry once
            lower = 32768 if requested > 32768 else 4096
            placement = self._plan(mf, int(num_gpu), lower, num_batch, used_gpu, used_host, main_gpu)
        return replace(placement, num_thread=max(0, int(num_thread or 0)))  # CPU threads: speed, not memory

    def _plan(
        self,
        mf: ModelFile,
        num_gpu: int,
        requested_ctx: int,
        num_batch: int | None,
        used_gpu: list[int] | None,
        used_host: int,
        main_gpu: int | None = None,
    ) -> Placement:
        """Ollama's rule for this version places the layers (tuner.estimate); the runner's real buffers are
        the estimator's plus this model's hidden error; the first device that cannot hold them fails."""
        spec = spec_of(mf)
        free = self.free_gpu_bytes(used_gpu, used_host)
        host_free = self.free_host_bytes(used_gpu, used_host)
        seen = self.gpus if self.knobs.visible is None else [self.gpus[i] for i in self.knobs.visible]
        fa_ok = all(g.supports_flash_attention for g in seen)  # no GPU: the CPU, which supports it
        fa = self.knobs.use_flash_attention(self.version.flash_attention(mf.arch.name, fa_ok), fa_ok)
        parallel = 1 if self.knobs.slots_for(mf.arch.name) == 1 else self.num_parallel
        req = Request(
            num_ctx=requested_ctx,
            num_gpu=num_gpu,
            num_parallel=parallel,
            num_batch=num_batch,
            flash_attn=fa,
            kv_type=self.knobs.effective_kv(fa, self.version),
            sched_spread=self.knobs.sched_spread,
            visible=self._visible(main_gpu),  # CUDA_VISIBLE_DEVICES (the others stay idle, still probed)
        )
        truth = self.truth(mf.tag, requested_ctx)
        pred = predict(spec, free, req, engine="ollama", version=self.version, truth=truth)
        at = Attempt(
            mf,
            num_gpu,
            pred.num_ctx,
            requested_ctx,
            pred.num_batch,
            parallel,
            pred.flash_attn,
            free,
            host_free,
        )
        alloc, runner_gpus, est = pred.allocation, list(pred.runner_gpus), pred.ollama
        gpu_buffers = sum(d.weights + d.kv + d.compute for d in alloc.gpu)
        fully = alloc.offloaded == spec.max_layers
        v = self.version
        if est is not None:
            # the Ollama engine measures real buffers; the llama.cpp runner reports memory.go's estimate
            measured = v.ollama_engine(mf.arch.name)
            if measured:
                size = gpu_buffers + alloc.cpu.total
                vram = size if fully else gpu_buffers
                required = alloc.cpu.total
            else:
                size, vram = est.total_bytes, est.vram_bytes
                required = est.total_bytes - est.vram_bytes
            if required > host_free:
                error, kind = v.system_memory(required, host_free), "system_memory"
            else:
                error, kind = device_errors(v, alloc, runner_gpus, free)
        else:
            vram = gpu_buffers
            size = vram if fully else vram + alloc.cpu.total
            error, kind = device_errors(v, alloc, runner_gpus, free)
            if not error and alloc.cpu.total > host_free:
                error = (
                    "llama-server reported out-of-memory during startup: ggml_backend_cpu_buffer_type_alloc_buffer: "
                    f"failed to allocate buffer of size {alloc.cpu.total}"
                )
                kind = "host"
        return build_placement(
            at, len(self.gpus), alloc, runner_gpus, pred.num_gpu, size, vram, error, kind, est
        )

    def _visible(self, main_gpu: int | None) -> tuple[int, ...] | None:
        """The GPUs a runner may use: CUDA_VISIBLE_DEVICES, and in Era C an explicit main_gpu alone
        (llama-server --split-mode none --main-gpu N); an index past the visible GPUs leaves none."""
        seen = self.knobs.visible
        if main_gpu is None or self.version.era != "C":
            return seen
        order = seen if seen is not None else tuple(range(len(self.gpus)))
        return (order[main_gpu],) if 0 <= main_gpu < len(order) else ()

    def truth(self, tag: str, num_ctx: int = 0) -> Adjust:
        """The runner's real buffers against the estimator's (tuner.sim.memtruth): the estimator's own with
        this model's hidden error scaled by estimator_error, or, with memory_truth "foreign", a per-card-family
        model of a different form."""
        if self.memory_truth == "foreign":
            return foreign_truth(tag, num_ctx, self.gpus)
        return estimator_truth(tag, self.estimator_error)

    # --- speed ---------------------------------------------------------------------------------
    def layout(self, placement: Placement) -> perf.Layout:
        kv = self.knobs.effective_kv(placement.flash_attn, self.version)
        return perf.Layout(
            placement.layer_gpu, placement.flash_attn, placement.runner_gpus, kv, placement.num_thread
        )

    def speed(self, placement: Placement, prompt_tokens: int = 512, depth_tokens: int = 0) -> perf.Speed:
        """Noise-free decode tok/s at `depth_tokens` of context and prefill tok/s for `prompt_tokens`."""
        mf = _file(placement)
        ubatch = max(1, min(placement.num_batch, placement.num_ctx))
        return perf.speed(
            mf, self.layout(placement), self.gpus, self.host, prompt_tokens, depth_tokens, ubatch
        )

    def gpu_duty(self, placement: Placement, depth_tokens: int = 0) -> float:
        """The share of a decode step its GPUs are busy: 1 fully on the GPU; with layers on the CPU the GPUs
        wait while the CPU reads its layers (what the power model draws for, tuner.sim.power)."""
        mf = _file(placement)
        layout = self.layout(placement)
        if all(d < 0 for d in layout.layer_gpu):
            return 0.0
        if all(d >= 0 for d in layout.layer_gpu):
            return 1.0
        total = perf.decode_seconds_per_token(mf, layout, self.gpus, self.host, depth_tokens)
        no_cpu = replace(
            self.host, bandwidth_gbps=1e9, cpu_tflops=1e9, physical_cores=10**9
        )  # CPU layers free
        return min(1.0, perf.decode_seconds_per_token(mf, layout, self.gpus, no_cpu, depth_tokens) / total)

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
        prompt_clock, decode_clock = self.power.slowdown(gpus_of(placement.layer_gpu))  # throttle, drift
        prompt_s *= load_factor * self.noise_factor() * prompt_clock
        eval_s *= load_factor * self.noise_factor() * decode_clock
        if self.interference.jitter > 0:  # a busy neighbour only ever slows a generation down
            prompt_s *= math.exp(abs(self._rng.gauss(0.0, self.interference.jitter)))
            eval_s *= math.exp(abs(self._rng.gauss(0.0, self.interference.jitter)))
        return prompt_s, eval_s


def _file(placement: Placement) -> ModelFile:
    mf = lookup(placement.tag)
    assert mf is not None
    return mf
