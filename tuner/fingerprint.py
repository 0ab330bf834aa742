"""The machine fingerprint stored with every study: GPUs, server, host, tool. Reads the machine once."""

from __future__ import annotations

import platform
import sys
from typing import Any

import psutil

from tuner import __version__
from tuner.backend.base import ServerInfo
from tuner.probe import Probe


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (else what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(probe: Probe, server: ServerInfo) -> dict[str, Any]:
    return {
        "gpus": [
            {"index": g.index, "name": g.name, "memory_bytes": g.memory_bytes, "driver": g.driver}
            for g in probe.gpus()
        ],
        "vram_source": probe.source,
        "vram_note": getattr(probe, "reason", ""),
        "server": {"engine": server.engine, "version": server.version, "host": server.host},
        "host": {
            "name": platform.node(),
            "cpu": cpu_name(),
            "cpu_count": psutil.cpu_count(logical=True),
            "ram_bytes": psutil.virtual_memory().total,
            "os": platform.platform(),
        },
        "tool": {"name": "autotune", "version": __version__, "python": sys.version.split()[0]},
    }
