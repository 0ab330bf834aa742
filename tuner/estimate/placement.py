"""Where a model lands and what it allocates, before loading it: the rule of the engine and version asked.

* Ollama Era A/B (<= 0.24): Ollama's own estimate (ollama.py) picks the GPUs, the tensor split and, for
  num_gpu -1, the layer count; the runner then offloads the last N layers in that split (llamacpp.py).
* Ollama Era C (>= 0.30) and llama-server: one GPU if the model file plus an f16 KV cache fits in 80% of its
  free memory (Ollama only), else every GPU, split by free memory; num_gpu -1 is llama.cpp's --fit: the most
  layers that leave 1 GiB free on every GPU.

`predict` returns what llama.cpp will really allocate (the estimate of record: where Ollama's printed
estimate and the runner's buffers disagree, the buffers are what fill the card) next to what Ollama
prints, and names the rule it used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from tuner.estimate import llamacpp
from tuner.estimate.llamacpp import CPU, Allocation
from tuner.estimate.ollama import Estimate, estimate_gpu_layers, pick_gpus
from tuner.estimate.spec import ModelSpec
from tuner.estimate.versions import Version
from tuner.units import GiB

FIT_MARGIN_BYTES = 1 * GiB  # llama.cpp --fit target per device (LLAMA_ARG_FIT_TARGET default 1024 MiB)
ENGINES = ("ollama", "llama-server")


@dataclass(frozen=True)
class Request:
    """What the user asks for: Ollama's options (or llama-server's flags)."""

    num_ctx: int  # per parallel slot
    num_gpu: int = -1  # -1 = the engine decides
    num_parallel: int = 1
    num_batch: int | None = None  # None = the engine's default (512; Era C Ollama sizes it by context)
    kv_type: str = "f16"  # f16 | q8_0 | q4_0 (quantized only counts with flash attention)
    flash_attn: bool | None = None  # None = the engine's default for this version
    sched_spread: bool = False  # OLLAMA_SCHED_SPREAD: every GPU rather than the fewest (Ollama only)
    visible: tuple[int, ...] | None = (
        None  # CUDA_VISIBLE_DEVICES: the GPUs (indices into free) the server sees
    )


@dataclass(frozen=True)
class Device:
    name: str  # "CUDA0".. in the runner's order, or "CPU"
    gpu: int  # index into the GPUs given, -1 for the CPU
    layers: int
    weights: int
    kv: int
    compute: int
    overhead: int  # CUDA context

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.overhead


@dataclass(frozen=True)
class Prediction:
    rule: str  # which engine rule decided the placement
    num_gpu: int  # layers the runner is told to offload (what it can: `offloaded`)
    num_ctx: int  # per-slot context after the caps
    num_batch: int  # the batch the runner is started with (-b/-ub)
    flash_attn: bool
    kv_type: str  # as the runner uses it (f16 when a quantized type needs flash attention and it is off)
    runner_gpus: tuple[int, ...]  # GPU indices the runner opens, CUDA0 first
    split: tuple[float, ...]  # the tensor split over runner_gpus
    allocation: Allocation
    gpu_bytes: tuple[int, ...]  # per GPU given (0 where unused): weights + KV + compute + CUDA context
    ollama: Estimate | None  # what Ollama prints (Era A/B) or None
    max_layers: int

    @property
    def devices(self) -> list[Device]:
        a = self.allocation
        out = [
            Device(f"CUDA{i}", g, a.layers_on(i), d.weights, d.kv, d.compute, d.context)
            for i, (d, g) in enumerate(zip(a.gpu, self.runner_gpus))
        ]
        c = a.cpu
        out.append(Device("CPU", CPU, a.layers_on(CPU), c.weights, c.kv, c.compute, 0))
        return out

    @property
    def fixed_bytes(self) -> tuple[int, ...]:
        """Per GPU given: weights + KV cache, the part that follows from the file exactly."""
        out = [0] * len(self.gpu_bytes)
        for d, g in zip(self.allocation.gpu, self.runner_gpus):
            out[g] = d.weights + d.kv
        return tuple(out)

    @property
    def vram_bytes(self) -> int:
        return sum(self.gpu_bytes)

    @property
    def total_bytes(self) -> int:
        return self.vram_bytes + self.allocation.cpu.total

    @property
    def gpu_fraction(self) -> float:
        buffers = sum(d.weights + d.kv + d.compute for d in self.allocation.gpu)
        total = buffers + self.allocation.cpu.total
        return buffers / total if total else 0.0

    @property
    def offloaded(self) -> int:
        return self.allocation.offloaded

    @property
    def fully_on_gpu(self) -> bool:
        return self.offloaded >= self.max_layers

    def need_bytes(self, margin: float = 1.0) -> tuple[int, ...]:
        """Per GPU given: weights + KV + margin x (compute + CUDA context), the part that is a guess."""
        return tuple(int(f + margin * (b - f)) if b else 0 for b, f in zip(self.gpu_bytes, self.fixed_bytes))

    def over_bytes(self, free: Sequence[int], margin: float = 1.0) -> int:
        """The largest shortfall over the GPUs used of need_bytes(margin) - free; < 0 when it fits."""
        return max((n - f for n, f in zip(self.need_bytes(margin), free) if n), default=-1)

    def fits(self, free: Sequence[int], margin: float = 1.0) -> bool:
        return self.over_bytes(free, margin) <= 0


Adjust = Callable[[Allocation, Sequence[int]], Allocation]  # (predicted, the runner's GPUs) -> real


def predict(
    spec: ModelSpec,
    free: Sequence[int],
    req: Request,
    *,
    engine: str = "ollama",
    version: str | Version = "0.12.10",
    truth: Adjust | None = None,
) -> Prediction:
    """Where `spec` lands on GPUs with `free` bytes each, and what every device holds.

    `truth` maps a predicted allocation (and the GPU indices its devices sit on) to the real one; only the
    simulator passes it (the real engine's --fit measures real buffers, so it decides with them).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    v = version if isinstance(version, Version) else Version(version)
    free = list(free)
    if req.visible is not None:  # the server sees only these GPUs: place on them, report on the full list
        return _on_visible(spec, free, req, engine, v, truth)
    ctx = max(4, min(req.num_ctx, spec.context_length or req.num_ctx))
    if spec.projector_bytes and spec.vision_patch:
        ctx = min(max(ctx, 2048), spec.context_length or ctx)  # vision models need at least 2048
    if req.flash_attn is None:  # with no GPU the CPU decides, and it supports flash attention
        fa = True if engine == "llama-server" else v.flash_attention(spec.arch, True)
    else:
        fa = req.flash_attn
    kv_type = req.kv_type if fa else "f16"
    ctx_total = ctx * req.num_parallel
    num_batch = req.num_batch
    if num_batch is None:
        num_batch = 512
        if engine == "ollama" and v.era == "C":
            num_batch = v.generation_batch(
                ctx_total,
                predicted_bytes=spec.weights_bytes + _f16_kv_bytes(spec, ctx_total),
                available_bytes=sum(free),
                flash_attn=fa,
                smallest_gpu_bytes=min(free) if free else 0,
            )
    ubatch = max(1, min(num_batch, ctx))
    adjust: Adjust = truth or (lambda a, _gpus: a)

    def allocate(gpus: list[int], layers: int, split: list[float]) -> Allocation:
        return adjust(
            llamacpp.allocate(
                spec,
                n_devices=len(gpus),
                num_gpu=layers,
                split=split,
                ctx_total=ctx_total,
                ubatch=ubatch,
                parallel=req.num_parallel,
                flash_attn=fa,
                kv_type=kv_type,
                # one KV stream per slot (llama.cpp's non-unified cache): llama-server, and the llama.cpp Ollama
                # vendors from 0.12 (real 0.12.10 and 0.24.0: the compute buffer does not grow with slots)
                unified_kv=engine == "ollama" and v.number < (0, 12, 0),
            ),
            gpus,
        )

    est: Estimate | None = None
    runner_gpus: list[int] = []
    split: list[float] = []
    layers = 0
    if engine == "ollama" and v.era in ("A", "B"):
        rule = f"Ollama {v.text} (Era {v.era}): memory.go estimateGPULayers picks GPUs, split and layers"
        kw = dict(
            num_ctx=ctx,
            num_batch=num_batch,
            num_gpu=req.num_gpu,
            num_parallel=req.num_parallel,
            kv_type=kv_type,
            version=v,
        )
        if free and req.num_gpu != 0:
            runner_gpus, est, _ = pick_gpus(
                spec,
                free,
                single_then_all=v.number < (0, 7, 0),
                spread=req.sched_spread,
                **kw,  # type: ignore[arg-type]
            )
            if est.layers == 0 and req.num_gpu < 0:
                runner_gpus = []  # nothing fits: the CPU runner
            else:
                layers = est.layers if req.num_gpu < 0 else req.num_gpu
                counts = [float(c) for c in est.tensor_split]
                split = counts if sum(counts) else [float(free[g]) for g in runner_gpus]
        else:
            est = estimate_gpu_layers(spec, [], **kw)  # type: ignore[arg-type]
    else:
        if engine == "ollama":
            rule = f"Ollama {v.text} (Era C): llama-server --fit places the layers, split by free memory"
        else:
            rule = "llama-server: -ngl layers (--fit when automatic), split by free memory"
        if free and req.num_gpu != 0:
            order = sorted(range(len(free)), key=lambda i: (-free[i], i))
            runner_gpus = order
            if (
                engine == "ollama" and not req.sched_spread
            ):  # PredictServerVRAM: file + f16 KV, 80% of one GPU
                kv = _f16_kv_bytes(spec, ctx_total)
                single = [g for g in order if free[g] * 0.8 >= spec.weights_bytes + kv]
                runner_gpus = [single[0]] if single else order
        split = [float(free[g]) for g in runner_gpus]
        layers = max(req.num_gpu, 0) if runner_gpus else 0
        if runner_gpus and req.num_gpu < 0:
            layers = fit_layers(
                lambda n: allocate(runner_gpus, n, split), [free[g] for g in runner_gpus], spec.max_layers
            )
    alloc = allocate(runner_gpus, layers, split)
    gpu_bytes = [0] * len(free)
    for d, g in zip(alloc.gpu, runner_gpus):
        gpu_bytes[g] = d.total
    return Prediction(
        rule=rule,
        num_gpu=layers,
        num_ctx=ctx,
        num_batch=num_batch,
        flash_attn=fa,
        kv_type=kv_type,
        runner_gpus=tuple(runner_gpus),
        split=tuple(split),
        allocation=alloc,
        gpu_bytes=tuple(gpu_bytes),
        ollama=est,
        max_layers=spec.max_layers,
    )


def _on_visible(
    spec: ModelSpec, free: list[int], req: Request, engine: str, v: Version, truth: Adjust | None
) -> Prediction:
    visible = [g for g in dict.fromkeys(req.visible or ()) if 0 <= g < len(free)]
    adjust = None if truth is None else (lambda a, gpus: truth(a, [visible[g] for g in gpus]))
    sub = predict(
        spec, [free[g] for g in visible], replace(req, visible=None), engine=engine, version=v, truth=adjust
    )
    gpu_bytes = [0] * len(free)
    for i, b in enumerate(sub.gpu_bytes):
        gpu_bytes[visible[i]] = b
    return replace(sub, runner_gpus=tuple(visible[i] for i in sub.runner_gpus), gpu_bytes=tuple(gpu_bytes))


def _f16_kv_bytes(spec: ModelSpec, ctx_total: int) -> int:
    """Ollama's PredictServerVRAM KV term: f16, every layer at the smallest KV head count."""
    heads = max(spec.head_count, 1)
    return 2 * spec.block_count * spec.head_count_kv_min * (spec.embedding_length // heads) * ctx_total * 2


def fit_layers(allocate: Callable[[int], Allocation], free: Sequence[int], max_layers: int) -> int:
    """llama.cpp --fit: the most layers (bisection; memory grows with layers) leaving the margin free."""

    def ok(n: int) -> bool:
        return all(d.total + FIT_MARGIN_BYTES <= f for d, f in zip(allocate(n).gpu, free))

    lo, hi = 0, max_layers
    if ok(hi):
        return hi
    while hi - lo > 1:  # ok(lo) holds (0 layers is assumed to fit), ok(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def max_num_gpu(
    spec: ModelSpec,
    free: Sequence[int],
    req: Request,
    *,
    engine: str = "ollama",
    version: str | Version = "0.12.10",
    margin: float = 1.0,
) -> tuple[int, Prediction]:
    """The largest explicit num_gpu predicted to fit (with `margin` on every GPU) and its prediction.

    Bisection over num_gpu: memory per GPU grows with the layers offloaded. Returns (0, the CPU-only
    prediction) when not even one layer fits.
    """

    def at(n: int) -> Prediction:
        return predict(spec, free, replace(req, num_gpu=n), engine=engine, version=version)

    top = at(spec.max_layers)
    if top.fits(free, margin):
        return spec.max_layers, top
    lo, hi = 0, spec.max_layers
    best = at(0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        p = at(mid)
        if p.fits(free, margin):
            lo, best = mid, p
        else:
            hi = mid
    return lo, best
