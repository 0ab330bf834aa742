"""The fingerprint's hardware and software details: NVML's fields through a stand-in pynvml (each field on its
own: NotSupported gives None and loses nothing else), the simulator's cards through /sim/state, the server's
build commit, the model identity, and the two ids (comparable measurements; one physical machine)."""

from __future__ import annotations

import hashlib
import sys
import types

import pytest

from tuner.backend.base import ServerInfo
from tuner.backend.ollama import OllamaBackend
from tuner.fingerprint import (
    build_commit,
    detail_lines,
    file_identity,
    fingerprint,
    fingerprint_id,
    fleet_id,
    model_identities,
)
from tuner.probe import NullProbe, NvmlProbe, SimProbe
from tuner.sim import SimServer
from tuner.units import GiB


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, *, old_driver: bool = False) -> None:
    """Two cards: GPU 0 answers everything as the real H100 of reports/examples/h100-nvml/fingerprint.json did
    (its ECC counts made non-zero), GPU 1's driver says NotSupported to ECC, the default power limit and the
    max PCIe generation. `old_driver`: no CUDA driver version call at all (an AttributeError, as a missing
    function is)."""

    def unsupported_on_1(value):
        def call(handle, *args):
            if handle == 1:
                raise NotSupported("Not Supported")
            return value(handle, *args) if callable(value) else value

        return call

    def ecc_errors(handle, error_type, counter_type):
        if handle == 1:
            raise NotSupported("Not Supported")
        return {(0, 0): 3, (1, 0): 0, (0, 1): 41, (1, 1): 2}[(error_type, counter_type)]

    module = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlSystemGetDriverVersion=lambda: "580.159.04",
        nvmlDeviceGetName=lambda h: "NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=lambda h, version=None: types.SimpleNamespace(total=80 * GiB, used=GiB),
        nvmlDeviceGetUUID=lambda h: f"GPU-0000000{h}-aaaa-bbbb-cccc-dddddddddddd".encode(),
        nvmlDeviceGetVbiosVersion=lambda h: b"96.00.DA.00.0C",
        nvmlDeviceGetCurrPcieLinkGeneration=lambda h: 5 if h == 0 else 1,  # GPU 1 idles at gen 1
        nvmlDeviceGetMaxPcieLinkGeneration=unsupported_on_1(5),
        nvmlDeviceGetCurrPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetMaxPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700000 if h == 0 else 250000,  # mW
        nvmlDeviceGetPowerManagementDefaultLimit=unsupported_on_1(700000),
        nvmlDeviceGetEccMode=unsupported_on_1((1, 1)),
        nvmlDeviceGetTotalEccErrors=ecc_errors,
    )
    if not old_driver:
        module.nvmlSystemGetCudaDriverVersion = lambda: 13000
    monkeypatch.setitem(sys.modules, "pynvml", module)


def test_nvml_details_each_field_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml(monkeypatch)
    full, partial = NvmlProbe().details()
    assert full == {
        "uuid": "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",
        "vbios": "96.00.DA.00.0C",
        "pcie": {"gen_current": 5, "gen_max": 5, "width_current": 16, "width_max": 16},
        "power_limit_w": {"enforced": 700.0, "default": 700.0},
        "ecc": {
            "mode_current": True,
            "mode_pending": True,
            "volatile_corrected": 3,
            "volatile_uncorrected": 0,
            "aggregate_corrected": 41,
            "aggregate_uncorrected": 2,
        },
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
    }
    # NotSupported: that field None, every other field still read
    assert partial["uuid"] == "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd"
    assert partial["pcie"] == {"gen_current": 1, "gen_max": None, "width_current": 16, "width_max": 16}
    assert partial["power_limit_w"] == {"enforced": 250.0, "default": None}
    assert set(partial["ecc"].values()) == {None}


def test_a_driver_without_the_cuda_version_call_loses_only_that(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml(monkeypatch, old_driver=True)
    details = NvmlProbe().details()
    assert [d["cuda_driver_version"] for d in details] == [None, None]
    assert details[0]["vbios"] == "96.00.DA.00.0C"


def test_the_fingerprint_carries_the_details_and_the_physical_card_makes_the_fleet_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_pynvml(monkeypatch)
    server = ServerInfo("llama-server", "version: 6020 (build 1, commit 0c1e570ab)", "local process")
    fp = fingerprint(NvmlProbe(), server)
    assert fp["cuda_driver_version"] == "13.0"
    assert fp["server"]["build_commit"] == "0c1e570ab"
    assert [g["uuid"] for g in fp["gpus"]] == [
        "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",
        "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd",
    ]
    assert fp["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3" and fp["gpus"][0]["driver"] == "580.159.04"
    lines = detail_lines(fp)
    assert "PCIe gen 5/5 x16/16" in lines[0] and "ECC on (3 corrected, 0 uncorrected since boot" in lines[0]
    assert "PCIe gen 1/? x16/16" in lines[1] and "ECC not reported" in lines[1]
    assert "CUDA 13.0" in lines[2] and "commit 0c1e570ab" in lines[2]

    # the same model of card, another physical card: the same comparable machine, another fleet member
    swapped = {**fp, "gpus": [{**fp["gpus"][0], "uuid": "GPU-ffffffff"}, fp["gpus"][1]]}
    assert fingerprint_id(swapped) == fingerprint_id(fp)
    assert fleet_id(swapped) != fleet_id(fp)
    # a host name or a tool version does not make another machine
    moved = {**fp, "host": {**fp["host"], "name": "elsewhere"}, "tool": {"version": "9"}}
    assert fleet_id(moved) == fleet_id(fp)


def test_without_uuids_the_server_url_tells_machines_apart() -> None:
    a = fingerprint(NullProbe("no NVML"), ServerInfo("ollama", "0.12.10", "http://gpu-a:11434"))
    b = fingerprint(NullProbe("no NVML"), ServerInfo("ollama", "0.12.10", "http://gpu-b:11434"))
    assert fingerprint_id(a) == fingerprint_id(b) and fleet_id(a) != fleet_id(b)


def test_a_password_in_the_server_url_is_not_kept() -> None:
    fp = fingerprint(NullProbe(), ServerInfo("ollama", "0.12.10", "http://u:hunter2secret@gpu:11434"))
    assert "hunter2secret" not in str(fp) and fp["server"]["host"] == "http://u:***@gpu:11434"


def test_build_commit_only_where_the_server_says_one() -> None:
    assert build_commit("0.5.0-dev (build 0, commit 0c1e570)") == "0c1e570"
    assert build_commit("0.12.10") is None


def _sim_details(seed: int, machine: str) -> tuple[list[dict], dict]:
    with SimServer(gpus="2xRTX4090", seed=seed, machine=machine) as sim:
        probe = SimProbe(sim.url)
        try:
            return probe.details(), fingerprint(probe, ServerInfo("ollama", "0.12.10", sim.url))
        finally:
            probe.close()


def test_simulated_cards_answer_the_same_fields_fixed_per_machine() -> None:
    first, fp = _sim_details(4, "rig-a")
    again, _ = _sim_details(5, "rig-a")  # restarted with another noise seed: the same machine, the same cards
    other, other_fp = _sim_details(4, "rig-b")  # another machine with the same model of card
    assert first == again
    assert len({d["uuid"] for d in first}) == 2 and all(d["uuid"].startswith("GPU-") for d in first)
    assert {d["uuid"] for d in first}.isdisjoint(d["uuid"] for d in other)
    card = first[0]
    assert card["pcie"]["width_max"] == 16 and card["power_limit_w"]["enforced"] > 0
    assert card["ecc"]["mode_current"] is False and card["cuda_driver_version"]
    assert (
        fp["gpus"][1]["uuid"] == first[1]["uuid"] and fp["cuda_driver_version"] == card["cuda_driver_version"]
    )
    assert fingerprint_id(fp) == fingerprint_id(other_fp) and fleet_id(fp) != fleet_id(other_fp)


def test_model_identity_ollama_digest_or_the_gguf_file(tmp_path) -> None:
    small = tmp_path / "tiny.gguf"
    small.write_bytes(b"GGUF" + bytes(1000))
    ident = file_identity(str(small))
    assert ident == {
        "kind": "sha256",
        "digest": "sha256:" + hashlib.sha256(small.read_bytes()).hexdigest(),
        "size_bytes": 1004,
    }
    big = file_identity(str(small), small_bytes=100)  # too big to hash: size and mtime
    assert big["kind"] == "size+mtime" and big["size_bytes"] == 1004 and big["mtime_ns"] > 0
    with SimServer(gpus="1xRTX4090", seed=1) as sim:
        backend = OllamaBackend(sim.url)
        try:
            tags = backend.model_digests()
            ids = model_identities(backend, ["llama3.1:8b", "no-such-model:1b"])
        finally:
            backend.close()
    assert ids["llama3.1:8b"] == {
        "kind": "ollama",
        "digest": "sha256:" + tags["llama3.1:8b"].removeprefix("sha256:"),
    }
    assert len(ids["llama3.1:8b"]["digest"]) == len("sha256:") + 64
    assert ids["no-such-model:1b"] == {"kind": "unknown"}


def test_the_simulated_enforced_power_limit_follows_the_power_model() -> None:
    import httpx

    with SimServer(gpus="1xRTX4090", seed=1) as sim:
        probe = SimProbe(sim.url)
        try:
            before = probe.details()[0]["power_limit_w"]
            httpx.post(f"{sim.url}/sim/power", json={"power_limit_w": 300}).raise_for_status()
            after = probe.details()[0]["power_limit_w"]
        finally:
            probe.close()
    assert before == {"enforced": 450.0, "default": 450.0}  # the RTX 4090's board power
    assert after == {"enforced": 300.0, "default": 450.0}
