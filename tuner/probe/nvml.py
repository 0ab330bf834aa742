"""GPU memory, activity, telemetry and fingerprint details through NVML (`import pynvml`, from NVIDIA's
nvidia-ml-py): the only module that imports pynvml."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tuner.errors import ProbeError
from tuner.probe.base import Activity, GpuInfo, GpuProcess, Telemetry

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
        ask = _nvml_asker(self._nvml)
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
                for p in ask(getter, handle) or ():
                    pid = int(p.pid)
                    if pid in seen:
                        continue
                    seen.add(pid)
                    used = getattr(p, "usedGpuMemory", None)
                    processes.append(
                        GpuProcess(gpu, pid, self._process_name(pid), int(used) if used else None)
                    )
            throttle += [n for n in _clock_event_reasons(ask, handle) if n not in throttle]
        return Activity(processes, throttle)

    def telemetry(self) -> list[Telemetry]:
        """Clocks, temperature, power, the energy counter, the violation counters and the clock event
        reasons of every GPU, at time.monotonic(). Each query on its own: a NotSupported (or an older driver
        without the call) loses only that field (None, or absent from violation_s)."""
        nvml = self._nvml
        ask = _nvml_asker(nvml)

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
                    throttle=tuple(_clock_event_reasons(ask, handle)),
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


def _clock_event_reasons(ask: Callable[..., Any], handle: Any) -> list[str]:
    """The clock event ("throttle") reasons in effect on one GPU, by name; the older call's name where the
    driver lacks the newer; [] where neither answers."""
    for getter in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        mask = ask(getter, handle)
        if isinstance(mask, int):
            return throttle_names(mask)
    return []


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value) if value is not None else None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
