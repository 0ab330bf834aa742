"""Which probe a host gets: the simulator's GPUs, NVML on this machine, or none."""

from __future__ import annotations

from urllib.parse import urlparse

from tuner.errors import ProbeError
from tuner.probe.base import NullProbe, Probe
from tuner.probe.nvml import NvmlProbe
from tuner.probe.sim import SimProbe


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
