"""Bad input gets one line naming the value and the fix; exit 2 for usage, 1 for runtime failures."""

import importlib.util
import os
import subprocess
import sys

import pytest


def autotune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("TUNER_DEBUG", None) if env is None or "TUNER_DEBUG" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget", "abc"], "--budget 'abc' is not a whole number; use e.g. --budget 40"),
        (["--budget", "0"], "--budget 0 must be at least 1"),
        (["--vram-limit", "20parsecs"], "--vram-limit '20parsecs' is not a size; use e.g. 20GiB"),
        (["--depth", "1.5"], "--depth 1.5 must be at least 0 and below 1"),
        (["--engine", "vllm"], "'vllm' is not one of"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, needle):
    result = autotune("llama3.1:8b", "--host", "http://127.0.0.1:9", *args)
    assert result.returncode == 2
    assert needle in one_line(result)


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None and importlib.util.find_spec("scipy") is not None,
    reason="torch and scipy are installed, so --sampler gp can run",
)
def test_gp_sampler_without_torch_is_a_usage_error():
    result = autotune("llama3.1:8b", "--host", "http://127.0.0.1:9", "--sampler", "gp")
    assert result.returncode == 2
    assert "--sampler gp needs" in one_line(result) and "--sampler tpe" in one_line(result)


def test_unreachable_host_exits_1_with_one_line():
    result = autotune("llama3.1:8b", "--host", "http://127.0.0.1:9", "--budget", "3")
    assert result.returncode == 1
    line = one_line(result)
    assert "Cannot reach Ollama at 'http://127.0.0.1:9'" in line and "--host" in line


def test_debug_shows_the_traceback():
    result = autotune("llama3.1:8b", "--host", "http://127.0.0.1:9", env={"TUNER_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_report_of_an_unknown_study_names_it(tmp_path):
    result = autotune("report", "--study", "nope", "--storage", f"sqlite:///{tmp_path}/x.db")
    assert result.returncode == 2
    assert "No study 'nope'" in one_line(result)
