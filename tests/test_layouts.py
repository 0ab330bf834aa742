"""Multi-GPU instance layouts: the candidates, the choice, the per-instance files (pure), and
`autotune serve-bench --serve --layouts` end to end against the simulator started as `ollama serve`
(tuner.sim.serve), which honours CUDA_VISIBLE_DEVICES and OLLAMA_SCHED_SPREAD."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tuner.cli import main
from tuner.layouts import (
    BALANCER_PORT,
    BASE_PORT,
    Instance,
    Layout,
    candidate_layouts,
    choose_layout,
    gpu_ids,
    instance_env,
    layout_files,
)
from tuner.serverenv import ServerSettings, parse_server_config
from tuner.sim.serve import write_shim

REAL_LOG = """\
time=2025-11-20T10:00:00.000Z level=INFO source=routes.go:1 msg="Listening on 127.0.0.1:11434 (version 0.12.10)"
time=2025-11-20T10:00:01.000Z level=INFO source=types.go:131 msg="inference compute" id=GPU-5b4f0c1e-aaaa library=cuda variant=v12 compute=8.9 driver=12.4 name="NVIDIA GeForce RTX 4090" total="23.6 GiB" available="23.1 GiB"
time=2025-11-20T10:00:01.000Z level=INFO source=types.go:131 msg="inference compute" id=GPU-77e1d2c3-bbbb library=cuda variant=v12 compute=8.9 driver=12.4 name="NVIDIA GeForce RTX 4090" total="23.6 GiB" available="23.1 GiB"
"""


def test_gpu_ids_come_from_the_startup_log() -> None:
    assert gpu_ids(REAL_LOG) == ["GPU-5b4f0c1e-aaaa", "GPU-77e1d2c3-bbbb"]
    cpu = 'level=INFO source=types.go:1 msg="inference compute" id=cpu library=cpu compute="" name=cpu\n'
    assert gpu_ids(cpu) == [] and gpu_ids("no such lines\n") == []
    rocm = 'msg="inference compute" id=0 library=ROCm name=ROCm0\nmsg="inference compute" id=1 library=ROCm\n'
    assert gpu_ids(rocm) == ["0", "1"]  # no GPU- id: by index


def test_candidates_keep_the_slots_per_gpu_and_split_evenly() -> None:
    four = candidate_layouts(["a", "b", "c", "d"], 2)
    assert [lay.name for lay in four] == ["spread", "2x2", "4x1"]
    assert [[i.gpus for i in lay.instances] for lay in four] == [
        [("a", "b", "c", "d")],
        [("a", "b"), ("c", "d")],
        [("a",), ("b",), ("c",), ("d",)],
    ]
    assert [sum(i.num_parallel for i in lay.instances) for lay in four] == [8, 8, 8]  # the same slots in all
    assert [lay.name for lay in candidate_layouts(["0", "1", "2"], 1)] == ["spread", "3x1"]
    with pytest.raises(ValueError, match="at least 2 GPUs; the server found 1"):
        candidate_layouts(["0"], 1)


def test_the_choice_keeps_one_spread_instance_unless_separate_ones_are_clearly_faster() -> None:
    layouts = candidate_layouts(["0", "1"], 1)  # spread, 2x1
    assert choose_layout([100.0, 120.0], layouts) == 1
    assert choose_layout([100.0, 104.0], layouts) == 0  # within 5 %: one server is simpler
    assert choose_layout([100.0, 60.0], layouts) == 0
    assert choose_layout([None, 60.0], layouts) == 1  # the spread one met no target
    assert choose_layout([None, None], layouts) is None


def test_instance_env_and_files() -> None:
    settings = ServerSettings(flash_attention=True, kv_cache_type="q8_0")
    pair = Instance(("GPU-a", "GPU-b"), 4)
    env = instance_env(pair, settings, "0.32.15", BASE_PORT)
    assert env == {
        "CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b",
        "OLLAMA_HOST": f"127.0.0.1:{BASE_PORT}",
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_SCHED_SPREAD": "1",  # an instance of several GPUs spreads over them
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
    }
    assert "OLLAMA_SCHED_SPREAD" not in instance_env(Instance(("0",), 2), settings, "0.32.15", None)
    layout = Layout("2x2", (pair, Instance(("GPU-c", "GPU-d"), 4)))
    files = layout_files(layout, settings, "0.32.15", "- spread: 10 tok/s\n- 2x2: 20 tok/s")
    envs = [
        dict(line.split("=", 1) for line in files[f"instances/instance-{i}.env"].splitlines()) for i in (0, 1)
    ]
    assert [e["OLLAMA_HOST"] for e in envs] == [f"127.0.0.1:{BASE_PORT}", f"127.0.0.1:{BASE_PORT + 1}"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["GPU-a,GPU-b", "GPU-c,GPU-d"]
    dropin = files["instances/ollama@1.service.d/autotune.conf"]
    assert 'Environment="CUDA_VISIBLE_DEVICES=GPU-c,GPU-d"' in dropin and "[Service]" in dropin
    assert "enable --now ollama@0 ollama@1" in files["instances/ollama@.service"]
    docker = files["instances/docker-run-flags-1.txt"]
    assert "--gpus '\"device=GPU-c,GPU-d\"'" in docker and f"-p 127.0.0.1:{BASE_PORT + 1}:11434" in docker
    assert "CUDA_VISIBLE_DEVICES" not in docker and "-e OLLAMA_NUM_PARALLEL=4" in docker
    nginx = files["instances/nginx-ollama.conf"]
    assert "least_conn" in nginx and f"listen 127.0.0.1:{BALANCER_PORT}" in nginx
    assert nginx.count("server 127.0.0.1:") == 2
    assert "Load balancing across the ports" in files["instances/LAYOUT.md"]


@pytest.fixture
def sim_ollama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The simulator as `ollama` on some GPUs, in real time (the ladders need it), the model store private."""
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def make(gpus: str) -> Path:
        args = ["--gpus", gpus, "--noise", "0", "--realtime", "--local", "default"]
        return write_shim(tmp_path / f"ollama-{gpus}", args)

    return make


def run_layouts(shim: Path, out: Path, *extra: str, num_predict: int = 8) -> int:
    """Up to 4 streams over the layout(s), two slots per GPU. The simulator sleeps in real time, so on a busy
    machine short answers measure the machine's noise: where the margin is narrow, longer answers."""
    args = ["serve-bench", "llama3.1:8b", "--serve", "--ollama", str(shim), "--layouts", "--parallel", "2"]
    args += ["--num-predict", str(num_predict), "--num-ctx", "4096", "--max-concurrency", "4"]
    args += ["--out", str(out), *extra]
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def no_server_left(shim: Path) -> bool:
    found = subprocess.run(["pgrep", "-f", str(shim)], capture_output=True, text=True, check=False)
    return found.stdout.strip() == ""


def test_separate_instances_win_when_the_model_fits_one_gpu(sim_ollama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An 8B model on two 24 GiB GPUs: spread over both, each token still passes every layer in turn, while
    two instances decode side by side; the layout files are written, one set per instance."""
    shim = sim_ollama("2x24GiB")
    out = tmp_path / "out"
    (out / "ollama.service.d").mkdir(parents=True)
    (out / "server.env").write_text("OLLAMA_SCHED_SPREAD=1\n")  # an earlier run's answer: removed
    assert run_layouts(shim, out, num_predict=48) == 0  # in theory about 20 % ahead at 4 streams
    data = json.loads((out / "layouts.json").read_text())
    assert data["gpus"] == ["GPU-0", "GPU-1"] and [lay["name"] for lay in data["layouts"]] == [
        "spread",
        "2x1",
    ]
    assert data["best"] == "2x1"
    for lay in data["layouts"]:
        assert [lv["concurrency"] for lv in lay["levels"]][:2] == [1, 2]
        assert all(lv["errors"] == 0 for lv in lay["levels"])
    # each instance of the measured layout saw its own GPU and took its settings
    for i in (0, 1):
        log = (out / "logs" / f"2x1-{i}.log").read_text()
        assert gpu_ids(log) == [f"GPU-{i}"]
        assert parse_server_config(log)["OLLAMA_NUM_PARALLEL"] == "2"
    assert gpu_ids((out / "logs" / "spread-0.log").read_text()) == ["GPU-0", "GPU-1"]
    assert parse_server_config((out / "logs" / "spread-0.log").read_text())["OLLAMA_SCHED_SPREAD"] == "true"
    inst = out / "instances"
    envs = [
        dict(x.split("=", 1) for x in (inst / f"instance-{i}.env").read_text().splitlines()) for i in (0, 1)
    ]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["GPU-0", "GPU-1"]
    assert [e["OLLAMA_HOST"] for e in envs] == [f"127.0.0.1:{BASE_PORT}", f"127.0.0.1:{BASE_PORT + 1}"]
    assert all(e["OLLAMA_NUM_PARALLEL"] == "2" for e in envs)
    assert (inst / "ollama@1.service.d" / "autotune.conf").is_file() and (
        inst / "docker-run-flags-1.txt"
    ).is_file()
    assert "2x1 (2 separate instances of 1 GPU each)" in (inst / "LAYOUT.md").read_text()
    assert not (out / "server.env").exists()
    assert (out / "layouts.png").read_bytes()[:4] == b"\x89PNG"
    assert no_server_left(shim)


def test_one_spread_instance_wins_when_the_model_needs_both_gpus(sim_ollama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same model on two 6 GiB GPUs: alone on one, part of it runs on the CPU; spread, all on GPUs."""
    shim = sim_ollama("2x6GiB")
    out = tmp_path / "out"
    (out / "instances").mkdir(parents=True)
    (out / "instances" / "LAYOUT.md").write_text("stale\n")
    assert run_layouts(shim, out, "--json") == 0
    data = json.loads((out / "layouts.json").read_text())
    assert data["best"] == "spread"
    env = dict(x.split("=", 1) for x in (out / "server.env").read_text().splitlines())
    assert env == {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_SCHED_SPREAD": "1"}  # 2 slots x 2 GPUs
    assert not (out / "instances" / "LAYOUT.md").exists()
    assert no_server_left(shim)


def test_one_gpu_has_no_layouts_to_compare(
    sim_ollama, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    shim = sim_ollama("1x24GiB")
    assert run_layouts(shim, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 2 GPUs; the server found 1" in err[0]
    assert no_server_left(shim)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--layouts"], "need --serve"),
        (["--serve", "--layouts", "--parallel", "1,2"], "one --parallel value"),
        (["--serve", "--layouts", "--gpus", "2x24GiB"], "leave out --gpus"),
    ],
)
def test_layout_flags_misused_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve-bench", "llama3.1:8b", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and says in err[0]
