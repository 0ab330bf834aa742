"""Interference on a real engine: a busy neighbour process during a llama-server trial is recorded as other
processes' CPU, the engine's own CPU is not, and the trial's noise fields hold together. Behaviour only:
nothing here expects a speed, or a spread, to come out any particular way on a shared machine."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from tuner.backend.llamaserver import LlamaServerBackend
from tuner.config import MeasureSettings
from tuner.interference import EnginePids, InterferenceMonitor
from tuner.measure import measure
from tuner.probe import ProcessRssProbe
from tuner.space import Config
from tuner.stats import relative_standard_error

pytestmark = pytest.mark.engine


def test_a_busy_neighbour_is_recorded_and_the_noise_fields_hold(
    llama_backend: LlamaServerBackend, tiny_models: dict[str, str]
) -> None:
    probe = ProcessRssProbe(lambda: llama_backend.pid)
    monitor = InterferenceMonitor(probe, EnginePids(llama_backend))
    engine_pids: list[int] = []

    class Watch:  # the engine's pid while it runs (it is gone after the trial)
        def __init__(self) -> None:
            self.source = probe.source

        def gpus(self):
            return probe.gpus()

        def used_bytes(self):
            if llama_backend.pid is not None:
                engine_pids.append(llama_backend.pid)
            return probe.used_bytes()

        def close(self) -> None:
            pass

    # The neighbour must not be a child of this process: the monitor counts autotune's own process tree as
    # autotune's. A shell starts it in the background and exits, so it is nobody's child here.
    started = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    neighbour = psutil.Process(int(started.stdout.strip()))
    try:
        assert neighbour.ppid() != os.getpid()
        before = sum(neighbour.cpu_times()[:2])
        settings = MeasureSettings(num_predict=16, max_repeats=3)
        m = measure(llama_backend, Watch(), Config(tiny_models["Q8_0"], 0, 2048), settings, monitor=monitor)
        used = sum(neighbour.cpu_times()[:2]) - before
    finally:
        neighbour.kill()
    assert m.loaded and not m.oom
    assert len(m.decode_rates) == len(m.generations) >= 3
    rse = relative_standard_error(m.decode_rates)
    assert m.decode_rse == pytest.approx(rse) and m.noisy == (rse >= settings.target_rse)
    if m.noisy:
        assert len(m.generations) == settings.max_repeats

    block = m.interference
    assert block["source"] == "this host" and block["cpu_count"] >= 1
    assert used > 0 and block["other_cpu_during"] is not None and block["other_cpu_during"] > 0
    # the engine's own CPU is not "other" (by pid: another llama-server on the machine, e.g. a second test
    # run, is another process and rightly counted)
    assert engine_pids and not any(row[1] in engine_pids for row in block["top_cpu"])
