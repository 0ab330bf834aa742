"""What NVML says on a real GPU, raw: every fingerprint field issue 14 stores, and the power, thermal, clock,
energy and violation counters over an idle / compute-bound / memory-bound / cool-down run driven by PyTorch.

Run on the GPU machine (one call; PyTorch and nvidia-ml-py are in its image):
    python3 scripts/gpu/nvml_capture.py --out $OUT
Writes fingerprint.json (each field, or the NVML error it raised), telemetry.csv (4 samples a second) and
summary.md (per phase: power, temperature, clocks, energy counter against integrated power, violation time).
It changes no setting of the GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
import time
from pathlib import Path
from typing import Any

import pynvml as N

VIOLATION_POLICIES = {
    "power": "NVML_PERF_POLICY_POWER",
    "thermal": "NVML_PERF_POLICY_THERMAL",
    "sync_boost": "NVML_PERF_POLICY_SYNC_BOOST",
    "board_limit": "NVML_PERF_POLICY_BOARD_LIMIT",
    "low_utilization": "NVML_PERF_POLICY_LOW_UTILIZATION",
    "reliability": "NVML_PERF_POLICY_RELIABILITY",
    "total_app_clocks": "NVML_PERF_POLICY_TOTAL_APP_CLOCKS",
    "total_base_clocks": "NVML_PERF_POLICY_TOTAL_BASE_CLOCKS",
}


def field(name: str, *args: Any) -> Any:
    try:
        value = getattr(N, name)(*args)
    except N.NVMLError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - record what failed, go on
        return {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if hasattr(value, "_fields_"):
        return {name: _plain(getattr(value, name)) for name, _ in value._fields_}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain(v: Any) -> Any:
    return (
        v.decode(errors="replace")
        if isinstance(v, bytes)
        else v
        if isinstance(v, (int, float, str))
        else str(v)
    )


def fingerprint(h: Any) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "driver": field("nvmlSystemGetDriverVersion"),
        "cuda_driver_version": field("nvmlSystemGetCudaDriverVersion"),
        "cuda_driver_version_v2": field("nvmlSystemGetCudaDriverVersion_v2"),
        "nvml_version": field("nvmlSystemGetNVMLVersion"),
        "name": field("nvmlDeviceGetName", h),
        "uuid": field("nvmlDeviceGetUUID", h),
        "serial": "(read, not stored)"
        if not isinstance(field("nvmlDeviceGetSerial", h), dict)
        else "unsupported",
        "board_part_number": field("nvmlDeviceGetBoardPartNumber", h),
        "vbios": field("nvmlDeviceGetVbiosVersion", h),
        "inforom_image": field("nvmlDeviceGetInforomImageVersion", h),
        "compute_capability": field("nvmlDeviceGetCudaComputeCapability", h),
        "pcie_gen_current": field("nvmlDeviceGetCurrPcieLinkGeneration", h),
        "pcie_gen_max": field("nvmlDeviceGetMaxPcieLinkGeneration", h),
        "pcie_gen_gpu_max": field("nvmlDeviceGetGpuMaxPcieLinkGeneration", h),
        "pcie_width_current": field("nvmlDeviceGetCurrPcieLinkWidth", h),
        "pcie_width_max": field("nvmlDeviceGetMaxPcieLinkWidth", h),
        "power_limit_enforced_mw": field("nvmlDeviceGetEnforcedPowerLimit", h),
        "power_limit_mw": field("nvmlDeviceGetPowerManagementLimit", h),
        "power_limit_default_mw": field("nvmlDeviceGetPowerManagementDefaultLimit", h),
        "power_limit_constraints_mw": field("nvmlDeviceGetPowerManagementLimitConstraints", h),
        "ecc_mode_current_pending": field("nvmlDeviceGetEccMode", h),
        "persistence_mode": field("nvmlDeviceGetPersistenceMode", h),
        "compute_mode": field("nvmlDeviceGetComputeMode", h),
        "memory": field("nvmlDeviceGetMemoryInfo", h),
        "max_clock_sm_mhz": field("nvmlDeviceGetMaxClockInfo", h, N.NVML_CLOCK_SM),
        "max_clock_mem_mhz": field("nvmlDeviceGetMaxClockInfo", h, N.NVML_CLOCK_MEM),
        "app_clock_sm_mhz": field("nvmlDeviceGetApplicationsClock", h, N.NVML_CLOCK_SM),
        "default_app_clock_sm_mhz": field("nvmlDeviceGetDefaultApplicationsClock", h, N.NVML_CLOCK_SM),
        "temp_slowdown_c": field(
            "nvmlDeviceGetTemperatureThreshold", h, N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        ),
        "temp_shutdown_c": field(
            "nvmlDeviceGetTemperatureThreshold", h, N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
        ),
        "temp_gpu_max_c": field("nvmlDeviceGetTemperatureThreshold", h, N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX),
        "temp_mem_max_c": field("nvmlDeviceGetTemperatureThreshold", h, N.NVML_TEMPERATURE_THRESHOLD_MEM_MAX),
        "supported_clocks_event_reasons": field("nvmlDeviceGetSupportedClocksEventReasons", h),
        "mig_mode": field("nvmlDeviceGetMigMode", h),
    }
    ecc: dict[str, Any] = {}
    for etype, ename in (
        (N.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
        (N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected"),
    ):
        for ctype, cname in ((N.NVML_VOLATILE_ECC, "volatile"), (N.NVML_AGGREGATE_ECC, "aggregate")):
            ecc[f"{cname}_{ename}"] = field("nvmlDeviceGetTotalEccErrors", h, etype, ctype)
    fp["ecc_errors"] = ecc
    fp["retired_pages_pending"] = field("nvmlDeviceGetRetiredPagesPendingStatus", h)
    fp["remapped_rows"] = field("nvmlDeviceGetRemappedRows", h)
    return fp


def sample(h: Any, t0: float, phase: str, work: dict[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "t_s": round(time.monotonic() - t0, 3),
        "phase": phase,
        "work_units": work["units"],
    }
    for key, fn, args in (
        ("sm_clock_mhz", N.nvmlDeviceGetClockInfo, (h, N.NVML_CLOCK_SM)),
        ("mem_clock_mhz", N.nvmlDeviceGetClockInfo, (h, N.NVML_CLOCK_MEM)),
        ("temperature_c", N.nvmlDeviceGetTemperature, (h, N.NVML_TEMPERATURE_GPU)),
        ("power_mw", N.nvmlDeviceGetPowerUsage, (h,)),
        ("energy_mj", N.nvmlDeviceGetTotalEnergyConsumption, (h,)),
        (
            "reasons_mask",
            getattr(N, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or N.nvmlDeviceGetCurrentClocksThrottleReasons,
            (h,),
        ),
        ("memory_used_bytes", lambda x: N.nvmlDeviceGetMemoryInfo(x).used, (h,)),
        ("util_gpu_pct", lambda x: N.nvmlDeviceGetUtilizationRates(x).gpu, (h,)),
        ("util_mem_pct", lambda x: N.nvmlDeviceGetUtilizationRates(x).memory, (h,)),
        ("pstate", N.nvmlDeviceGetPerformanceState, (h,)),
    ):
        try:
            row[key] = fn(*args)
        except (N.NVMLError, AttributeError) as exc:
            row[key] = f"ERR:{type(exc).__name__}"
    for name, const in VIOLATION_POLICIES.items():
        try:
            v = N.nvmlDeviceGetViolationStatus(h, getattr(N, const))
            row[f"viol_{name}_ns"] = int(v.violationTime)
        except (N.NVMLError, AttributeError) as exc:
            row[f"viol_{name}_ns"] = f"ERR:{type(exc).__name__}"
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--idle-s", type=float, default=15)
    ap.add_argument("--compute-s", type=float, default=120)
    ap.add_argument("--memory-s", type=float, default=40)
    ap.add_argument("--cool-s", type=float, default=20)
    ap.add_argument("--hz", type=float, default=4)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    N.nvmlInit()
    h = N.nvmlDeviceGetHandleByIndex(0)
    fp = fingerprint(h)
    (out / "fingerprint.json").write_text(json.dumps(fp, indent=1, default=str))
    print(json.dumps(fp, indent=1, default=str))

    import torch

    phase = {"name": "idle"}
    work = {"units": 0.0}
    rows: list[dict[str, Any]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler() -> None:
        while not stop.is_set():
            rows.append(sample(h, t0, phase["name"], work))
            stop.wait(1 / args.hz)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    time.sleep(args.idle_s)

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    phase["name"] = "compute"  # bf16 GEMMs: compute-bound, the card's power limit
    end = time.monotonic() + args.compute_s
    while time.monotonic() < end:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        work["units"] += 20 * 2 * 8192**3 / 1e12  # TFLOP done
    del a, b
    x = torch.empty(2 * 1024**3, device="cuda", dtype=torch.uint8)  # 2 GiB
    y = torch.empty_like(x)
    phase["name"] = "memory"  # device copies: memory-bound, like decoding
    end = time.monotonic() + args.memory_s
    while time.monotonic() < end:
        for _ in range(10):
            y.copy_(x)
        torch.cuda.synchronize()
        work["units"] += 10 * 2 * 2.0  # GiB moved (read + write)
    del x, y
    torch.cuda.empty_cache()
    phase["name"] = "cool"
    time.sleep(args.cool_s)
    stop.set()
    th.join()

    keys = list(rows[0].keys())
    with open(out / "telemetry.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| phase | s | power W mean/max | temp C start/end | SM MHz median/min | mem MHz | energy counter J | integrated power J | power viol s | thermal viol s | reasons seen | work/s |",
        "|" + "---|" * 12,
    ]
    for name in ("idle", "compute", "memory", "cool"):
        ph = [r for r in rows if r["phase"] == name and isinstance(r["power_mw"], int)]
        if len(ph) < 2:
            continue
        dur = ph[-1]["t_s"] - ph[0]["t_s"]
        pw = [r["power_mw"] / 1000 for r in ph]
        integ = sum(
            (ph[i + 1]["t_s"] - ph[i]["t_s"]) * (ph[i]["power_mw"] + ph[i + 1]["power_mw"]) / 2000
            for i in range(len(ph) - 1)
        )
        en = (
            (ph[-1]["energy_mj"] - ph[0]["energy_mj"]) / 1000
            if isinstance(ph[0]["energy_mj"], int)
            else "n/a"
        )
        sm = sorted(r["sm_clock_mhz"] for r in ph)
        vio = {}
        for k in ("power", "thermal"):
            a0, a1 = ph[0][f"viol_{k}_ns"], ph[-1][f"viol_{k}_ns"]
            vio[k] = f"{(a1 - a0) / 1e9:.2f}" if isinstance(a0, int) and isinstance(a1, int) else str(a0)
        reasons: set[int] = set()
        for r in ph:
            if isinstance(r["reasons_mask"], int):
                reasons.add(r["reasons_mask"])
        rate = (ph[-1]["work_units"] - ph[0]["work_units"]) / dur if dur else 0
        lines.append(
            f"| {name} | {dur:.0f} | {sum(pw) / len(pw):.0f}/{max(pw):.0f} | {ph[0]['temperature_c']}/{ph[-1]['temperature_c']} | "
            f"{sm[len(sm) // 2]}/{sm[0]} | {ph[len(ph) // 2]['mem_clock_mhz']} | {en if isinstance(en, str) else f'{en:.0f}'} | {integ:.0f} | "
            f"{vio['power']} | {vio['thermal']} | {', '.join(hex(m) for m in sorted(reasons))} | {rate:.1f} |"
        )
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
