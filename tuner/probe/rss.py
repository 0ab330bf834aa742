"""An engine process's resident memory as the one "device" (llama-server with no GPU)."""

from __future__ import annotations

from collections.abc import Callable

from tuner.probe.base import GpuInfo


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
