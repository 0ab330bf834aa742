"""The probes' common records and interface: GPUs, processes, activity, telemetry; the Probe Protocol, the
null probe, and the readers that ask any probe for what it may or may not offer (activity_of, telemetry_of,
details_of, physical_cores_of)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tuner.errors import ProbeError
from tuner.hardware import flash_attention_capable


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_bytes: int
    driver: str = ""
    compute_capability: tuple[int, int] | None = None  # CUDA's (major, minor) where known

    @property
    def supports_flash_attention(self) -> bool:
        return flash_attention_capable(self.compute_capability)


@dataclass(frozen=True)
class GpuProcess:
    """A process with memory on a GPU (NVML's compute and graphics process lists)."""

    gpu: int  # index in gpus()
    pid: int
    name: str
    used_bytes: int | None  # None where the driver does not say (Windows WDDM)


@dataclass(frozen=True)
class Activity:
    """What else is going on on the GPUs (and, for the simulator, its simulated host) at one moment."""

    processes: list[GpuProcess] = field(default_factory=list)
    throttle: list[str] = field(default_factory=list)  # clock throttle reasons in effect, any GPU
    host_other_cpu_cores: float | None = None  # the simulator's host only; None: measure this host


def _optional(probe: object, method: str) -> Any:
    """probe.<method>() for what only some probes read (NVML, the simulator); None where the probe has no
    such method or its read failed: a missing reading never stops a study."""
    read = getattr(probe, method, None)
    if read is None:
        return None
    try:
        return read()
    except (ProbeError, OSError):
        return None


def activity_of(probe: object) -> Activity:
    """probe.activity() where the probe has one (NVML, the simulator), else nothing known."""
    result = _optional(probe, "activity")
    return result if isinstance(result, Activity) else Activity()


@dataclass(frozen=True)
class Telemetry:
    """One GPU's power, thermal and clock state at one moment: NVML's readings, or the simulator's model of
    them (GET /sim/state), read through the same probe interface. None: this GPU or driver does not say.

    `time_s` is the probe's clock: time.monotonic() for NVML, the simulator's simulated clock for the
    simulator (which runs a night's plan in minutes), so a soak measures its minutes on it. `energy_j` is a
    cumulative counter (NVML's total energy since the driver loaded, mJ / 1000): subtract two readings for the
    energy of a window. `violation_s` holds NVML's violation counters, cumulative seconds the clocks were held
    below what was asked, by cause ("power", "thermal", ...): subtract two readings for a window's throttle time.
    """

    gpu: int  # index in gpus()
    time_s: float
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None  # the enforced limit
    energy_j: float | None = None
    throttle: tuple[str, ...] = ()  # clock event reasons in effect (nvml.THROTTLE_REASONS names)
    violation_s: dict[str, float] = field(default_factory=dict)


def telemetry_of(probe: object) -> list[Telemetry]:
    """probe.telemetry() (one Telemetry per GPU) where the probe has one (NVML, the simulator), else []."""
    result = _optional(probe, "telemetry")
    return [t for t in result if isinstance(t, Telemetry)] if isinstance(result, list) else []


def physical_cores_of(probe: object) -> int:
    """The physical CPU cores of the host the engine runs on: the simulator's host where the probe reads
    one, else this machine's (Ollama's default num_thread is its performance cores)."""
    import os  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    cores = _optional(probe, "physical_cores")
    if isinstance(cores, int) and cores > 0:
        return cores
    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


class Probe(Protocol):
    source: str  # "nvml" | "simulator" | "none"

    def gpus(self) -> list[GpuInfo]: ...

    def used_bytes(self) -> list[int]:
        """Bytes in use on each GPU now (same order as gpus())."""
        ...

    def close(self) -> None: ...


class NullProbe:
    """No way to read GPU memory: the study falls back to the engine's own size_vram."""

    source = "none"

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    def gpus(self) -> list[GpuInfo]:
        return []

    def used_bytes(self) -> list[int]:
        return []

    def close(self) -> None:
        pass


def details_of(probe: object) -> list[dict[str, Any]]:
    """probe.details() (one dict per GPU, the fingerprint's fields) where the probe has one, else []."""
    result = _optional(probe, "details")
    return [d if isinstance(d, dict) else {} for d in result] if isinstance(result, list) else []
