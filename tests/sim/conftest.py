"""Fixtures for the simulator tests: real SimServers on loopback, driven through the official ollama client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import ollama
import pytest

from tuner.sim import SimServer


@pytest.fixture
def make_server() -> Iterator[Callable[..., SimServer]]:
    """Start a SimServer with the given options; stopped after the test.

    Noise 0 and no hidden estimator error unless said otherwise: these tests check Ollama's own behaviour.
    """
    servers: list[SimServer] = []

    def make(**kwargs: Any) -> SimServer:
        kwargs.setdefault("noise", 0)
        kwargs.setdefault("estimator_error", 0)
        kwargs.setdefault("seed", 0)
        server = SimServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[[SimServer], ollama.Client]]:
    clients: list[ollama.Client] = []

    def make(server: SimServer) -> ollama.Client:
        client = ollama.Client(host=server.url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    """Two 24 GiB cards, every catalog tag local, noise-free. Reset before each test that uses `client`."""
    with SimServer(gpus="2x24GiB", host_ram="64GiB", seed=0, noise=0, local="all") as sim:
        yield sim


@pytest.fixture
def client(server: SimServer) -> Iterator[ollama.Client]:
    httpx.post(server.url + "/sim/reset").raise_for_status()
    c = ollama.Client(host=server.url)
    yield c
    c.close()


@pytest.fixture
def raw(server: SimServer) -> Iterator[httpx.Client]:
    """Plain HTTP, for what the client hides (omitted fields, text bodies, status codes)."""
    with httpx.Client(base_url=server.url) as http:
        yield http
