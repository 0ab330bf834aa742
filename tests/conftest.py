"""Fixtures shared by every test that runs a real engine (marked `engine`).

    engine_model_dir     session: where generated test models are cached ($AUTOTUNE_TEST_MODELS, else the
                         pytest cache: .pytest_cache/d/autotune-models)
    tiny_models          session: {"F16": path, "Q8_0": path} random-weight llama GGUFs (~14 and ~8 MB)
    tiny_quants          session: {"f16": path, "q8_0": path, "q4_K_M": path} of one random-weight model,
                         Q8_0 and Q4_K_M made from the F16 by the built llama-quantize (as users make them)
    quality_quants       session: {"f16", "q8_0", "q4_0"} of the same model, for the quality measure
    ollama_release       session, per release: a real `ollama serve` (built by `python -m tuner.engines build
                         ollama`) on a free loopback port with its own model store, the tiny models imported
                         by the real `ollama create` as tiny-llama:f16 / :q8_0 / :q4_K_M

`require_engine(what, why)` skips a test whose engine is not built, and fails it instead where the engines
must be there: in CI (AUTOTUNE_REQUIRE_ENGINE=1), so missing engines can never pass as skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tuner.backend.ollamaserve import ManagedOllama
from tuner.ggufgen import ensure_model

TINY_TYPES = ("F16", "Q8_0")
TINY_TAGS = ("f16", "q8_0", "q4_K_M")  # tiny-llama:<tag>, lightest last
TINY_MODEL = "tiny-llama"
LONG_MODEL = "tiny-llama-long:q8_0"  # the tiny model with a 16M-token trained context (host-memory failures)
# Baked into every test model: one CPU thread. With a thread per core, a busy neighbour on a 2-core machine
# stalls llama.cpp's thread barrier: a 256-token generation of the tiny model took 2-3 minutes instead of 1 s
# under a load average of 8. autotune itself never sets num_thread.
TEST_PARAMETERS = {"num_thread": 1}


def require_engine(what: str, why: str) -> None:
    """Skip, or fail where engines are required (AUTOTUNE_REQUIRE_ENGINE=1)."""
    message = f"{what} is not available: {why}"
    if os.environ.get("AUTOTUNE_REQUIRE_ENGINE") == "1":
        pytest.fail(message + " (AUTOTUNE_REQUIRE_ENGINE=1: the engines must be built here)")
    pytest.skip(message)


def ollama_releases() -> tuple[str, ...]:
    """The releases the real-Ollama tests run against ($AUTOTUNE_OLLAMA_RELEASES, else every era's pin)."""
    from tuner.installs import ERA_RELEASES, ollama_release

    text = os.environ.get("AUTOTUNE_OLLAMA_RELEASES", "")
    if text.strip():
        return tuple(ollama_release(v.strip()) for v in text.split(",") if v.strip())
    return tuple(ERA_RELEASES.values())


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


def llama_quantize() -> Path | None:
    from tuner.installs import find_llama_cpp

    env = os.environ.get("LLAMA_QUANTIZE")
    if env:
        return Path(env)
    inst = find_llama_cpp(tool="llama-quantize")
    if inst is not None:
        return inst.binary("llama-quantize")
    found = shutil.which("llama-quantize")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def tiny_quants(engine_model_dir: Path) -> dict[str, Path]:
    """One random-weight tiny model as f16 (generated), q8_0 and q4_K_M (llama-quantize, as users do)."""
    return quantized_tiny(engine_model_dir, TINY_TAGS[1:])


@pytest.fixture(scope="session")
def quality_quants(engine_model_dir: Path) -> dict[str, Path]:
    """The same model as f16, q8_0 and q4_0: the quantizations the quality measure must rank."""
    return quantized_tiny(engine_model_dir, ("q8_0", "q4_0"))


def quantized_tiny(engine_model_dir: Path, tags: tuple[str, ...]) -> dict[str, Path]:
    f16 = ensure_model(engine_model_dir, "tiny", "F16", seed=0)
    out = {"f16": f16}
    quantize = llama_quantize()
    for tag in tags:
        path = f16.with_name(f16.name.replace("-F16-", f"-{tag.upper()}-"))
        if not path.is_file():
            if quantize is None:
                require_engine("llama-quantize", "run 'python -m tuner.engines build llama-server'")
                raise AssertionError("unreachable")
            tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
            proc = subprocess.run(
                [str(quantize), str(f16), str(tmp), tag.upper()], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise AssertionError(f"llama-quantize {tag} failed: {proc.stderr[-800:]}")
            tmp.replace(path)
        out[tag] = path
    return out


@pytest.fixture(scope="session")
def served_models(tiny_quants: dict[str, Path], engine_model_dir: Path) -> dict[str, Path]:
    """Every model a test server holds, by Ollama name: tiny-llama:<tag> and tiny-llama-long:q8_0."""
    models = {f"{TINY_MODEL}:{tag}": path for tag, path in tiny_quants.items()}
    models[LONG_MODEL] = ensure_model(engine_model_dir, "tiny-longctx", "Q8_0", seed=0)
    return models


@dataclass
class RealOllama:
    """A running real Ollama with the tiny models imported."""

    version: str
    server: ManagedOllama
    tags: dict[str, str] = field(default_factory=dict)  # "q8_0" -> "tiny-llama:q8_0"
    model_files: dict[str, Path] = field(default_factory=dict)  # by Ollama name

    @property
    def url(self) -> str:
        return self.server.url


def start_real_ollama(version: str, base: Path, models: dict[str, Path]) -> RealOllama:
    from tuner.installs import find_ollama

    inst = find_ollama(version)
    if inst is None:
        require_engine(f"Ollama {version}", f"run 'python -m tuner.engines build ollama --version {version}'")
        raise AssertionError("unreachable")
    folder = base / f"ollama-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    server = ManagedOllama(
        inst.binary("ollama"),
        models_dir=folder / "models",
        log_path=folder / "serve.log",
        env={"OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_LOADED_MODELS": "1"},
    ).start()
    real = RealOllama(version=version, server=server)
    try:
        for name, path in models.items():
            local = folder / path.name
            if not local.exists():
                local.symlink_to(path)
            params = "".join(f"PARAMETER {k} {v}\n" for k, v in TEST_PARAMETERS.items())
            server.create(name, f"FROM ./{path.name}\n{params}", cwd=folder)
            real.model_files[name] = path
            if name.startswith(TINY_MODEL + ":"):
                real.tags[name.split(":", 1)[1]] = name
    except BaseException:
        server.stop()
        raise
    return real


_REAL: dict[str, RealOllama] = {}


@pytest.fixture(scope="session")
def real_ollama_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RealOllama]]:
    """Started servers by release, shared by the whole session, stopped at its end."""
    yield _REAL
    for real in _REAL.values():
        real.server.stop()
    _REAL.clear()


@pytest.fixture(scope="session")
def real_ollama_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-ollama")


def get_real_ollama(
    version: str, pool: dict[str, RealOllama], base: Path, models: dict[str, Path]
) -> RealOllama:
    real = pool.get(version)
    if real is None or real.server.pid is None:
        real = pool[version] = start_real_ollama(version, base, models)
    return real
