"""The GPU memory probes (tuner.probe): what each one reports, which one a host gets, and the peak sampler.

NVML is exercised through a stand-in pynvml module (the real one needs a driver: tests marked gpu); the
simulator's probe through a real SimServer on loopback; the sampler with marks only (its background thread
is given an interval longer than any test), so nothing here depends on timing.
"""

from __future__ import annotations

import os
import sys
import types
from http.server import BaseHTTPRequestHandler, HTTPServer
from threading import Thread

import ollama
import pytest

from tuner.errors import ProbeError
from tuner.probe import GpuInfo, NullProbe, NvmlProbe, PeakSampler, ProcessRssProbe, SimProbe, choose_probe
from tuner.probe import choose as P
from tuner.sim import SimServer
from tuner.units import GiB, MiB

NEVER_S = 3600.0  # a sampler interval no test waits for: only explicit marks sample


class ListProbe:
    """used_bytes() returns the next reading of a script, per GPU."""

    source = "fake"

    def __init__(self, readings: list[list[int]]) -> None:
        self.readings = list(readings)

    def gpus(self) -> list[GpuInfo]:
        return [GpuInfo(i, f"GPU{i}", 24 * GiB) for i in range(len(self.readings[0]))]

    def used_bytes(self) -> list[int]:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def close(self) -> None:
        pass


# -- GpuInfo -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cc", "supported"), [((8, 9), True), ((7, 0), True), ((7, 2), False), ((6, 1), False), (None, True)]
)
def test_flash_attention_follows_the_compute_capability(cc: tuple[int, int] | None, supported: bool) -> None:
    assert GpuInfo(0, "g", GiB, compute_capability=cc).supports_flash_attention is supported


# -- the peak sampler --------------------------------------------------------------------------------------
def test_peak_is_the_largest_reading_per_gpu_minus_the_baseline() -> None:
    probe = ListProbe([[1 * GiB, 2 * GiB], [5 * GiB, 2 * GiB], [3 * GiB, 9 * GiB], [1 * GiB, 1 * GiB]])
    sampler = PeakSampler(probe, interval_s=NEVER_S)
    sampler.start()  # the baseline: 1 and 2 GiB
    for _ in range(3):
        sampler.mark()
    peak = sampler.stop()
    assert peak.baseline_bytes == [1 * GiB, 2 * GiB]
    assert peak.peak_bytes == [4 * GiB, 7 * GiB] and peak.total_bytes == 11 * GiB
    assert peak.samples == 4


def test_memory_freed_below_the_baseline_never_counts_as_negative() -> None:
    sampler = PeakSampler(ListProbe([[4 * GiB], [1 * GiB]]), interval_s=NEVER_S)
    sampler.start()
    sampler.mark()
    assert sampler.stop().peak_bytes == [0]


# -- the probes --------------------------------------------------------------------------------------------
def test_null_probe_sees_nothing_and_says_why() -> None:
    probe = NullProbe("no driver")
    assert (probe.source, probe.gpus(), probe.used_bytes(), probe.reason) == ("none", [], [], "no driver")


def test_process_rss_probe_reads_the_engine_process_high_water_mark() -> None:
    pid: list[int | None] = [None]
    probe = ProcessRssProbe(lambda: pid[0])
    assert probe.used_bytes() == [0]  # nothing running
    pid[0] = os.getpid()
    assert probe.used_bytes()[0] > 1 * MiB
    (gpu,) = probe.gpus()
    assert gpu.memory_bytes > 0 and "RSS" in gpu.name


def test_sim_probe_reads_the_simulated_gpus_and_their_use() -> None:
    with SimServer(gpus="2xRTX4090", noise=0, estimator_error=0) as server:
        probe = SimProbe(server.url)
        gpus = probe.gpus()
        assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090"] * 2
        assert gpus[0].compute_capability == (8, 9) and gpus[0].memory_bytes == 24564 * MiB
        idle = probe.used_bytes()
        client = ollama.Client(host=server.url)
        client.generate(model="llama3.1:8b", prompt="", keep_alive="5m")
        client.close()
        loaded = probe.used_bytes()
        assert len(loaded) == 2 and sum(loaded) > sum(idle) + 4 * GiB
        probe.close()


class _NotTheSimulator(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_sim_probe_on_another_server_is_a_probe_error_naming_the_url() -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _NotTheSimulator)
    Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with pytest.raises(ProbeError, match=f"'{url}/sim/state'.*404"):
            SimProbe(url)
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- which probe ---------------------------------------------------------------------------------------------
def test_choose_probe_finds_the_simulator() -> None:
    with SimServer(gpus="1x24GiB", noise=0) as server:
        probe = choose_probe(server.url)
        assert isinstance(probe, SimProbe) and len(probe.gpus()) == 1
        probe.close()


def test_a_remote_server_gets_no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_the_simulator(host: str, timeout_s: float = 5.0) -> SimProbe:
        raise ProbeError("not the simulator")

    monkeypatch.setattr(P, "SimProbe", not_the_simulator)
    probe = choose_probe("http://gpu-box.example:11434")
    assert isinstance(probe, NullProbe) and "another host" in probe.reason


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("http://127.0.0.1:11434", True),
        ("localhost:11434", True),
        ("http://[::1]:1", True),
        ("http://127.3.0.1", True),
        ("http://10.0.0.5:11434", False),
        ("gpu-box:11434", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert P._is_loopback(host) is loopback  # noqa: SLF001


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, *, fail_init: bool = False) -> None:
    """A stand-in for nvidia-ml-py: two GPUs, bytes for strings as older drivers return, no memory v2."""

    class NVMLError(Exception):
        pass

    class Memory:
        def __init__(self, total: int, used: int) -> None:
            self.total, self.used = total, used

    def init() -> None:
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    def memory(handle: int, version: object = None) -> Memory:
        if version is not None:
            raise TypeError("this driver has no v2 memory info")
        return Memory(80 * GiB, (handle + 1) * GiB)

    def capability(handle: int) -> tuple[int, int]:
        if handle == 1:
            raise NVMLError("Not Supported")
        return (9, 0)

    module = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlMemory_v2=2,
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlSystemGetDriverVersion=lambda: b"550.54",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetCudaComputeCapability=capability,
    )
    monkeypatch.setitem(sys.modules, "pynvml", module)


def test_nvml_probe_reports_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml(monkeypatch)
    probe = NvmlProbe()
    gpus = probe.gpus()
    assert [(g.index, g.name, g.memory_bytes, g.driver) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 80 * GiB, "550.54"),
        (1, "NVIDIA H100 80GB HBM3", 80 * GiB, "550.54"),
    ]
    assert gpus[0].compute_capability == (9, 0) and gpus[1].compute_capability is None
    assert probe.used_bytes() == [1 * GiB, 2 * GiB]
    assert NvmlProbe(device_indices=[1]).used_bytes() == [2 * GiB]


def test_without_a_driver_a_local_server_gets_the_null_probe_with_nvmls_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_pynvml(monkeypatch, fail_init=True)
    with pytest.raises(ProbeError, match="NVML is unavailable.*Driver Not Loaded"):
        NvmlProbe()
    probe = choose_probe(None)
    assert isinstance(probe, NullProbe) and "Driver Not Loaded" in probe.reason
