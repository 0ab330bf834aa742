"""What the simulated GPUs say about themselves for the fingerprint, as NVML would: a UUID, a VBIOS, the PCIe
link, power limits, ECC, the driver and its CUDA version. Fixed per card. Served in /sim/state as
gpus[i]["details"] and read by tuner.probe.SimProbe.details().

The UUIDs come from the simulated machine's name (SimServer(machine=...), python -m tuner.sim --machine) and
the GPU's index, not from the noise seed: a simulator restarted with another seed (a reboot) is the same
machine with the same cards, and another name is another machine with cards of the same model.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from tuner.hardware import GpuSpec

# Board power (W) by the simulated card's name; others: scaled from memory bandwidth (about a W per 4 GB/s).
_BOARD_POWER_W = {
    "NVIDIA GeForce RTX 4090": 450.0,
    "NVIDIA GeForce RTX 3090": 350.0,
    "NVIDIA GeForce RTX 4060 Ti": 165.0,
    "NVIDIA A100-SXM4-80GB": 400.0,
    "NVIDIA A100 80GB PCIe": 300.0,
    "NVIDIA H100 80GB HBM3": 700.0,
    "NVIDIA L4": 72.0,
}
CUDA_DRIVER_VERSION = "12.8"  # what nvmlSystemGetCudaDriverVersion answers on the simulated driver


def board_power_w(gpu: GpuSpec) -> float:
    return _BOARD_POWER_W.get(gpu.name, round(max(70.0, gpu.bandwidth_gbps / 4.0)))


def gpu_uuid(machine: str, index: int) -> str:
    """'GPU-' and a UUID from the machine's name and the index, as NVML writes them."""
    digest = hashlib.sha256(f"autotune-sim:{machine}:{index}".encode()).digest()[:16]
    return f"GPU-{uuid.UUID(bytes=digest)}"


def gpu_details(gpu: GpuSpec, index: int, machine: str, driver: str) -> dict[str, Any]:
    """One simulated GPU's fingerprint fields (see tuner.probe.NvmlProbe.details for their meaning)."""
    datacenter = gpu.memory_bytes >= 40 * 2**30 or gpu.name.startswith("NVIDIA A") or "H100" in gpu.name
    gen = 5 if gpu.compute_capability >= (9, 0) else 4
    power = board_power_w(gpu)
    unified = gpu.unified
    return {
        "uuid": gpu_uuid(machine, index),
        "vbios": f"95.02.{18 + index:02d}.00.{int(hashlib.sha256(machine.encode()).hexdigest()[:4], 16) % 100:02d}",
        "pcie": {
            "gen_current": None if unified else gen,
            "gen_max": None if unified else gen,
            "width_current": None if unified else 16,
            "width_max": None if unified else 16,
        },
        "power_limit_w": {"enforced": power, "default": power},
        "ecc": {
            "mode_current": datacenter,
            "mode_pending": datacenter,
            "volatile_corrected": 0 if datacenter else None,
            "volatile_uncorrected": 0 if datacenter else None,
            "aggregate_corrected": 0 if datacenter else None,
            "aggregate_uncorrected": 0 if datacenter else None,
        },
        "driver_version": driver,
        "cuda_driver_version": CUDA_DRIVER_VERSION,
    }
