"""GPU memory probing: NVML (the real thing), the simulator's GPUs, or nothing.

Every probe answers the same two questions: which GPUs are there, and how many bytes each one uses right
now; NVML and the simulator also tell what else runs on the GPUs (activity), their power and thermal state
(telemetry) and the cards' fingerprint fields (details). PeakSampler turns used bytes into a peak over a
time window.

    base.py     the records (GpuInfo, GpuProcess, Activity, Telemetry), the Probe Protocol, NullProbe, and
                activity_of / telemetry_of / details_of / physical_cores_of
    nvml.py     NvmlProbe: the only module that imports pynvml (from NVIDIA's nvidia-ml-py)
    sim.py      SimProbe: the simulator's GPUs through /sim/state
    rss.py      ProcessRssProbe: an engine process's resident memory (llama-server with no GPU)
    choose.py   choose_probe: which probe a host gets
    sampler.py  PeakSampler and its Peak
"""

from tuner.probe.base import (
    Activity,
    GpuInfo,
    GpuProcess,
    NullProbe,
    Probe,
    Telemetry,
    activity_of,
    details_of,
    physical_cores_of,
    telemetry_of,
)
from tuner.probe.choose import choose_probe
from tuner.probe.nvml import THROTTLE_REASONS, NvmlProbe, throttle_names
from tuner.probe.rss import ProcessRssProbe
from tuner.probe.sampler import Peak, PeakSampler
from tuner.probe.sim import SimProbe

__all__ = [
    "THROTTLE_REASONS",
    "Activity",
    "GpuInfo",
    "GpuProcess",
    "NullProbe",
    "NvmlProbe",
    "Peak",
    "PeakSampler",
    "Probe",
    "ProcessRssProbe",
    "SimProbe",
    "Telemetry",
    "activity_of",
    "choose_probe",
    "details_of",
    "physical_cores_of",
    "telemetry_of",
    "throttle_names",
]
