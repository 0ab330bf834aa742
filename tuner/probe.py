"""GPU memory probing: NVML (the real thing), the simulator's GPUs, or nothing.

The only module that imports pynvml (from NVIDIA's nvidia-ml-py). Every probe answers the same two
questions: which GPUs are there, and how many bytes each one uses right now. PeakSampler turns that into
a peak over a time window: a background thread samples at `interval_s` (20 Hz by default) and the
caller may add samples at moments it knows matter (`mark()`, e.g. right after a load), so a window
shorter than one interval (a simulated trial takes milliseconds) still gets measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx

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


# NVML clock event ("throttle") reasons, by bit (nvmlClocksEventReason*; the older name is ...ThrottleReason*).
THROTTLE_REASONS = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}


def throttle_names(mask: int) -> list[str]:
    """The reasons set in an NVML clock event mask, by name (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([hex(rest)] if rest else [])


def activity_of(probe: object) -> Activity:
    """probe.activity() where the probe has one (NVML, the simulator), else nothing known."""
    read = getattr(probe, "activity", None)
    if read is None:
        return Activity()
    try:
        result = read()
    except (ProbeError, OSError):
        return Activity()
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
    throttle: tuple[str, ...] = ()  # clock event reasons in effect (THROTTLE_REASONS names)
    violation_s: dict[str, float] = field(default_factory=dict)


def telemetry_of(probe: object) -> list[Telemetry]:
    """probe.telemetry() (one Telemetry per GPU) where the probe has one (NVML, the simulator), else []."""
    read = getattr(probe, "telemetry", None)
    if read is None:
        return []
    try:
        result = read()
    except (ProbeError, OSError):
        return []
    return [t for t in result if isinstance(t, Telemetry)] if isinstance(result, list) else []


def physical_cores_of(probe: object) -> int:
    """The physical CPU cores of the host the engine runs on: the simulator's host where the probe reads
    one, else this machine's (Ollama's default num_thread is its performance cores)."""
    import os  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    read = getattr(probe, "physical_cores", None)
    if read is not None:
        try:
            cores = read()
        except (ProbeError, OSError):
            cores = None
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


class NvmlProbe:
    """Device memory through NVML (`import pynvml`, provided by nvidia-ml-py)."""

    source = "nvml"

    def __init__(self, device_indices: list[int] | None = None) -> None:
        try:
            import pynvml  # noqa: PLC0415 - optional at import time: no driver on most CI machines
        except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
            raise ProbeError("nvidia-ml-py is not installed; run 'pip install nvidia-ml-py'.") from exc
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise ProbeError(f"NVML is unavailable ({type(exc).__name__}: {exc})") from exc
        count = pynvml.nvmlDeviceGetCount()
        indices = device_indices if device_indices is not None else list(range(count))
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self._indices = indices
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
        except pynvml.NVMLError:
            driver = ""
        self._driver = driver.decode() if isinstance(driver, bytes) else str(driver)

    def _memory(self, handle: Any) -> Any:
        try:
            return self._nvml.nvmlDeviceGetMemoryInfo(handle, version=self._nvml.nvmlMemory_v2)
        except (self._nvml.NVMLError, TypeError, AttributeError):
            return self._nvml.nvmlDeviceGetMemoryInfo(handle)

    def gpus(self) -> list[GpuInfo]:
        out = []
        for index, handle in zip(self._indices, self._handles):
            name = self._nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            try:
                cc: tuple[int, int] | None = tuple(self._nvml.nvmlDeviceGetCudaComputeCapability(handle))  # type: ignore[assignment]
            except (self._nvml.NVMLError, AttributeError):
                cc = None
            out.append(GpuInfo(index, name, int(self._memory(handle).total), self._driver, cc))
        return out

    def details(self) -> list[dict[str, Any]]:
        """Each GPU's fingerprint fields (same order as gpus()), each query on its own: a field the card or
        driver does not support (NotSupported, an older driver without the call) is None.

            uuid, vbios                     the physical card and its firmware
            pcie                            gen_current, gen_max, width_current, width_max (the link now
                                            and the most the card and slot allow; an idle card may train down)
            power_limit_w                   enforced, default
            ecc                             mode_current, mode_pending (bool), and the error counts
                                            volatile_/aggregate_ corrected/uncorrected
            driver_version                  nvmlSystemGetDriverVersion
            cuda_driver_version             nvmlSystemGetCudaDriverVersion as "12.4"
        """
        nvml = self._nvml
        ask = _nvml_asker(nvml)
        cuda = ask("nvmlSystemGetCudaDriverVersion_v2")
        if cuda is None:
            cuda = ask("nvmlSystemGetCudaDriverVersion")
        cuda_text = f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if isinstance(cuda, int) else None
        out = []
        for handle in self._handles:
            ecc_mode = ask("nvmlDeviceGetEccMode", handle)
            ecc: dict[str, Any] = {
                "mode_current": bool(ecc_mode[0]) if isinstance(ecc_mode, (list, tuple)) else None,
                "mode_pending": bool(ecc_mode[1]) if isinstance(ecc_mode, (list, tuple)) else None,
            }
            for counter, counter_type in (("volatile", 0), ("aggregate", 1)):  # NVML_VOLATILE/AGGREGATE_ECC
                for kind, error_type in (("corrected", 0), ("uncorrected", 1)):  # NVML_MEMORY_ERROR_TYPE_*
                    count = ask("nvmlDeviceGetTotalEccErrors", handle, error_type, counter_type)
                    ecc[f"{counter}_{kind}"] = int(count) if isinstance(count, int) else None
            enforced = ask("nvmlDeviceGetEnforcedPowerLimit", handle)  # mW
            default = ask("nvmlDeviceGetPowerManagementDefaultLimit", handle)  # mW
            out.append(
                {
                    "uuid": _text(ask("nvmlDeviceGetUUID", handle)),
                    "vbios": _text(ask("nvmlDeviceGetVbiosVersion", handle)),
                    "pcie": {
                        "gen_current": _int(ask("nvmlDeviceGetCurrPcieLinkGeneration", handle)),
                        "gen_max": _int(ask("nvmlDeviceGetMaxPcieLinkGeneration", handle)),
                        "width_current": _int(ask("nvmlDeviceGetCurrPcieLinkWidth", handle)),
                        "width_max": _int(ask("nvmlDeviceGetMaxPcieLinkWidth", handle)),
                    },
                    "power_limit_w": {
                        "enforced": enforced / 1000 if isinstance(enforced, int) else None,
                        "default": default / 1000 if isinstance(default, int) else None,
                    },
                    "ecc": ecc,
                    "driver_version": self._driver or None,
                    "cuda_driver_version": cuda_text,
                }
            )
        return out

    def used_bytes(self) -> list[int]:
        return [int(self._memory(h).used) for h in self._handles]

    def activity(self) -> Activity:
        """Every process with memory on the GPUs and the clock throttle reasons, each query on its own
        (a NotSupported on one loses only that one)."""
        nvml = self._nvml
        errors = (nvml.NVMLError, getattr(nvml, "NVMLLibraryMismatchError", nvml.NVMLError), AttributeError)
        processes: list[GpuProcess] = []
        throttle: list[str] = []
        for gpu, handle in enumerate(self._handles):
            seen: set[int] = set()
            for getter in (
                "nvmlDeviceGetComputeRunningProcesses",
                "nvmlDeviceGetComputeRunningProcesses_v2",
                "nvmlDeviceGetGraphicsRunningProcesses",
            ):
                if getter.endswith("_v2") and seen:
                    continue  # the versioned call is only the fallback for an older driver
                try:
                    listed = getattr(nvml, getter)(handle)
                except errors:
                    continue
                for p in listed:
                    pid = int(p.pid)
                    if pid in seen:
                        continue
                    seen.add(pid)
                    used = getattr(p, "usedGpuMemory", None)
                    processes.append(
                        GpuProcess(gpu, pid, self._process_name(pid), int(used) if used else None)
                    )
            for getter in (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
            ):
                try:
                    mask = int(getattr(nvml, getter)(handle))
                except errors:
                    continue
                throttle += [n for n in throttle_names(mask) if n not in throttle]
                break
        return Activity(processes, throttle)

    def telemetry(self) -> list[Telemetry]:
        """Clocks, temperature, power, the energy counter, the violation counters and the clock event
        reasons of every GPU, at time.monotonic(). Each query on its own: a NotSupported (or an older driver
        without the call) loses only that field (None, or absent from violation_s)."""
        nvml = self._nvml
        errors = (nvml.NVMLError, getattr(nvml, "NVMLLibraryMismatchError", nvml.NVMLError), AttributeError)

        def ask(getter: str, *args: Any) -> Any:
            try:
                return getattr(nvml, getter)(*args)
            except errors:
                return None

        def scaled(value: Any, factor: float) -> float | None:
            return float(value) * factor if isinstance(value, (int, float)) else None

        now = time.monotonic()
        out = []
        for gpu, handle in enumerate(self._handles):
            sm = ask("nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_SM", 1))
            mem = ask("nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_MEM", 2))
            temp = ask("nvmlDeviceGetTemperature", handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
            power = ask("nvmlDeviceGetPowerUsage", handle)  # mW
            limit = ask("nvmlDeviceGetEnforcedPowerLimit", handle)  # mW
            energy = ask("nvmlDeviceGetTotalEnergyConsumption", handle)  # mJ since the driver loaded
            violation: dict[str, float] = {}
            for cause, policy in (
                ("power", "NVML_PERF_POLICY_POWER"),
                ("thermal", "NVML_PERF_POLICY_THERMAL"),
            ):
                status = ask(
                    "nvmlDeviceGetViolationStatus",
                    handle,
                    getattr(nvml, policy, 0 if cause == "power" else 1),
                )
                ns = getattr(status, "violationTime", None)
                if isinstance(ns, (int, float)):
                    violation[cause] = float(ns) / 1e9
            mask = None
            for getter in (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
            ):
                mask = ask(getter, handle)
                if mask is not None:
                    break
            out.append(
                Telemetry(
                    gpu=gpu,
                    time_s=now,
                    sm_clock_mhz=scaled(sm, 1.0),
                    mem_clock_mhz=scaled(mem, 1.0),
                    temperature_c=scaled(temp, 1.0),
                    power_w=scaled(power, 1e-3),
                    power_limit_w=scaled(limit, 1e-3),
                    energy_j=scaled(energy, 1e-3),
                    throttle=tuple(throttle_names(int(mask))) if isinstance(mask, int) else (),
                    violation_s=violation,
                )
            )
        return out

    def _process_name(self, pid: int) -> str:
        import psutil  # noqa: PLC0415

        try:
            return psutil.Process(pid).name()
        except psutil.Error:
            pass
        try:
            name = self._nvml.nvmlSystemGetProcessName(pid)
        except (self._nvml.NVMLError, AttributeError):
            return "?"
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


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


def _nvml_asker(nvml: Any) -> Callable[..., Any]:
    """ask(getter, *args): the NVML call's answer, or None when it fails (NotSupported, NoPermission, a
    driver without the call): one missing field never loses the others."""
    errors = (nvml.NVMLError, getattr(nvml, "NVMLLibraryMismatchError", nvml.NVMLError), AttributeError)

    def ask(getter: str, *args: Any) -> Any:
        try:
            return getattr(nvml, getter)(*args)
        except errors:
            return None

    return ask


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value) if value is not None else None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def details_of(probe: object) -> list[dict[str, Any]]:
    """probe.details() (one dict per GPU, the fingerprint's fields) where the probe has one, else []."""
    read = getattr(probe, "details", None)
    if read is None:
        return []
    try:
        result = read()
    except (ProbeError, OSError):
        return []
    return [d if isinstance(d, dict) else {} for d in result] if isinstance(result, list) else []


def _is_loopback(host: str) -> bool:
    hostname = urlparse(host if "://" in host else f"http://{host}").hostname or ""
    return hostname in {"localhost", "127.0.0.1", "::1", "0.0.0.0"} or hostname.startswith("127.")


def choose_probe(host: str | None) -> Probe:
    """The simulator's GPUs if `host` is the simulator; NVML if the server is on this machine; else none.

    `host=None` means a local engine process (llama-server): NVML if there is a GPU, else none.
    """
    if host is not None:
        try:
            return SimProbe(host, timeout_s=2.0)
        except ProbeError:
            pass  # not the simulator
    if host is not None and not _is_loopback(host):
        return NullProbe(f"the server at '{host}' is on another host, so NVML here cannot see its GPUs")
    try:
        return NvmlProbe()
    except ProbeError as exc:
        return NullProbe(str(exc))


@dataclass(frozen=True)
class Peak:
    baseline_bytes: list[int]
    peak_bytes: list[int]  # max used per GPU over the window, minus the baseline (never below 0)
    samples: int

    @property
    def total_bytes(self) -> int:
        return sum(self.peak_bytes)


class PeakSampler:
    """Peak memory per GPU over a window, sampled in a background thread plus explicit marks."""

    def __init__(
        self,
        probe: Probe,
        interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline: list[int] = []
        self._max: list[int] = []
        self._samples = 0
        self._error: Exception | None = None

    def start(self) -> None:
        self._baseline = self._probe.used_bytes()
        self._max = list(self._baseline)
        self._samples = 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vram-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.mark()
            except Exception as exc:  # noqa: BLE001 - keep the last error, stop sampling
                self._error = exc
                return

    def mark(self) -> None:
        used = self._probe.used_bytes()
        with self._lock:
            self._max = [max(a, b) for a, b in zip(self._max, used)] if self._max else list(used)
            self._samples += 1

    def stop(self) -> Peak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            peak = [max(0, m - b) for m, b in zip(self._max, self._baseline)]
            return Peak(list(self._baseline), peak, self._samples)


class ProcessRssProbe:
    """Resident memory of one engine process (llama-server with no GPU), reported as one "device".

    `pid` is called at every sample, so it follows the server across restarts (one per trial). On Linux
    it reads the high-water mark (VmHWM), so no spike between samples is missed; elsewhere current RSS.
    """

    source = "rss"

    def __init__(self, pid: Callable[[], int | None]) -> None:
        self._pid = pid

    def gpus(self) -> list[GpuInfo]:
        import psutil  # noqa: PLC0415

        return [GpuInfo(0, "host memory (engine process RSS)", int(psutil.virtual_memory().total), "")]

    def used_bytes(self) -> list[int]:
        import psutil  # noqa: PLC0415

        pid = self._pid()
        if pid is None:
            return [0]
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return [int(line.split()[1]) * 1024]
        except OSError:
            pass
        try:
            return [int(psutil.Process(pid).memory_info().rss)]
        except psutil.Error:
            return [0]

    def close(self) -> None:
        pass
