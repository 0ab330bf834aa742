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
from tuner.sim.power import card_power

CUDA_DRIVER_VERSION = "12.8"  # what nvmlSystemGetCudaDriverVersion answers on the simulated driver


def gpu_uuid(machine: str, index: int) -> str:
    """'GPU-' and a UUID from the machine's name and the index, as NVML writes them."""
    digest = hashlib.sha256(f"autotune-sim:{machine}:{index}".encode()).digest()[:16]
    return f"GPU-{uuid.UUID(bytes=digest)}"


def gpu_details(
    gpu: GpuSpec, index: int, machine: str, driver: str, enforced_w: float | None = None
) -> dict[str, Any]:
    """One simulated GPU's fingerprint fields (see tuner.probe.NvmlProbe.details for their meaning): the
    default power limit is the power model's board power (tuner.sim.power), `enforced_w` the limit it
    enforces now (POST /sim/power can lower it)."""
    datacenter = gpu.memory_bytes >= 40 * 2**30 or gpu.name.startswith("NVIDIA A") or "H100" in gpu.name
    gen = 5 if gpu.compute_capability >= (9, 0) else 4
    board_w = card_power(gpu).tdp_w
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
        "power_limit_w": {"enforced": board_w if enforced_w is None else enforced_w, "default": board_w},
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
