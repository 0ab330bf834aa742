"""The machine fingerprint stored with every study: GPUs, server, host, tool. Reads the machine once.

fingerprint() reads it; the rest is pure. Two fingerprints describe the same machine and server when their
machine_key() matches: the GPUs (name, memory, driver), the engine and its version (for llama-server the
build string, commit included) and the CPU model. Host name, URL, RAM figures and the tool's version may
change (a new container, another port) without making old measurements incomparable.

Each GPU also carries what NVML says about the physical card (probe.details(): UUID, VBIOS, PCIe link now
and at most, power limits, ECC mode and error counts, driver and CUDA driver version; None where the card
does not say), the server its build commit where it says one (llama-server's --version), and `models` each
variant's identity: Ollama's digest (/api/tags), or for a GGUF file its sha256 when the file is small (up
to 256 MiB), else its size and modification time (hashing 20 GB per run is not cheap; "kind" says which).

Two ids:
    fingerprint_id(fp)  the machine_key(): comparable measurements. A study resumes on it, so a card swapped
                        for an identical model (same name, memory, driver) resumes the study: its speed is
                        the model's, and the new card's UUID is in the fingerprint of the trials it measures.
    fleet_id(fp)        machine_key() plus the GPU UUIDs (or, where no GPU says one, the server's URL): one
                        physical machine. A plan on shared storage keys each host's studies by it, so two
                        hosts with identical cards never share a study, and a swapped card qualifies anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
from collections.abc import Iterable
from typing import Any

import psutil

from tuner import __version__
from tuner.backend.base import ServerInfo
from tuner.errors import ConfigError
from tuner.probe import Probe, details_of
from tuner.redact import mask_url

SMALL_GGUF_BYTES = 256 * 2**20  # a GGUF file up to this size is hashed (sha256); a bigger one: size + mtime


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


def fingerprint(
    probe: Probe, server: ServerInfo, models: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The machine, the server and (with `models`, from model_identities()) the models, as stored."""
    details = details_of(probe)
    gpus = []
    for i, g in enumerate(probe.gpus()):
        entry: dict[str, Any] = {
            "index": g.index,
            "name": g.name,
            "memory_bytes": g.memory_bytes,
            "driver": g.driver,
        }
        if i < len(details):
            entry.update({k: v for k, v in details[i].items() if k not in entry})
        gpus.append(entry)
    cuda = next((str(d["cuda_driver_version"]) for d in details if d.get("cuda_driver_version")), None)
    return {
        "gpus": gpus,
        "cuda_driver_version": cuda,
        "vram_source": probe.source,
        "vram_note": getattr(probe, "reason", ""),
        "server": {
            "engine": server.engine,
            "version": server.version,
            "build_commit": build_commit(server.version),
            "host": mask_url(server.host),
        },
        "models": dict(models or {}),
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


def fleet_id(fp: dict[str, Any]) -> str:
    """One physical machine (see the module docstring): 8 hex digits of machine_key() plus the GPU UUIDs,
    or the server's URL where no GPU says a UUID."""
    uuids = sorted(str(g["uuid"]) for g in fp.get("gpus") or [] if isinstance(g, dict) and g.get("uuid"))
    where = uuids or [str((fp.get("server") or {}).get("host", ""))]
    text = json.dumps([machine_key(fp), where], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


_COMMIT = re.compile(r"commit\s+([0-9a-f]{7,40})", re.I)


def build_commit(version: str) -> str | None:
    """The commit in a build string ('0.5.0-dev (build 0, commit 0c1e570)' -> '0c1e570'); None where the
    server does not say one (Ollama's /api/version gives only the release)."""
    m = _COMMIT.search(version or "")
    return m.group(1) if m else None


def file_identity(path: str, small_bytes: int = SMALL_GGUF_BYTES) -> dict[str, Any]:
    """A model file's identity: its sha256 when it is small, else its size and modification time."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return {"kind": "unreadable", "error": exc.strerror or type(exc).__name__}
    if st.st_size <= small_bytes:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return {"kind": "sha256", "digest": "sha256:" + h.hexdigest(), "size_bytes": st.st_size}
    return {"kind": "size+mtime", "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_identities(backend: object, variants: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each variant's identity: the server's digest (Ollama: /api/tags, backend.model_digests()), else the
    GGUF file's (file_identity); {"kind": "unknown"} where neither is known."""
    variants = list(variants)
    digests: dict[str, str] = {}
    read = getattr(backend, "model_digests", None)
    if read is not None:
        try:
            digests = dict(read())
        except Exception:  # noqa: BLE001 - a fingerprint field, never a reason to stop
            digests = {}
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        digest = digests.get(v) or digests.get(v if ":" in v else f"{v}:latest")
        if digest:
            out[v] = {"kind": "ollama", "digest": "sha256:" + digest.removeprefix("sha256:")}
        elif os.path.isfile(v):
            out[v] = file_identity(v)
        else:
            out[v] = {"kind": "unknown"}
    return out


def detail_lines(fp: dict[str, Any]) -> list[str]:
    """The fingerprint's hardware and software details in short lines (a summary's fingerprint section)."""
    lines = []
    for g in fp.get("gpus") or []:
        if not isinstance(g, dict):
            continue
        pcie = g.get("pcie") or {}
        power = g.get("power_limit_w") or {}
        ecc = g.get("ecc") or {}
        link = (
            f"PCIe gen {_or_q(pcie.get('gen_current'))}/{_or_q(pcie.get('gen_max'))} "
            f"x{_or_q(pcie.get('width_current'))}/{_or_q(pcie.get('width_max'))}"
        )
        watts = f"power limit {_or_q(power.get('enforced'))} W (default {_or_q(power.get('default'))} W)"
        if ecc.get("mode_current") is None:
            ecc_text = "ECC not reported"
        elif ecc.get("mode_current"):
            ecc_text = (
                f"ECC on ({_or_q(ecc.get('volatile_corrected'))} corrected, "
                f"{_or_q(ecc.get('volatile_uncorrected'))} uncorrected since boot; "
                f"{_or_q(ecc.get('aggregate_uncorrected'))} uncorrected ever)"
            )
        else:
            ecc_text = "ECC off"
        lines.append(
            f"GPU {g.get('index', '?')} {g.get('name', '?')} {_or_q(g.get('uuid'))}, VBIOS {_or_q(g.get('vbios'))}, "
            f"{link}, {watts}, {ecc_text}"
        )
    server = fp.get("server") or {}
    driver = sorted(
        {str(g.get("driver")) for g in fp.get("gpus") or [] if isinstance(g, dict) and g.get("driver")}
    )
    lines.append(
        f"driver {'/'.join(driver) or '?'}, CUDA {_or_q(fp.get('cuda_driver_version'))}; "
        f"{server.get('engine', '?')} {server.get('version', '?')}"
        + (f" (commit {server['build_commit']})" if server.get("build_commit") else "")
    )
    for name, ident in (fp.get("models") or {}).items():
        what = ident.get("digest") or (
            f"{ident.get('size_bytes')} bytes, mtime {ident.get('mtime_ns')}"
            if ident.get("kind") == "size+mtime"
            else "?"
        )
        lines.append(f"model {name}: {str(what)[:19] if str(what).startswith('sha256:') else what}")
    return lines


def _or_q(value: object) -> str:
    return "?" if value is None else str(value)


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
