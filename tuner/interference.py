"""What else was using the machine before and during a trial: other processes' CPU, other processes on
the GPUs, and clock throttling. It records; the report judges (tuner.decision.noise).

CPU: the CPU seconds every process on this host used over a window (psutil), minus our own process tree
and the engine's (the server listening on the study's port and its runners, or the llama-server we
started), over the window's wall time: "cores" used by others. "Before" is the window from the end of the
previous trial (or the start of the study) to the start of this one, while the engine sat unloaded; "during"
is the trial itself. GPUs: the probe's view (NVML's process lists and clock event reasons; the simulator's
injected neighbour), read before the load, after it and after the last generation. The simulator also
reports its simulated host's CPU load, which then stands in for this host's (the simulated speed does not
depend on what this machine is doing).

The block stored on each trial (TrialRecord.interference), every key always present:

    source                    "this host" | "simulator"
    cpu_count                 logical CPUs of the host
    other_cpu_before          cores used by other processes before the trial (None: not measured)
    other_cpu_during          cores used by other processes during the trial
    top_cpu                   [[name, pid, cores], ...]: the busiest other processes during, at most 3
    gpu_processes_before      [[gpu, pid, name, bytes], ...]: other processes on the GPUs before the load
    gpu_processes_during      the same, seen during the trial
    throttle_before           NVML clock throttle reasons before the load
    throttle_during           the same, during the trial

tuner.measure adds "throttle_s_during": the seconds the clocks were held down over the measured generations,
by cause ("power", "thermal"), from the probe's violation counters ({} where it has none).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import psutil

from tuner.probe import Activity, activity_of

ENGINE_NAMES = ("ollama", "llama-server", "llama_server")  # process names that belong to an engine
TOP_CPU = 3
MIN_TOP_CORES = 0.05

# pid -> (name, parent pid, CPU seconds so far)
ProcessTable = dict[int, tuple[str, int, float]]


def process_table() -> ProcessTable:
    """Every process's name, parent and CPU seconds (user + system) now."""
    table: ProcessTable = {}
    for proc in psutil.process_iter(["name", "ppid", "cpu_times"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None:
            continue
        table[proc.pid] = (
            str(info.get("name") or "?"),
            int(info.get("ppid") or 0),
            times.user + times.system,
        )
    return table


def listening_pids(host: str | None) -> set[int]:
    """The processes listening on `host`'s port when it is on this machine (the engine's server), else {}."""
    if not host:
        return set()
    parsed = urlparse(host if "://" in host else f"http://{host}")
    hostname = parsed.hostname or ""
    if not (hostname in {"localhost", "::1", "0.0.0.0"} or hostname.startswith("127.")):
        return set()
    try:
        port = parsed.port
        if port is None:  # a bare host names no server (llama-server's backend: its pid says which)
            return set()
        return {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
    except (psutil.Error, OSError, ValueError):
        return set()


def descendants(table: ProcessTable, roots: Iterable[int]) -> set[int]:
    """`roots` and every process below them in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class _Snapshot:
    at: float
    table: ProcessTable = field(default_factory=dict)


def _gpu_rows(activity: Activity, skip: set[int]) -> list[list[Any]]:
    return [
        [p.gpu, p.pid, p.name, p.used_bytes]
        for p in activity.processes
        if p.pid not in skip and not any(n in p.name.lower() for n in ENGINE_NAMES)
    ]


def _merge_rows(rows: list[list[Any]], more: list[list[Any]]) -> list[list[Any]]:
    seen = {(r[0], r[1]): r for r in rows}
    for r in more:
        key = (r[0], r[1])
        if key not in seen or (r[3] or 0) > (seen[key][3] or 0):
            seen[key] = r
    return sorted(seen.values(), key=lambda r: (r[0], r[1]))


class InterferenceMonitor:
    """start() before the load, mark() during the trial (after the load, after generating), stop() after.

    `engine_pids` names the engine's own processes (called at every snapshot, so it follows a server
    restarted per trial); their descendants count as the engine too. `table` and `clock` are seams for tests.
    """

    def __init__(
        self,
        probe: object,
        engine_pids: Callable[[], Iterable[int]] = set,
        *,
        table: Callable[[], ProcessTable] = process_table,
        clock: Callable[[], float] = time.monotonic,
        cpu_count: int | None = None,
    ) -> None:
        self._probe = probe
        self._engine_pids = engine_pids
        self._table = table
        self._clock = clock
        self._cpu_count = cpu_count or psutil.cpu_count(logical=True) or 1
        first = activity_of(probe)
        self._simulated = first.host_other_cpu_cores is not None
        self._last = self._snapshot()
        self._start = self._last
        self._before: dict[str, Any] = {}
        self._during: list[Activity] = []

    def _snapshot(self) -> _Snapshot:
        if self._simulated:
            return _Snapshot(self._clock())
        return _Snapshot(self._clock(), self._table())

    def _ours(self, table: ProcessTable) -> set[int]:
        return descendants(table, {os.getpid(), *self._engine_pids()})

    def _other_cores(self, a: _Snapshot, b: _Snapshot) -> tuple[float, list[list[Any]]]:
        """Cores used by other processes between two snapshots, and the busiest of them."""
        wall = b.at - a.at
        if wall <= 0:
            return 0.0, []
        skip = self._ours(b.table) | self._ours(a.table)
        used: list[tuple[float, str, int]] = []
        for pid, (name, _, cpu) in b.table.items():
            if pid in skip or any(n in name.lower() for n in ENGINE_NAMES):
                continue
            before = a.table.get(pid)
            delta = cpu - before[2] if before is not None and before[0] == name else 0.0
            if delta > 0:
                used.append((delta / wall, name, pid))
        used.sort(reverse=True)
        top = [[name, pid, round(cores, 3)] for cores, name, pid in used[:TOP_CPU] if cores >= MIN_TOP_CORES]
        return sum(c for c, _, _ in used), top

    def _skip_pids(self) -> set[int]:
        if self._simulated:
            return set()
        return self._ours(self._last.table) | set(self._engine_pids())

    def start(self) -> None:
        now = self._snapshot()
        activity = activity_of(self._probe)
        if self._simulated:
            cpu_before: float | None = activity.host_other_cpu_cores
        else:
            cpu_before = self._other_cores(self._last, now)[0]
        self._start = now
        self._before = {
            "cpu": cpu_before,
            "gpu": _gpu_rows(activity, self._skip_pids()),
            "throttle": list(activity.throttle),
        }
        self._during = []

    def mark(self) -> None:
        self._during.append(activity_of(self._probe))

    def stop(self) -> dict[str, Any]:
        self.mark()
        end = self._snapshot()
        if self._simulated:
            cpu_during = max((a.host_other_cpu_cores or 0.0) for a in self._during)
            top: list[list[Any]] = []
        else:
            cpu_during, top = self._other_cores(self._start, end)
        self._last = end
        skip = self._skip_pids()
        gpu_during: list[list[Any]] = []
        throttle: list[str] = []
        for activity in self._during:
            gpu_during = _merge_rows(gpu_during, _gpu_rows(activity, skip))
            throttle += [t for t in activity.throttle if t not in throttle]
        return {
            "source": "simulator" if self._simulated else "this host",
            "cpu_count": self._cpu_count,
            "other_cpu_before": _round(self._before.get("cpu")),
            "other_cpu_during": _round(cpu_during),
            "top_cpu": top,
            "gpu_processes_before": self._before.get("gpu", []),
            "gpu_processes_during": gpu_during,
            "throttle_before": self._before.get("throttle", []),
            "throttle_during": throttle,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


class EnginePids:
    """The engine's own process ids for a backend: the process listening on its host's port (looked up
    once, when first asked) and the llama-server it runs now (its `pid`)."""

    def __init__(self, backend: object) -> None:
        self._backend = backend
        self._listening: set[int] | None = None

    def __call__(self) -> set[int]:
        if self._listening is None:
            host = getattr(self._backend, "host", None)
            self._listening = listening_pids(host if isinstance(host, str) else None)
        pid = getattr(self._backend, "pid", None)
        return self._listening | ({pid} if isinstance(pid, int) else set())
