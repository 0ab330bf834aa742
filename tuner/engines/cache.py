"""Where built engines live, and how a finished install is told from an unfinished one.

    <cache>/llama.cpp/b10488-cpu/bin/{llama-server,llama-bench,llama-quantize}
    <cache>/ollama/0.12.10-cpu/bin/ollama            (Era C also: lib/ollama/llama-server ...)
    <cache>/src/...                                   downloaded and extracted sources
    <cache>/work/...                                  build folders, kept until a build succeeds

`<cache>` is $AUTOTUNE_CACHE, else $XDG_CACHE_HOME/autotune, else ~/.cache/autotune. A marker file
(BUILD-OK.json), written last, says an install is complete; a second build finds it and returns at once.
Builds of the same thing in two processes take turns on a file lock, so the second finds the first's work.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "BUILD-OK.json"


def cache_root() -> Path:
    if os.environ.get("AUTOTUNE_CACHE"):
        return Path(os.environ["AUTOTUNE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "autotune"


def install_dir(product: str, version: str, variant: str) -> Path:
    """`product` is 'llama.cpp' or 'ollama'; `version` 'b10488' or '0.12.10'; `variant` 'cpu' or 'cuda'."""
    return cache_root() / product / f"{version}-{variant}"


def work_dir(product: str, version: str, variant: str) -> Path:
    return cache_root() / "work" / f"{product}-{version}-{variant}"


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


def write_marker(root: Path, meta: dict[str, Any]) -> Install:
    """Write the marker last; the install counts from then on."""
    (root / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    inst = read_install(root)
    if inst is None:
        raise RuntimeError(f"'{root}' is missing tools listed in its own marker: {meta.get('tools')}")
    return inst


@contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock across processes, for one build at a time of the same thing."""
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
