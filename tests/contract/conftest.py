"""One Ollama contract, every backend: the simulator and each real Ollama release built here.

Every test in this folder takes `target` and runs once per backend, the way optuna runs one storage suite
against every storage. A target serves the same three models, tiny-llama:f16, :q8_0 and :q4_K_M (one
random-weight llama GGUF in three quantizations): real Ollama imports them with the real `ollama create`,
the simulator through the same HTTP calls that command makes (/api/blobs, then /api/create with files).

Point the suite at your own Ollama with AUTOTUNE_CONTRACT_HOST=http://host:port: the three tiny models
(about 30 MB) are imported into it through the API and deleted afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import ollama
import pytest

from tests.conftest import LONG_MODEL, TEST_PARAMETERS, TINY_MODEL, get_real_ollama, ollama_releases
from tuner.estimate.versions import Version


@dataclass
class Target:
    """One backend under contract."""

    kind: str  # "sim", "ollama" (built here) or "external" (AUTOTUNE_CONTRACT_HOST)
    url: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)  # "q8_0" -> "tiny-llama:q8_0"
    log: Path | None = None  # the server's log, where we run it

    @property
    def era(self) -> str:
        return Version(self.version).era

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.version}"

    def client(self) -> ollama.Client:
        return ollama.Client(host=self.url, timeout=120)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""


def import_through_api(url: str, models: dict[str, Path]) -> dict[str, str]:
    """What `ollama create NAME -f Modelfile` (FROM ./file.gguf) does over HTTP: upload, then create.
    Returns the tiny-llama tags by quantization ("q8_0" -> "tiny-llama:q8_0")."""
    client = ollama.Client(host=url, timeout=300)
    for name, path in models.items():
        client.create(model=name, files={path.name: client.create_blob(path)}, parameters=TEST_PARAMETERS)
    client.close()
    return {n.split(":", 1)[1]: n for n in models if n.startswith(TINY_MODEL + ":")}


def _targets() -> list[object]:
    params: list[object] = []
    for version in ollama_releases():  # the simulator in each release's role, then the release itself
        params.append(pytest.param(f"sim-{version}", id=f"sim-{version}"))
        params.append(pytest.param(f"ollama-{version}", id=f"ollama-{version}", marks=pytest.mark.engine))
    if os.environ.get("AUTOTUNE_CONTRACT_HOST"):
        params.append(pytest.param("external", id="external", marks=pytest.mark.engine))
    return params


@pytest.fixture(scope="session")
def sim_pool() -> Iterator[dict[str, Target]]:
    """Simulators by release, started on first use, stopped at the end of the session."""
    pool: dict[str, Target] = {}
    servers: list[object] = []
    pool["_servers"] = servers  # type: ignore[assignment]
    yield pool
    for server in servers:
        server.stop()  # type: ignore[attr-defined]


def get_sim(version: str, pool: dict[str, Target], models: dict[str, Path]) -> Target:
    from tuner.sim import SimServer

    if version not in pool:
        # No GPU, like the machines the real releases run on here: everything on the CPU.
        # estimator_error 0: the simulator plays the estimator's view of the release, held to the real one.
        sim = SimServer(
            gpus=[], host_ram="24GiB", version=version, seed=0, noise=0, estimator_error=0, local="none"
        ).start()
        pool["_servers"].append(sim)  # type: ignore[attr-defined]
        pool[version] = Target("sim", sim.url, version, import_through_api(sim.url, models))
    return pool[version]


@pytest.fixture(scope="session")
def external_target(served_models: dict[str, Path]) -> Iterator[Target]:
    url = os.environ["AUTOTUNE_CONTRACT_HOST"].rstrip("/")
    version = httpx.get(url + "/api/version", timeout=10).json()["version"]
    yield Target("external", url, version, import_through_api(url, served_models))
    client = ollama.Client(host=url)
    for name in served_models:
        client.delete(name)
    client.close()


@pytest.fixture(scope="session", params=_targets())
def target(
    request: pytest.FixtureRequest,
    served_models: dict[str, Path],
    real_ollama_pool: dict,
    real_ollama_base: Path,
    sim_pool: dict[str, Target],
) -> Target:
    kind = request.param
    if kind.startswith("sim-"):
        return get_sim(kind.split("-", 1)[1], sim_pool, served_models)
    if kind == "external":
        return request.getfixturevalue("external_target")
    version = kind.split("-", 1)[1]
    real = get_real_ollama(version, real_ollama_pool, real_ollama_base, served_models)
    return Target("ollama", real.url, version, dict(real.tags), real.server.log_path)


@pytest.fixture
def long_context_model(target: Target) -> str:
    return LONG_MODEL


@pytest.fixture
def client(target: Target) -> Iterator[ollama.Client]:
    c = target.client()
    try:
        _unload(c)
        yield c
        _unload(c)
    finally:
        c.close()


@pytest.fixture
def http(target: Target) -> Iterator[httpx.Client]:
    with target.http() as h:
        yield h


def _unload(c: ollama.Client, timeout_s: float = 30.0) -> None:
    """Unload everything and wait until /api/ps is empty (a model being unloaded, or deleted while
    loaded, can still be listed for a moment and no longer be found by name)."""
    deadline = time.monotonic() + timeout_s
    while models := c.ps().models:
        for m in models:
            try:
                c.generate(model=m.model or "", prompt="", keep_alive=0)
            except ollama.ResponseError:
                pass
        assert time.monotonic() < deadline, f"still loaded after {timeout_s} s: {models}"
        time.sleep(0.05)
