"""Fixtures for tests that run llama.cpp's llama-server (marked `engine`); the shared ones (engine_model_dir,
tiny_models, ...) are in tests/conftest.py.

    llama_server_binary   session: the llama-server to test (LLAMA_SERVER, PATH, or the
                          `python -m tuner.engines build llama-server` cache); skips ONLY when none exists
                          (fails instead with AUTOTUNE_REQUIRE_ENGINE=1 or a wrong LLAMA_SERVER)
    llama_backend         function: a LlamaServerBackend on that binary, one CPU thread (CPU_TEST_ARGS),
                          logs under tmp_path, closed after

An end-to-end study test can take `llama_backend` and `tiny_models` and pass the two paths as tags.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner.backend.llamaserver import LlamaServerBackend, find_binary
from tuner.errors import ConfigError

# One thread for generation and for the prompt. With llama.cpp's default (a thread per core), one busy
# neighbour process on a 2-core CI machine stalls its thread barrier: decode speed of the tiny models
# then swung 10x between repeats; with one thread it stayed within 1.5x of the median under the same load.
CPU_TEST_ARGS = ("--threads", "1", "--threads-batch", "1")


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """Skips only when no llama-server is configured or found; a wrong LLAMA_SERVER fails, and so does a
    missing one when AUTOTUNE_REQUIRE_ENGINE=1 (CI, after its build step)."""
    try:
        return find_binary()
    except ConfigError as exc:
        if os.environ.get("LLAMA_SERVER") or os.environ.get("AUTOTUNE_REQUIRE_ENGINE") == "1":
            pytest.fail(f"llama-server required but unusable: {exc}")
        pytest.skip(f"no llama-server to test: {exc}")


@pytest.fixture
def llama_backend(llama_server_binary: Path, tmp_path: Path) -> Iterator[LlamaServerBackend]:
    backend = LlamaServerBackend(
        llama_server_binary, log_dir=tmp_path / "llama-server-logs", startup_timeout_s=120
    )
    try:
        yield backend
    finally:
        backend.close()
