"""The machine fingerprint stored with every study: GPUs, server, host, tool. Reads the machine once.

fingerprint() reads it; the rest is pure. Two fingerprints describe the same machine and server when their
machine_key() matches: the GPUs (name, memory, driver), the engine and its version (for llama-server the
build string, commit included) and the CPU model. Host name, URL, RAM figures and the tool's version may
change (a new container, another port) without making old measurements incomparable.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from typing import Any

import psutil

from tuner import __version__
from tuner.backend.base import ServerInfo
from tuner.errors import ConfigError
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


def machine_key(fp: dict[str, Any]) -> dict[str, Any]:
    """What must match for two measurements to be comparable (see the module docstring)."""
    gpus = [g for g in fp.get("gpus") or [] if isinstance(g, dict)]
    server = fp.get("server") or {}
    host = fp.get("host") or {}
    return {
        "gpus": [[str(g.get("name", "")), int(g.get("memory_bytes") or 0)] for g in gpus],
        "driver": sorted({str(g.get("driver", "")) for g in gpus}),
        "engine": str(server.get("engine", "")),
        "version": str(server.get("version", "")),
        "cpu": str(host.get("cpu", "")),
    }


def fingerprint_id(fp: dict[str, Any]) -> str:
    """A short stable name for a machine and server: 8 hex digits of the hash of machine_key()."""
    text = json.dumps(machine_key(fp), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def describe(fp: dict[str, Any]) -> str:
    """'1x NVIDIA GeForce RTX 4090 (24 GiB, driver 550.54), ollama 0.12.10' in one line."""
    key = machine_key(fp)
    names: dict[str, int] = {}
    for name, memory in key["gpus"]:
        label = f"{name} {memory / 2**30:.0f} GiB"
        names[label] = names.get(label, 0) + 1
    gpus = " + ".join(f"{n}x {label}" for label, n in names.items()) or "no GPU"
    driver = f", driver {'/'.join(d for d in key['driver'] if d)}" if any(key["driver"]) else ""
    return f"{gpus}{driver}, {key['engine'] or '?'} {key['version'] or '?'}"


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints' machine keys, in words ('GPUs', 'driver', ...)."""
    a, b = machine_key(stored), machine_key(current)
    words = {
        "gpus": "GPUs",
        "driver": "driver",
        "engine": "engine",
        "version": "server version",
        "cpu": "CPU",
    }
    return [words[k] for k in words if a[k] != b[k]]


def check_machine(known: list[dict[str, Any]], current: dict[str, Any], study_name: str, allow: bool) -> None:
    """A study resumes only on a machine and server that already measured it (`known`, the first being the
    one it started on), unless the user allows a mix: else one line saying what differs and what to do."""
    if allow or any(not differences(fp, current) for fp in known if fp is not None):
        return
    first = known[0] if known else {}
    what = ", ".join(differences(first, current))
    raise ConfigError(
        f"Study '{study_name}' was measured on {describe(first)}, not on this {describe(current)} "
        f"({what} differ); use a new --study name, or pass --allow-other-machine to mix them."
    )
