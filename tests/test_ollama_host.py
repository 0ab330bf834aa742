"""--host and OLLAMA_HOST are read exactly as Ollama's own client reads them; credentials become HTTP basic
auth and are never part of the URL that is shown or stored."""

from __future__ import annotations

import base64

import pytest

from tests.faultproxy import FaultProxy
from tuner.backend.ollama import OllamaBackend, host_credentials, resolve_host
from tuner.sim import SimServer


@pytest.mark.parametrize(
    ("given", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        ("http://gpu-box", "http://gpu-box:80"),
        ("https://gpu-box", "https://gpu-box:443"),  # not 11434: the bug
        ("https://gpu-box:8443", "https://gpu-box:8443"),
        ("gpu-box/ollama/", "http://gpu-box:11434/ollama"),  # a path behind a reverse proxy
        ("https://gpu-box/ollama", "https://gpu-box:443/ollama"),
        ("[::1]", "http://[::1]:11434"),  # IPv6 keeps its brackets and gets the port
        ("[::1]:8080", "http://[::1]:8080"),
        ("http://[fe80::1]/x", "http://[fe80::1]:80/x"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        (":11500", "http://127.0.0.1:11500"),
        ("http://tuner:pw@gpu-box:8080", "http://gpu-box:8080"),  # credentials never in the URL
    ],
)
def test_host_forms_users_write(monkeypatch, given, url):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_host(given) == url


def test_ollama_host_is_used_when_no_host_is_given(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")  # how `ollama serve` is often told to listen everywhere
    assert resolve_host(None) == "http://0.0.0.0:11434"
    assert resolve_host("gpu-box") == "http://gpu-box:11434"  # --host wins


def test_credentials_are_sent_as_basic_auth_and_never_shown(monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert host_credentials("http://tuner:p%40ss@gpu-box") == ("tuner", "p@ss")
    assert host_credentials("gpu-box:8080") is None
    with SimServer(gpus="1x24GiB") as sim, FaultProxy(sim.url) as proxy:
        host = proxy.url.replace("http://", "http://tuner:planted-pw@")
        backend = OllamaBackend(host)
        try:
            info = backend.server_info()
            backend.list_models()
        finally:
            backend.close()
    assert info.host == proxy.url and "planted" not in info.host
    expected = "Basic " + base64.b64encode(b"tuner:planted-pw").decode()
    assert proxy.authorizations and set(proxy.authorizations) == {expected}
