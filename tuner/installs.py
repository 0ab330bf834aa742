"""The engines built into autotune's cache, and how to find one. No building here (tuner.engines builds).

    <cache>/llama.cpp/b10488-cpu/bin/{llama-server,llama-bench,llama-quantize}
    <cache>/ollama/0.12.10-cpu/bin/ollama            (Era C also: lib/ollama/llama-server ...)

`<cache>` is $AUTOTUNE_CACHE, else $XDG_CACHE_HOME/autotune, else ~/.cache/autotune. A marker file
(BUILD-OK.json), written last, says an install is complete; without it a folder does not count.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.releases import parse_version

MARKER = "BUILD-OK.json"
LLAMA_CPP_BUILD = 10488  # llama.cpp b10488: what Ollama 0.32.15 pins (its LLAMA_CPP_VERSION file)
ERA_RELEASES = {"A": "0.12.10", "B": "0.24.0", "C": "0.32.15"}  # the release built for each era


def cache_root() -> Path:
    if os.environ.get("AUTOTUNE_CACHE"):
        return Path(os.environ["AUTOTUNE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "autotune"


def install_dir(product: str, version: str, variant: str) -> Path:
    """`product` is 'llama.cpp' or 'ollama'; `version` 'b10488' or '0.12.10'; `variant` 'cpu' or 'cuda'."""
    return cache_root() / product / f"{version}-{variant}"


@dataclass(frozen=True)
class Install:
    """One finished build in the cache."""

    root: Path
    product: str
    version: str
    variant: str
    tools: tuple[str, ...]
    build_s: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def binary(self, tool: str) -> Path:
        return self.bin_dir / tool


def read_install(root: Path) -> Install | None:
    """The install at `root` if its marker says it is complete and its binaries are still there."""
    try:
        meta = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    inst = Install(
        root=root,
        product=str(meta.get("product", "")),
        version=str(meta.get("version", "")),
        variant=str(meta.get("variant", "")),
        tools=tuple(meta.get("tools", ())),
        build_s=float(meta.get("build_s", 0.0)),
        meta=meta,
    )
    if not inst.tools or not all(os.access(inst.binary(t), os.X_OK) for t in inst.tools):
        return None
    return inst


def installs() -> list[Install]:
    """Every finished install in the cache."""
    found = []
    for product in ("llama.cpp", "ollama"):
        base = cache_root() / product
        if base.is_dir():
            for root in sorted(base.iterdir()):
                inst = read_install(root)
                if inst is not None:
                    found.append(inst)
    return found


def llama_cpp_version(build: int = LLAMA_CPP_BUILD) -> str:
    return f"b{build}"


def find_llama_cpp(variant: str | None = None, tool: str = "llama-server") -> Install | None:
    """A finished llama.cpp install that has `tool`; with no variant, CUDA first, then CPU."""
    for v in [variant] if variant else ["cuda", "cpu"]:
        inst = read_install(install_dir("llama.cpp", llama_cpp_version(), v))
        if inst is not None and tool in inst.tools:
            return inst
    return None


def ollama_release(version: str) -> str:
    """'A' -> '0.12.10', 'v0.24.0' -> '0.24.0'; ConfigError for anything else."""
    if version.upper() in ERA_RELEASES:
        return ERA_RELEASES[version.upper()]
    try:
        major, minor, patch = parse_version(version)
    except ValueError as exc:
        raise ConfigError(f"Ollama version '{version}': {exc}") from None
    return f"{major}.{minor}.{patch}"


def cpu_march() -> str:
    """'x86-64-v3' where this CPU has AVX2, FMA, F16C and BMI2, else '' (generic code).

    Eras A/B compile ggml's CPU backend into the Go binary; a plain `go build` gives it no SIMD flags and
    decodes 25x slower than Ollama's release (24 against 613 tok/s for the tiny test model here), so the
    build targets this CPU level and records it; an install for a level this CPU lacks is not used.
    """
    if platform.machine() not in ("x86_64", "AMD64"):
        return ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return "x86-64-v3" if {"avx2", "fma", "f16c", "bmi2"} <= set(flags) else ""


def usable(inst: Install | None) -> Install | None:
    """None for a build whose CPU code this machine cannot run (the cache moved to another CPU)."""
    if inst is None:
        return None
    march = str(inst.meta.get("march") or "")
    return inst if not march or cpu_march() == march else None


def find_ollama(version: str, variant: str | None = None) -> Install | None:
    """A finished Ollama build of `version` (a release or an era letter); with no variant, CUDA first."""
    for v in [variant] if variant else ["cuda", "cpu"]:
        inst = usable(read_install(install_dir("ollama", ollama_release(version), v)))
        if inst is not None:
            return inst
    return None
