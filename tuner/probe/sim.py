"""The simulator's GPUs, read from its /sim/state endpoint through the same interface as NVML."""

from __future__ import annotations

from typing import Any

import httpx

from tuner.errors import ProbeError
from tuner.probe.base import Activity, GpuInfo, GpuProcess, Telemetry


class SimProbe:
    """The simulator's GPUs, read from its /sim/state endpoint (httpx, one connection kept open; the
    sampler thread and the study share it): the same interface as NVML."""

    source = "simulator"

    def __init__(self, host: str, timeout_s: float = 5.0) -> None:
        self._url = host.rstrip("/") + "/sim/state"
        self._http = httpx.Client(timeout=timeout_s)
        try:
            state = self._state()
        except ProbeError:
            self._http.close()
            raise
        driver = str(state.get("driver", "sim"))
        self._gpus = [
            GpuInfo(g["index"], g["name"], int(g["total_bytes"]), driver, _cc(g.get("compute_capability")))
            for g in state["gpus"]
        ]

    def _state(self) -> dict[str, Any]:
        try:
            resp = self._http.get(self._url)
            resp.raise_for_status()
            state = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProbeError(f"Cannot read simulated GPUs at '{self._url}' ({exc}).") from exc
        if not isinstance(state, dict):
            raise ProbeError(f"Cannot read simulated GPUs at '{self._url}' (not a JSON object).")
        return state

    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    def details(self) -> list[dict[str, Any]]:
        """The simulated cards' fingerprint fields (/sim/state gpus[i]["details"]), as NvmlProbe.details()
        gives them; {} for a simulator that does not say."""
        return [dict(g.get("details") or {}) for g in self._state()["gpus"]]

    def used_bytes(self) -> list[int]:
        return [int(g["used_bytes"]) for g in self._state()["gpus"]]

    def physical_cores(self) -> int | None:
        """The simulated host's physical cores (None from a simulator that does not say)."""
        cores = (self._state().get("host") or {}).get("physical_cores")
        return int(cores) if isinstance(cores, int) else None

    def activity(self) -> Activity:
        """The simulator's injected interference (python -m tuner.sim --interference), read like NVML's."""
        state = self._state()
        processes = [
            GpuProcess(int(g["index"]), int(p["pid"]), str(p["name"]), int(p["used_bytes"]))
            for g in state["gpus"]
            for p in g.get("other_processes") or []
        ]
        throttle: list[str] = []
        for g in state["gpus"]:
            throttle += [str(t) for t in g.get("throttle_reasons") or [] if t not in throttle]
        cpu = (state.get("host") or {}).get("other_cpu_cores")
        return Activity(processes, throttle, float(cpu) if cpu is not None else 0.0)

    def telemetry(self) -> list[Telemetry]:
        """The simulator's power model (tuner.sim.power) per GPU, read like NVML's; time_s is the simulated
        clock. A simulator without the model (an older one) gives no telemetry."""
        out = []
        for g in self._state()["gpus"]:
            t = g.get("telemetry")
            if not isinstance(t, dict):
                continue
            out.append(
                Telemetry(
                    gpu=int(g["index"]),
                    time_s=float(t.get("time_s") or 0.0),
                    sm_clock_mhz=_num(t.get("sm_clock_mhz")),
                    mem_clock_mhz=_num(t.get("mem_clock_mhz")),
                    temperature_c=_num(t.get("temperature_c")),
                    power_w=_num(t.get("power_w")),
                    power_limit_w=_num(t.get("power_limit_w")),
                    energy_j=_num(t.get("energy_j")),
                    throttle=tuple(str(r) for r in t.get("throttle_reasons") or []),
                    violation_s={str(k): float(v) for k, v in (t.get("violation_s") or {}).items()},
                )
            )
        return out

    def close(self) -> None:
        self._http.close()


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cc(value: object) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None
