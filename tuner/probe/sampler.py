"""PeakSampler: the peak memory per GPU over a window. A background thread samples at `interval_s` (20 Hz by
default) and the caller may add samples at moments it knows matter (`mark()`, e.g. right after a load), so a
window shorter than one interval (a simulated trial takes milliseconds) still gets measured."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tuner.probe.base import Probe


@dataclass(frozen=True)
class Peak:
    baseline_bytes: list[int]
    peak_bytes: list[int]  # max used per GPU over the window, minus the baseline (never below 0)
    samples: int

    @property
    def total_bytes(self) -> int:
        return sum(self.peak_bytes)


class PeakSampler:
    """Peak memory per GPU over a window, sampled in a background thread plus explicit marks."""

    def __init__(
        self,
        probe: Probe,
        interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline: list[int] = []
        self._max: list[int] = []
        self._samples = 0
        self._error: Exception | None = None

    def start(self) -> None:
        self._baseline = self._probe.used_bytes()
        self._max = list(self._baseline)
        self._samples = 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vram-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.mark()
            except Exception as exc:  # noqa: BLE001 - keep the last error, stop sampling
                self._error = exc
                return

    def mark(self) -> None:
        used = self._probe.used_bytes()
        with self._lock:
            self._max = [max(a, b) for a, b in zip(self._max, used)] if self._max else list(used)
            self._samples += 1

    def stop(self) -> Peak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            peak = [max(0, m - b) for m, b in zip(self._max, self._baseline)]
            return Peak(list(self._baseline), peak, self._samples)
