"""LlamaServerBackend's whole protocol (spawn, /health, log parsing, the streamed /completion over httpx,
restart, teardown) against a stand-in llama-server (fake_llama_server.py), so it runs without an engine."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tuner.backend.base import Backend, EngineOptions
from tuner.backend.llamaserver import LlamaServerBackend
from tuner.errors import BackendError, BadResponse, OutOfMemory
from tuner.units import MiB

SCRIPT = Path(__file__).with_name("fake_llama_server.py")
OPTIONS = EngineOptions(num_gpu=4, num_ctx=2048)


def fake_backend(tmp_path: Path, mode: str = "ok") -> LlamaServerBackend:
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{SCRIPT}' \"$@\"\n")
    binary.chmod(0o755)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    env = {"PATH": "/usr/bin:/bin", "FAKE_LLAMA_MODE": mode}
    return LlamaServerBackend(binary, log_dir=tmp_path / "logs", env=env, startup_timeout_s=60)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_load_residency_generate_and_unload(tmp_path: Path) -> None:
    backend = fake_backend(tmp_path)
    model = str(tmp_path / "m.gguf")
    try:
        assert isinstance(backend, Backend)
        assert backend.server_info().version == "0.0.1-fake (build 1, commit fake)"
        assert backend.load(model, OPTIONS) > 0
        argv = " ".join(backend.command_line or [])
        assert "-ngl 4 --fit off" in argv and "--no-webui" in argv and "--cache-ram 0" in argv
        res = backend.residency(model)
        assert res is not None and res.layers_offloaded == 4 and res.context_length == 2048
        assert (
            res.size_vram_bytes == round((8 + 2 + 4) * MiB)
            and res.size_bytes == res.size_vram_bytes + 10 * MiB
        )

        g = backend.generate(model, "hello", OPTIONS, num_predict=5)
        assert (g.eval_tokens, g.prompt_tokens, g.text) == (5, 5, "ttttt")
        assert g.eval_s == pytest.approx(0.02) and g.prompt_s == pytest.approx(0.01)
        assert 0 < g.ttft_s <= g.total_s

        first_pid, port = backend.pid, backend._running.port  # noqa: SLF001 - checked after the restart
        other = EngineOptions(num_gpu=9, num_ctx=4096)
        assert backend.generate(model, "hi", other, num_predict=2).eval_tokens == 2  # loads on demand
        assert backend.pid != first_pid and backend.residency(model).context_length == 4096  # type: ignore[union-attr]
        assert _port_free(port)
    finally:
        backend.close()
    assert backend.pid is None and (tmp_path / "logs").is_dir()  # a log folder passed in is kept


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("oom-http", OutOfMemory, "cudaMalloc failed: out of memory"),
        ("error-chunk", BadResponse, "slot unavailable"),
        ("no-timings", BadResponse, "without the final chunk"),
        ("die", OutOfMemory, "died while generating"),
    ],
)
def test_generation_failures_are_named(
    tmp_path: Path, mode: str, error: type[BackendError], words: str
) -> None:
    backend = fake_backend(tmp_path, mode)
    model = str(tmp_path / "m.gguf")
    try:
        with pytest.raises(error, match=words):
            backend.generate(model, "hello", OPTIONS, num_predict=3)
    finally:
        backend.close()
