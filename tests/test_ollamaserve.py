"""ManagedOllama's process handling, with a stand-in `ollama` (tests.fakeollama: a script that serves /api/version)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fakeollama import write_fake_ollama
from tuner.backend.ollamaserve import ManagedOllama
from tuner.errors import BackendError, ConfigError, Unreachable


@pytest.fixture
def fake_ollama(tmp_path: Path) -> Path:
    return write_fake_ollama(tmp_path / "ollama")


def test_starts_on_a_private_port_with_its_own_store_and_stops_by_pid(
    fake_ollama: Path, tmp_path: Path
) -> None:
    server = ManagedOllama(fake_ollama, models_dir=tmp_path / "store", env={"OLLAMA_NUM_PARALLEL": "2"})
    with server:
        assert server.url.startswith("http://127.0.0.1:") and server.pid is not None
        pid = server.pid
        env = __import__("json").loads((tmp_path / "store" / "env.json").read_text())
        assert env["OLLAMA_MODELS"] == str(tmp_path / "store") and env["OLLAMA_NUM_PARALLEL"] == "2"
        assert env["OLLAMA_HOST"] == f"127.0.0.1:{server.port}"
        assert (
            server.cli("create", "m:1", "-f", "x").strip() == f"cli create m:1 -f x 127.0.0.1:{server.port}"
        )
        with pytest.raises(BackendError, match="'ollama fail' failed \\(exit 3\\)"):
            server.cli("fail")
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_binary_that_is_not_there_or_does_not_serve(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not an executable file"):
        ManagedOllama(tmp_path / "nothing", models_dir=tmp_path / "s")
    broken = tmp_path / "ollama"
    broken.write_text("#!/bin/sh\necho 'Error: listen tcp: bind: permission denied'; exit 1\n")
    broken.chmod(0o755)
    with pytest.raises(
        Unreachable, match=r"(?s)serve' exited \(code 1\) before answering.*permission denied"
    ):
        ManagedOllama(broken, models_dir=tmp_path / "s", startup_timeout_s=5).start()


def test_the_server_dies_with_the_process_that_started_it(fake_ollama: Path, tmp_path: Path) -> None:
    """SIGKILL the parent: the server must not outlive it (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":
        pytest.skip("the parent-death signal is Linux's")
    script = textwrap.dedent(
        f"""\
        import sys, time
        from tuner.backend.ollamaserve import ManagedOllama
        s = ManagedOllama({str(fake_ollama)!r}, models_dir={str(tmp_path / "store")!r}).start()
        print(s.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=30)
    parent.stdout.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the server outlived the process that started it")
