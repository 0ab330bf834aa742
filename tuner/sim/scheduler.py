"""The scheduler: loaded runners, reload and eviction rules, keep-alive expiry, and the simulated clock bill.

Mutable, but with no clock of its own: every call takes `now` (epoch seconds). Runners are keyed by the
model file (sched.go keys them by model path), so two names for the same blob share one runner.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.sim.catalog import lookup
from tuner.sim.core import Simulation
from tuner.sim.options import needs_reload
from tuner.sim.placement import Placement
from tuner.sim.power import gpus_of
from tuner.sim.slots import MAX_QUEUE_DEFAULT, SlotBoard

DEFAULT_KEEP_ALIVE_S = 300.0  # OLLAMA_KEEP_ALIVE default 5m
UNLOAD_S = 0.3  # killing the runner and waiting for the memory to come back
LOADED_RUNNER_S = 0.0015  # load_duration when the runner is already there
FOREVER_CAP_S = 292 * 365.25 * 86400  # a negative keep_alive: Go's max duration, about 292 years
# What the simulated clock bill is split into (/sim/state "charged_s_by_kind"); they add up to charged_s.
CHARGE_KINDS = ("load", "failed_load", "generation", "unload")


class LoadFailed(Exception):
    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Runner:
    name: str  # the model name that loaded it, as /api/ps shows it
    tag: str  # catalog tag (the file)
    options: dict[str, Any]  # Runner options as requested (num_gpu -1 when automatic)
    placement: Placement
    keep_alive_s: float
    expires_at: float
    load_factor: float
    loaded_at: float
    prompt_cache: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, sim: Simulation, max_queue: int = MAX_QUEUE_DEFAULT) -> None:
        self.sim = sim
        self.slots = SlotBoard(sim.num_parallel, max_queue)
        self.lock = threading.RLock()
        self.runners: dict[str, Runner] = {}
        self.counters = {"loads": 0, "failed_loads": 0, "generations": 0}
        self.charged_s = 0.0
        self.charged_by_kind = dict.fromkeys(CHARGE_KINDS, 0.0)
        self._read_before: set[str] = set()

    # --- bookkeeping ---------------------------------------------------------------------------
    def used(self, exclude: str | None = None) -> tuple[list[int], int]:
        gpu = [0] * len(self.sim.gpus)
        host = 0
        for key, r in self.runners.items():
            if key == exclude:
                continue
            gpu = [a + b for a, b in zip(gpu, r.placement.gpu_bytes)]
            host += r.placement.cpu_bytes
        return gpu, host

    def charge(
        self,
        seconds: float,
        kind: str,
        gpus: Sequence[int] = (),
        compute_s: float = 0.0,
        duty: float = 1.0,
    ) -> None:
        """Add simulated seconds to the bill, under one of CHARGE_KINDS, and run the GPUs' power model
        (tuner.sim.power) over them: `gpus` busy (a generation: its first `compute_s` prompt processing,
        then decode, busy `duty` of the time and waiting on the CPU's layers the rest; a load: copies),
        the others idle."""
        seconds = max(0.0, seconds)
        self.charged_s += seconds
        self.charged_by_kind[kind] += seconds
        power = self.sim.power
        if kind == "generation":
            prefill = min(seconds, max(0.0, compute_s))
            power.work(prefill, gpus, "prefill")
            power.work(seconds - prefill, gpus, "decode", duty)
        elif kind in ("load", "failed_load"):
            power.work(seconds, gpus, "load")
        else:
            power.work(seconds, (), "decode")

    def sweep(self, now: float) -> None:
        """Unload every runner whose keep-alive ran out."""
        for key in [k for k, r in self.runners.items() if r.expires_at <= now]:
            self.unload(key)

    def unload(self, tag: str) -> bool:
        runner = self.runners.pop(tag, None)
        if runner is None:
            return False
        self.slots.forget(tag)
        self.charge(UNLOAD_S, "unload")
        return True

    def unload_all(self) -> None:
        for key in list(self.runners):
            self.unload(key)

    def expire(self, tag: str, now: float) -> None:
        """keep_alive 0 with an empty prompt: expires_at = now, unloaded as soon as it is idle (now)."""
        if tag in self.runners:
            self.unload(tag)

    def reset(self) -> None:
        self.runners.clear()
        self.counters = {"loads": 0, "failed_loads": 0, "generations": 0}
        self.charged_s = 0.0
        self.charged_by_kind = dict.fromkeys(CHARGE_KINDS, 0.0)
        self._read_before.clear()
        self.slots = SlotBoard(self.sim.num_parallel, self.slots.max_queue)
        self.sim.reseed()

    # --- loading -------------------------------------------------------------------------------
    def acquire(
        self, name: str, tag: str, options: dict[str, Any], keep_alive_s: float | None, now: float
    ) -> tuple[Runner, float]:
        """The runner for `tag` with these Runner options, loading (or reloading) it if needed.

        Returns the runner and the load seconds (a tiny constant when it was already loaded).
        Raises LoadFailed with Ollama's status and message.
        """
        self.sweep(now)
        trained = _trained_ctx(tag)
        current = self.runners.get(tag)
        if current is not None:
            if not needs_reload(current.options, options, era=self.sim.version.era, trained_ctx=trained):
                if keep_alive_s is not None:
                    current.keep_alive_s = keep_alive_s
                return current, LOADED_RUNNER_S
            self.unload(tag)
        limit = 3 * max(1, len(self.sim.gpus))  # OLLAMA_MAX_LOADED_MODELS unset: 3 per GPU
        while len(self.runners) >= limit:
            self.unload(min(self.runners.values(), key=lambda r: r.expires_at).tag)
        placement = self._plan(tag, options)
        if not placement.ok or (self.runners and not self._fits_beside_others(placement)):
            if self.runners:
                self.unload_all()  # evict the other models and try again on empty GPUs
                placement = self._plan(tag, options)
        if not placement.ok:
            self.counters["failed_loads"] += 1
            self.charge(
                0.5 * self.sim.load_seconds(placement, cached=tag in self._read_before),
                "failed_load",
                gpus_of(placement.layer_gpu),
            )
            raise LoadFailed(placement.error)
        cached = tag in self._read_before and self.sim.host.ram_bytes > 2 * placement.cpu_bytes
        load_s = self.sim.load_seconds(placement, cached=cached) * self.sim.noise_factor(2.0)
        self._read_before.add(tag)
        keep = DEFAULT_KEEP_ALIVE_S if keep_alive_s is None else keep_alive_s
        expires = now + min(keep, FOREVER_CAP_S)
        runner = Runner(name, tag, dict(options), placement, keep, expires, self.sim.noise_factor(0.5), now)
        self.runners[tag] = runner
        self.counters["loads"] += 1
        self.charge(load_s, "load", gpus_of(placement.layer_gpu))
        return runner, load_s

    def _plan(self, tag: str, options: dict[str, Any]) -> Placement:
        used_gpu, used_host = self.used(exclude=tag)
        return self.sim.plan(
            tag,
            options["num_gpu"],
            None if options.get("auto_ctx") else options["num_ctx"],
            num_batch=options["num_batch"],
            main_gpu=options.get("main_gpu"),
            num_thread=options.get("num_thread"),
            used_gpu=used_gpu,
            used_host=used_host,
        )

    def _fits_beside_others(self, placement: Placement) -> bool:
        """A model loaded next to others must fit completely on the GPUs (requireFull)."""
        return placement.meets_require_full

    def release(self, runner: Runner, keep_alive_s: float | None, now: float) -> None:
        """The request is done: the idle timer starts (keep_alive 0 unloads right away)."""
        if keep_alive_s is not None:
            runner.keep_alive_s = keep_alive_s
        runner.expires_at = now + min(runner.keep_alive_s, FOREVER_CAP_S)
        if runner.keep_alive_s <= 0:
            self.unload(runner.tag)

    # --- reporting -----------------------------------------------------------------------------
    def gpu_used(self) -> list[int]:
        base = [g.idle_reserved_bytes + self.sim.interference.gpu_bytes for g in self.sim.gpus]
        used, _ = self.used()
        return [a + b for a, b in zip(base, used)]

    def state(self) -> dict[str, Any]:
        sim = self.sim
        used = self.gpu_used()
        _, host_used = self.used()
        gpus = []
        noise = sim.interference
        sim.power.sync()
        telemetry = sim.power.telemetry()
        slowed = sim.power.slowdown_reasons()
        for i, (g, u) in enumerate(zip(sim.gpus, used)):
            others = (
                [{"pid": 4242, "name": "other-tenant", "used_bytes": noise.gpu_bytes}]
                if noise.gpu_bytes
                else []
            )
            gpus.append(
                {
                    "index": i,
                    "name": g.name,
                    "total_bytes": g.memory_bytes,
                    "used_bytes": u,
                    "free_bytes": max(0, g.memory_bytes - u),
                    "bandwidth_gbps": g.bandwidth_gbps,
                    "compute_capability": list(g.compute_capability),
                    "other_processes": others,
                    "throttle_reasons": list(dict.fromkeys([*noise.throttle, *slowed])),
                    "telemetry": telemetry[i],
                }
            )
        loaded = []
        for r in sorted(self.runners.values(), key=lambda r: r.loaded_at):
            p = r.placement
            loaded.append(
                {
                    "model": r.name,
                    "tag": r.tag,
                    "num_gpu": r.options.get("num_gpu", -1),
                    "num_thread": p.num_thread,
                    "num_ctx": p.num_ctx,
                    "layers_offloaded": p.offloaded,
                    "layers_total": p.total_layers,
                    "layers_per_gpu": list(p.layers_per_gpu),
                    "gpu_bytes": list(p.gpu_bytes),
                    "cpu_bytes": p.cpu_bytes,
                    "size": p.size_bytes,
                    "size_vram": p.size_vram_bytes,
                    "expires_at": r.expires_at,
                }
            )
        return {
            "gpus": gpus,
            "host": {
                "ram_bytes": sim.host.ram_bytes,
                "ram_used_bytes": sim.host.idle_used_bytes + host_used,
                "other_cpu_cores": noise.cpu_cores,
                "physical_cores": sim.host.physical_cores,
            },
            "interference": noise.to_json(),
            "driver": f"sim-{sim.version.text}",
            "version": sim.version.text,
            "time_s": round(sim.power.time_s, 6),  # the simulated clock (tuner.sim.power)
            "power": sim.power.to_json(),
            "charged_s": round(self.charged_s, 6),
            "charged_s_by_kind": {k: round(v, 6) for k, v in self.charged_by_kind.items()},
            "counters": dict(self.counters),
            "slots": {
                "num_parallel": self.slots.num_parallel,
                "max_queue": self.slots.max_queue,
                "peak_busy": self.slots.peak_busy,
                "rejected": self.slots.rejected,
            },
            "loaded": loaded,
        }


def _trained_ctx(tag: str) -> int:
    mf = lookup(tag)
    return mf.arch.context_length if mf else 0
