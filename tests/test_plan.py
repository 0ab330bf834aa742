"""`autotune plan`: the two questions users ask before buying hardware, live and from a saved /api/show."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tuner.cli import main
from tuner.sim import SimServer


def plan(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["plan", *args])
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def sim():
    with SimServer(gpus="1x24GiB", noise=0) as server:
        yield server


def test_gemma3_12b_on_four_8gb_cards_at_128k(sim, capsys) -> None:
    code, out, _ = plan(
        capsys, "gemma3:12b", "--gpus", "4x8GB", "--ctx", "8192,131072", "--host", sim.url, "--json"
    )
    assert code == 0
    data = json.loads(out)
    big = data["contexts"][-1]
    assert big["num_ctx"] == 131072 and big["max_layers"] == 49
    assert big["fully_on_gpu"] and big["num_gpu"] == 49
    assert len(big["vram_per_gpu_bytes"]) == 4 and all(
        b <= f for b, f in zip(big["vram_per_gpu_bytes"], data["free_bytes"])
    )
    assert (
        big["auto"]["num_gpu"] == 0
    )  # Ollama's own estimate gives up and runs it on the CPU (the user story)


def test_deepseek_r1_671b_q8_on_eight_80gb_cards(sim, capsys) -> None:
    code, out, _ = plan(
        capsys,
        "deepseek-r1:671b-q8_0",
        "--gpus",
        "8xA800-80GB",
        "--ctx",
        "4096",
        "--host",
        sim.url,
        "--ollama-version",
        "0.5.7",
    )
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip().startswith("4096"))
    num_gpu = int(row.split()[1].split("/")[0])
    assert 40 <= num_gpu < 51 and "num_gpu 51, FAILS to allocate" in row  # what the user saw, and the fix


def test_offline_from_a_saved_show_response(sim, tmp_path, capsys) -> None:
    show = httpx.post(sim.url + "/api/show", json={"model": "llama3.1:8b"}).json()
    path = tmp_path / "show.json"
    path.write_text(json.dumps(show))
    code, out, _ = plan(capsys, "--show", str(path), "--gpus", "1x12GiB", "--kv", "q8_0", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["kv_cache_type"] == "q8_0" and data["contexts"][0]["fully_on_gpu"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--show", "/nonexistent.json", "--gpus", "1x24GiB"], "--show '/nonexistent.json' cannot be read"),
        (["llama3.1:8b", "--gpus", "3xfloppy", "--host", "http://127.0.0.1:9"], "--gpus '3xfloppy'"),
        (["--gpus", "1x24GiB"], "needs a MODEL"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle) -> None:
    result = subprocess.run([sys.executable, "-m", "tuner", "plan", *args], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
