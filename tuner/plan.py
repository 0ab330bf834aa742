"""`autotune plan`: will a model fit these GPUs, before buying, renting or loading anything?

For each context it answers with the memory estimator (tuner.estimate): the largest num_gpu that fits,
the predicted VRAM per GPU, the share of the model on the GPUs, whether it runs fully on the GPUs, and what
Ollama's own automatic placement (num_gpu -1) would do there, including when that would fail to allocate.
Free memory per card is its total minus what the driver keeps (about 0.4 GiB + 1.25%), as on a real
machine with nothing loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.estimate import ModelSpec, Prediction, Request, SpecError, max_num_gpu, predict
from tuner.hardware import GpuSpec, parse_gpus
from tuner.units import GiB

DEFAULT_CTX = (4096, 8192, 16384, 32768, 65536, 131072)


@dataclass(frozen=True)
class ContextPlan:
    num_ctx: int
    num_gpu: int  # the largest explicit num_gpu predicted to fit
    max_layers: int
    vram_per_gpu: list[int]  # predicted bytes per GPU at that num_gpu
    gpu_fraction: float
    fully_on_gpu: bool
    auto_num_gpu: int  # what the engine's automatic placement would offload
    auto_fits: bool  # whether that automatic placement is predicted to load
    auto_vram_per_gpu: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "num_ctx": self.num_ctx,
            "num_gpu": self.num_gpu,
            "max_layers": self.max_layers,
            "vram_per_gpu_bytes": self.vram_per_gpu,
            "gpu_fraction": round(self.gpu_fraction, 4),
            "fully_on_gpu": self.fully_on_gpu,
            "auto": {
                "num_gpu": self.auto_num_gpu,
                "fits": self.auto_fits,
                "vram_per_gpu_bytes": self.auto_vram_per_gpu,
            },
        }


@dataclass(frozen=True)
class Plan:
    model: str
    gpus: list[GpuSpec]
    free: list[int]
    engine: str
    version: str
    kv_type: str
    num_parallel: int
    margin: float
    rule: str
    weights_bytes: int
    contexts: list[ContextPlan]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpus": [{"name": g.name, "memory_bytes": g.memory_bytes} for g in self.gpus],
            "free_bytes": self.free,
            "engine": self.engine,
            "version": self.version,
            "kv_cache_type": self.kv_type,
            "num_parallel": self.num_parallel,
            "margin": self.margin,
            "rule": self.rule,
            "weights_bytes": self.weights_bytes,
            "contexts": [c.to_json() for c in self.contexts],
        }


def load_show(path: str) -> dict[str, Any]:
    """A saved /api/show response (e.g. `curl localhost:11434/api/show -d '{"model":"gemma3:12b"}'`)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"--show '{path}' cannot be read ({exc.strerror or exc}); pass a saved /api/show JSON file."
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"--show '{path}' is not JSON ({exc}); save the body of /api/show to it.") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"--show '{path}' is not an /api/show response (a JSON object with model_info and tensors)."
        )
    return data


def spec_from_show(show: dict[str, Any], name: str, flag: str) -> ModelSpec:
    try:
        return ModelSpec.from_show(show, name=name)
    except (SpecError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{flag}: {exc}.") from exc


def parse_ctx_list(text: str | None, trained: int) -> list[int]:
    if not text:
        return [c for c in DEFAULT_CTX if c <= trained] or [trained]
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        mult = 1024 if item.endswith("k") else 1
        digits = item[:-1] if item.endswith("k") else item
        if not digits.isdigit() or int(digits) * mult < 1:
            raise ConfigError(
                f"--ctx entry '{item}' is not a context length; use e.g. --ctx 8192,32768,131072."
            )
        out.append(int(digits) * mult)
    return out


def parse_gpu_list(text: str) -> list[GpuSpec]:
    try:
        gpus = parse_gpus(text)
    except ValueError as exc:
        raise ConfigError(f"--gpus '{text}': {exc}") from exc
    if not gpus:
        raise ConfigError(f"--gpus '{text}' names no GPU; use e.g. --gpus 2x24GiB or --gpus 4xRTX3060.")
    return gpus


def make_plan(
    spec: ModelSpec,
    gpus: list[GpuSpec],
    contexts: list[int],
    *,
    engine: str = "ollama",
    version: str = "0.12.10",
    kv_type: str = "f16",
    num_parallel: int = 1,
    flash_attn: bool | None = None,
    margin: float = 1.0,
) -> Plan:
    free = [g.memory_bytes - g.idle_reserved_bytes for g in gpus]
    if flash_attn is None and engine == "ollama" and not all(g.supports_flash_attention for g in gpus):
        flash_attn = False  # Ollama turns flash attention off when a GPU cannot run it
    rows = []
    rule, effective_kv = "", kv_type
    for ctx in contexts:
        req = Request(num_ctx=ctx, num_parallel=num_parallel, kv_type=kv_type, flash_attn=flash_attn)
        n, best = max_num_gpu(spec, free, req, engine=engine, version=version, margin=margin)
        auto: Prediction = predict(spec, free, req, engine=engine, version=version)
        rule, effective_kv = auto.rule, auto.kv_type
        rows.append(
            ContextPlan(
                num_ctx=best.num_ctx,
                num_gpu=n,
                max_layers=spec.max_layers,
                vram_per_gpu=list(best.gpu_bytes),
                gpu_fraction=best.gpu_fraction,
                fully_on_gpu=best.fully_on_gpu,
                auto_num_gpu=auto.offloaded,
                auto_fits=auto.fits(free, margin),
                auto_vram_per_gpu=list(auto.gpu_bytes),
            )
        )
    return Plan(
        model=spec.name,
        gpus=gpus,
        free=free,
        engine=engine,
        version=version,
        kv_type=effective_kv,
        num_parallel=num_parallel,
        margin=margin,
        rule=rule,
        weights_bytes=spec.weights_bytes,
        contexts=rows,
    )


def render(plan: Plan) -> str:
    """The plan as a table for a terminal."""
    groups: dict[tuple[str, int], int] = {}
    for g, f in zip(plan.gpus, plan.free):
        groups[(g.name, f)] = groups.get((g.name, f), 0) + 1
    cards = ", ".join(f"{n} x {name} ({f / GiB:.1f} GiB free each)" for (name, f), n in groups.items())
    lines = [
        f"{plan.model}: {plan.weights_bytes / GiB:.1f} GiB of weights on {len(plan.gpus)} GPU(s): {cards}",
        f"rule: {plan.rule}; KV cache {plan.kv_type}, {plan.num_parallel} parallel slot(s), margin {plan.margin:g}",
        "",
        f"{'num_ctx':>8}  {'num_gpu':>9}  {'on GPU':>6}  {'VRAM per GPU (GiB)':<34}  Ollama's automatic placement",
    ]
    for c in plan.contexts:
        per = " ".join(f"{b / GiB:.1f}" for b in c.vram_per_gpu) or "-"
        full = "100%" if c.fully_on_gpu else f"{c.gpu_fraction * 100:.0f}%"
        auto = f"num_gpu {c.auto_num_gpu}" + (" (CPU only)" if c.auto_num_gpu == 0 else "") + ", "
        auto += "loads" if c.auto_fits else "FAILS to allocate"
        lines.append(f"{c.num_ctx:>8}  {c.num_gpu:>4}/{c.max_layers:<4}  {full:>6}  {per:<34}  {auto}")
    lines.append("")
    lines.append(
        "num_gpu: the most layers predicted to fit (set it as PARAMETER num_gpu); on GPU: share of the model in VRAM."
    )
    return "\n".join(lines)
