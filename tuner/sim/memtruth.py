"""What the simulated runner really allocates, against autotune's own estimate (tuner.estimate).

Weights and the KV cache follow from the file, so the runner allocates exactly what the estimator predicts;
the compute buffers and the CUDA context are the estimator's guess, and reality differs. Two ways:

* "estimator" (the default): the estimator's own buffers with a hidden per-model error, scaled by
  `estimator_error` (0 = exact; 1 = compute x 0.92..1.22 and up to 192 MiB more context; 2 = twice that).
  Its form (a factor on compute, an offset on the context) is the form autotune's search learns.
* "foreign": a different model of reality, so no search can win by trusting its own form. Per card family a
  compute factor and an absolute CUDA context (replacing the estimator's 320 MiB), plus a deterministic misfit
  per (model, context, GPU) of the size the real H100 left unexplained:
    datacenter Ampere/Hopper (cc 8.0, 9.0): compute x 0.75, context 704 MiB, fitted by least squares to the 32
        loaded trials of the real H100 study (reports/memory-h100.md, reports/examples/h100-llama3-8b;
        residual 77 MiB): the estimator overstates compute there (its 282 MiB against the 112 MiB llama.cpp
        logged, reports/examples/llama-bench-h100/server-logs.txt) and understates the context;
    Ada / consumer Ampere (cc 8.6, 8.9): compute x 0.97 (RTX 4090, 560 of a predicted 580 MiB, public memory
        log row 45), context 480 MiB (assumed);
    Blackwell (cc 10+): compute x 1.10, context 560 MiB (assumed);
    older parts (Volta, Turing, Pascal, Maxwell): compute x 1.25, context 256 MiB (assumed);
    unified memory (GB10): compute x 1.00, context 900 MiB (assumed).
  Only the H100 row of that table is measured; the others are set apart from the estimator on purpose, in
  both directions, so the benchmark sees families the search has not been tuned on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from tuner.estimate.llamacpp import Allocation
from tuner.hardware import GpuSpec
from tuner.units import MiB

MEMORY_TRUTHS = ("estimator", "foreign")
FOREIGN_MISFIT_BYTES = 77 * MiB  # the residual standard deviation of the H100 fit

# family -> (compute factor, CUDA context bytes)
FOREIGN_FAMILIES: dict[str, tuple[float, int]] = {
    "datacenter": (0.75, 704 * MiB),
    "ada-ampere": (0.97, 480 * MiB),
    "blackwell": (1.10, 560 * MiB),
    "older": (1.25, 256 * MiB),
    "unified": (1.00, 900 * MiB),
}

Adjust = Callable[[Allocation, Sequence[int]], Allocation]


def card_family(gpu: GpuSpec) -> str:
    if gpu.unified:
        return "unified"
    cc = gpu.compute_capability
    if cc in ((8, 0), (9, 0)):
        return "datacenter"
    if cc >= (10, 0):
        return "blackwell"
    if cc >= (8, 0):
        return "ada-ampere"
    return "older"


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def estimator_truth(tag: str, scale: float) -> Adjust:
    """The estimator's buffers with this model's hidden error on compute (x 0.92..1.22) and context (+0..192
    MiB), scaled by `scale`."""
    digest = hashlib.sha256(("estimator-error:" + tag).encode()).digest()
    u1, u2 = digest[0] / 255, digest[1] / 255  # kept as before: the same hidden error per model
    factor = 1 + scale * (-0.08 + 0.30 * u1)
    extra = int(scale * u2 * 192 * MiB)

    def adjust(alloc: Allocation, _gpus: Sequence[int]) -> Allocation:
        if not scale:
            return alloc
        gpu = tuple(replace(d, compute=int(d.compute * factor), context=d.context + extra) for d in alloc.gpu)
        return replace(alloc, gpu=gpu, cpu=replace(alloc.cpu, compute=int(alloc.cpu.compute * factor)))

    return adjust


def foreign_truth(tag: str, num_ctx: int, gpus: Sequence[GpuSpec]) -> Adjust:
    """Per card family: compute x factor, an absolute CUDA context, and a misfit per (model, context, GPU)."""

    def adjust(alloc: Allocation, runner_gpus: Sequence[int]) -> Allocation:
        out = []
        for d, g in zip(alloc.gpu, runner_gpus):
            factor, context = FOREIGN_FAMILIES[card_family(gpus[g])]
            misfit = int((2 * _unit("foreign", tag, num_ctx, g) - 1) * 1.7 * FOREIGN_MISFIT_BYTES)
            compute = max(0, int(d.compute * factor) + misfit)
            out.append(replace(d, compute=compute, context=context if d.context else 0))
        cpu_factor = FOREIGN_FAMILIES["older"][0] if not gpus else 1.0
        return replace(
            alloc, gpu=tuple(out), cpu=replace(alloc.cpu, compute=int(alloc.cpu.compute * cpu_factor))
        )

    return adjust
