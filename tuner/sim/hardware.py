"""The simulated host (RAM, memory bandwidth, CPU, PCIe, disk), and the GPU cards it may hold.

The cards themselves are tuner.hardware (shared with `autotune plan`); this module adds what only the
simulator needs: the host around them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tuner.hardware import GpuSpec, parse_bytes
from tuner.units import GiB


@dataclass(frozen=True)
class HostSpec:
    ram_bytes: int = 64 * GiB
    bandwidth_gbps: float = 80.0  # e.g. dual-channel DDR5
    cpu_tflops: float = 1.5  # dense FP32 over all cores (AVX2/AVX-512 FMA)
    pcie_gbps: float = 25.0  # host to GPU copies (PCIe 4.0 x16, effective)
    disk_gbps: float = 2.5  # model file read (NVMe)
    page_cache_gbps: float = 12.0  # re-read of a file that is still in the page cache
    idle_used_bytes: int = 2 * GiB  # OS, desktop, the Ollama server itself
    physical_cores: int = 16  # Ollama's default num_thread (its detected performance cores); SMT doubles it


def make_host(
    ram: str | int | None = None,
    bandwidth_gbps: float | None = None,
    gpus: list[GpuSpec] | None = None,
    cores: int | None = None,
    **overrides: Any,
) -> HostSpec:
    """A host. A unified-memory card (GB10) shares its memory with the host, so RAM defaults to that pool."""
    host = HostSpec()
    if ram is None and gpus and any(g.unified for g in gpus):
        host = replace(host, ram_bytes=max(g.memory_bytes for g in gpus if g.unified))
    elif ram is not None:
        ram_bytes = parse_bytes(ram, "host RAM")
        if ram_bytes < GiB:
            raise ValueError(f"Invalid host RAM {ram!r}: at least 1GiB, e.g. '64GiB'.")
        host = replace(host, ram_bytes=ram_bytes)
    if bandwidth_gbps is not None:
        if not bandwidth_gbps > 0:
            raise ValueError(
                f"Invalid host bandwidth {bandwidth_gbps!r}: a positive number of GB/s, e.g. 80."
            )
        host = replace(host, bandwidth_gbps=float(bandwidth_gbps))
    if cores is not None:
        if int(cores) < 1:
            raise ValueError(f"Invalid host cores {cores!r}: a whole number of physical cores >= 1, e.g. 16.")
        host = replace(host, physical_cores=int(cores))
    if overrides:
        host = replace(host, **overrides)
    return host


# A power limit below the card's TDP slows what draws the most power first. On an RTX PRO 6000 (600 W)
# llama.cpp's prompt speed held at 500 W and fell to 0.77x at 300 W, while decode (memory-bound) held down to
# about 350 W and fell to 0.93x at 300 W (../shared/data/throughput-public.csv rows 32-33): below a knee each
# falls with the square root of the limit. Fitted on those two rows only.
POWER_COMPUTE_KNEE = 0.83  # fraction of TDP under which prompt (compute-bound) throughput drops
POWER_BANDWIDTH_KNEE = 0.57  # fraction of TDP under which decode (bandwidth-bound) throughput drops


def power_limited(card: GpuSpec, watts: float, tdp_w: float) -> GpuSpec:
    """`card` run at a power limit of `watts` (its TDP is `tdp_w`): lower TFLOPS and, lower still, bandwidth."""
    if not watts > 0 or not tdp_w > 0:
        raise ValueError(f"Invalid power limit {watts!r} W for a {tdp_w!r} W card: both must be positive.")
    x = min(1.0, watts / tdp_w)
    compute = min(1.0, x / POWER_COMPUTE_KNEE) ** 0.5
    bandwidth = min(1.0, x / POWER_BANDWIDTH_KNEE) ** 0.5
    return replace(
        card,
        name=f"{card.name} @{watts:g} W",
        tflops=card.tflops * compute,
        bandwidth_gbps=card.bandwidth_gbps * bandwidth,
    )
