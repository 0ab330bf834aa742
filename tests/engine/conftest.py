"""Fixtures for tests that run llama.cpp's llama-server (marked `engine`), reusable by any engine test.

    llama_server_binary   session: the llama-server to test (LLAMA_SERVER, PATH, or the
                          `python -m tuner.llamacpp build` cache); skips ONLY when none exists
                          (fails instead with AUTOTUNE_REQUIRE_ENGINE=1 or a wrong LLAMA_SERVER)
    engine_model_dir      session: where generated test models are cached ($AUTOTUNE_TEST_MODELS,
                          else the pytest cache: .pytest_cache/d/autotune-models)
    tiny_models           session: {"F16": path, "Q8_0": path} random-weight llama models (~14 and ~8 MB)
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
from tuner.ggufgen import ensure_model

TINY_TYPES = ("F16", "Q8_0")
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


@pytest.fixture(scope="session")
def engine_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("AUTOTUNE_TEST_MODELS")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    return Path(cache.mkdir("autotune-models")) if cache is not None else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_models(engine_model_dir: Path) -> dict[str, str]:
    return {t: str(ensure_model(engine_model_dir, "tiny", t, seed=0)) for t in TINY_TYPES}


@pytest.fixture
def llama_backend(llama_server_binary: Path, tmp_path: Path) -> Iterator[LlamaServerBackend]:
    backend = LlamaServerBackend(
        llama_server_binary, log_dir=tmp_path / "llama-server-logs", startup_timeout_s=120
    )
    try:
        yield backend
    finally:
        backend.close()
