"""Build folders and build locks in the cache (what is built is in tuner.installs)."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.installs import MARKER, Install, cache_root, read_install


def work_dir(product: str, version: str, variant: str) -> Path:
    return cache_root() / "work" / f"{product}-{version}-{variant}"


def build_meta(
    product: str, version: str, variant: str, tools: list[str], build_s: float, jobs: int, **extra: Any
) -> dict[str, Any]:
    """What an install's marker records: the build and the machine it was made on."""
    return {
        "product": product,
        "version": version,
        "variant": variant,
        "tools": tools,
        "build_s": round(build_s, 1),
        "jobs": jobs,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        **extra,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


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
