"""The simulator as `ollama serve`: the environment it reads per release, each knob's effect on memory and
speed, and autotune's managed-server code starting, checking and stopping it as it does the real binary."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tuner.backend.ollamaserve import ManagedOllama
from tuner.errors import Unreachable
from tuner.estimate.versions import Version
from tuner.servemanaged import run_managed
from tuner.serverenv import ServerSettings, expected_log_values, parse_server_config
from tuner.sim import Simulation
from tuner.sim.knobs import ServerKnobs, parse_visible, server_config_line
from tuner.sim.serve import listen_address, write_shim
from tuner.sim.slots import SlotBoard


def test_environment_follows_each_release() -> None:
    env = {"OLLAMA_NEW_ENGINE": "1", "OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_NUM_PARALLEL": "3"}
    a = ServerKnobs.from_env(env, "0.12.10", gpu_count=1)
    c = ServerKnobs.from_env(env, "0.32.15", gpu_count=1)
    assert a.new_engine and not c.new_engine  # Era C has no OLLAMA_NEW_ENGINE
    assert a.num_parallel == 3 and ServerKnobs.from_env({}, "0.32.15", gpu_count=1).num_parallel == 1
    # a quantized cache needs flash attention; from 0.13.5 (Era A/B) it must be enabled explicitly
    assert a.effective_kv(False, Version("0.12.10")) == "f16"
    assert a.effective_kv(True, Version("0.12.10")) == "q8_0"
    assert a.effective_kv(True, Version("0.24.0")) == "f16"
    assert replace(a, flash_attention=True).effective_kv(True, Version("0.24.0")) == "q8_0"
    assert c.effective_kv(True, Version("0.32.15")) == "q8_0"  # passed straight to llama-server
    assert (
        ServerKnobs.from_env({"OLLAMA_KV_CACHE_TYPE": "q5_1"}, "0.32.15", gpu_count=1).kv_cache_type == "f16"
    )
    assert ServerKnobs.from_env({"OLLAMA_NUM_PARALLEL": "x"}, "0.32.15", gpu_count=1).num_parallel == 1
    assert c.slots_for("mllama") == 1 and c.slots_for("llama") == 3


def test_visible_devices_pick_a_subset_and_bad_ids_are_named() -> None:
    assert parse_visible(None, 3) == (0, 1, 2)
    assert parse_visible("2,0", 3) == (2, 0) and parse_visible("GPU-1", 3) == (1,)
    assert parse_visible("-1", 3) == () and parse_visible("1,-1,2", 3) == (1,)
    with pytest.raises(ValueError, match="GPU 5 does not exist"):
        parse_visible("5", 2)
    with pytest.raises(ValueError, match="'abc' is not a GPU index"):
        parse_visible("abc", 2)


def test_startup_log_round_trips_through_autotunes_check() -> None:
    settings = ServerSettings(num_parallel=4, flash_attention=True, kv_cache_type="q8_0", sched_spread=True)
    for version in ("0.12.10", "0.32.15"):
        env = settings.env(version)
        line = server_config_line(ServerKnobs.from_env(env, version, gpu_count=2), version)
        logged = parse_server_config(line + "\n")
        assert all(logged[k] == v for k, v in expected_log_values(env).items())
        assert ("OLLAMA_NEW_ENGINE" in logged) == (version == "0.12.10")
    default = parse_server_config(server_config_line(ServerKnobs(), "0.32.15"))
    assert default["OLLAMA_NUM_PARALLEL"] == "1" and default["OLLAMA_FLASH_ATTENTION"] == "false"
    assert listen_address("127.0.0.1:4321") == ("127.0.0.1", 4321)
    assert listen_address("http://0.0.0.0") == ("0.0.0.0", 11434)


def _sim(version: str = "0.32.15", gpus: str = "1x24GiB", parallel: int = 1, **env: str) -> Simulation:
    sim = Simulation(gpus, version=version, noise=0, estimator_error=0, num_parallel=parallel)
    env = {"OLLAMA_NUM_PARALLEL": str(parallel), **env}
    sim.knobs = ServerKnobs.from_env(env, version, gpu_count=len(sim.gpus))
    return sim


def test_each_knob_changes_the_buffers() -> None:
    def kv(sim: Simulation) -> int:
        return sum(d["kv"] for d in sim.plan("llama3.1:8b", num_ctx=8192).breakdown.values())

    f16, q8, q4 = (kv(_sim(OLLAMA_KV_CACHE_TYPE=t)) for t in ("f16", "q8_0", "q4_0"))
    assert q4 < q8 < f16 and q8 < 0.6 * f16
    assert kv(_sim(parallel=4)) == 4 * f16
    off = _sim(OLLAMA_FLASH_ATTENTION="0", OLLAMA_KV_CACHE_TYPE="q8_0")
    assert kv(off) == f16  # no flash attention: the q8_0 request falls back to f16

    def compute(sim: Simulation) -> int:
        return sum(d["compute"] for d in sim.plan("llama3.1:8b", num_ctx=32768).breakdown.values())

    assert compute(off) > compute(_sim(OLLAMA_FLASH_ATTENTION="1"))  # without FA the KQ scratch is big


def test_spread_and_visible_gpus_change_the_placement() -> None:
    fewest = _sim(gpus="2x24GiB").plan("llama3.1:8b", num_ctx=4096)
    spread = _sim(gpus="2x24GiB", OLLAMA_SCHED_SPREAD="1").plan("llama3.1:8b", num_ctx=4096)
    assert len(fewest.runner_gpus) == 1 and len(spread.runner_gpus) == 2
    era_a = _sim(version="0.12.10", gpus="2x24GiB", OLLAMA_SCHED_SPREAD="1").plan("llama3.1:8b", num_ctx=4096)
    assert len(era_a.runner_gpus) == 2
    only_second = _sim(gpus="2x24GiB", CUDA_VISIBLE_DEVICES="1").plan("llama3.1:8b", num_ctx=4096)
    assert only_second.runner_gpus == (1,) and only_second.gpu_bytes[0] == 0 < only_second.gpu_bytes[1]
    big = _sim(gpus="2x24GiB", CUDA_VISIBLE_DEVICES="0").plan("llama3.3:70b", num_ctx=4096)
    assert big.runner_gpus == (0,) and big.offloaded < 81  # one visible GPU: a 70B spills to the CPU


def test_kv_type_and_flash_attention_change_the_speed() -> None:
    def speed(sim: Simulation) -> tuple[float, float]:
        p = sim.plan("llama3.1:8b", num_ctx=32768)
        s = sim.speed(p, prompt_tokens=8192, depth_tokens=16384)
        return s.decode_tok_s, s.prefill_tok_s

    f16, q4 = speed(_sim(OLLAMA_KV_CACHE_TYPE="f16")), speed(_sim(OLLAMA_KV_CACHE_TYPE="q4_0"))
    off = speed(_sim(OLLAMA_FLASH_ATTENTION="0"))
    assert q4[0] > f16[0]  # a smaller cache is read faster at depth
    assert off[1] < f16[1] and off[0] < f16[0]


def test_a_forced_one_slot_runner_serves_one_request_at_a_time() -> None:
    board = SlotBoard(num_parallel=4)
    board.loading("m", 0.0, 0.0, slots=1)
    first = board.admit("m", 0.0, loads=True)
    board.occupy("m", 10.0)
    second = board.admit("m", 1.0)
    assert first.start_at == 0.0 and second.start_at == 10.0  # waits for the single slot
    board.loading("n", 0.0, 0.0)
    board.occupy("n", 10.0)
    assert board.admit("n", 1.0).start_at == 1.0  # the server's four slots


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    return write_shim(
        tmp_path / "ollama", ["--gpus", "2x24GiB", "--ollama-version", "0.32.15", "--noise", "0"]
    )


def test_managed_restarts_take_each_setting(shim: Path, tmp_path: Path) -> None:
    def measure(url: str) -> tuple[int, int]:
        r = httpx.post(
            url + "/api/generate",
            json={
                "model": "llama3.1:8b",
                "prompt": "hi",
                "stream": False,
                "options": {"num_ctx": 8192, "num_predict": 4},
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        ps = httpx.get(url + "/api/ps", timeout=10).json()["models"]
        return int(ps[0]["size_vram"]), len(ps)

    S = ServerSettings
    settings = [
        S(num_parallel=1),
        S(num_parallel=4),
        S(num_parallel=4, flash_attention=True, kv_cache_type="q8_0"),
    ]
    runs = run_managed(shim, settings, measure, models_dir=tmp_path / "models", log_dir=tmp_path / "logs")
    assert [r.version for r in runs] == ["0.32.15"] * 3
    assert [r.logged["OLLAMA_NUM_PARALLEL"] for r in runs] == ["1", "4", "4"]
    one, four, four_q8 = (r.result[0] for r in runs)
    assert one < four_q8 < four  # slots multiply the cache; q8_0 halves it


def test_visible_devices_limit_the_gpus_and_a_bad_id_fails_to_start(shim: Path, tmp_path: Path) -> None:
    with ManagedOllama(shim, models_dir=tmp_path / "m", env={"CUDA_VISIBLE_DEVICES": "1"}) as server:
        log = server.log_text()
        assert log.count('msg="inference compute"') == 1 and "id=GPU-1" in log
    bad = ManagedOllama(
        shim, models_dir=tmp_path / "m", env={"CUDA_VISIBLE_DEVICES": "7"}, startup_timeout_s=20
    )
    with pytest.raises(Unreachable, match="GPU 7 does not exist"):
        bad.start()


def test_the_command_line_answers_like_ollama(shim: Path) -> None:
    run = subprocess.run([str(shim), "--version"], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "ollama version is 0.32.15"
    run = subprocess.run([str(shim), "pull", "x"], capture_output=True, text=True, check=False)
    assert run.returncode == 1 and "'pull' is not simulated" in run.stderr and "Traceback" not in run.stderr
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run(
        [sys.executable, "-m", "tuner.sim", "serve", "--gpus", "banana"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert run.returncode == 1 and "banana" in run.stderr and "Traceback" not in run.stderr
