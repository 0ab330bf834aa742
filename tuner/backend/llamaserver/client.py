"""HTTP to one running llama-server, through httpx: GET /health and the streamed POST /completion.

The server is a local process on loopback, so the client ignores proxy settings from the environment
(trust_env=False). Errors the server sends are turned into BackendErrors by the `error` callback the
backend passes in (it knows the process and its log); transport errors propagate as httpx exceptions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tuner.errors import BackendError, BadResponse

HEALTH_TIMEOUT_S = 5.0


def make_client(base_url: str, timeout_s: float) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=timeout_s, trust_env=False)


def health(http: httpx.Client) -> int | None:
    """The status of GET /health (200 once the model is loaded), or None when nothing answers."""
    try:
        return http.get("/health", timeout=HEALTH_TIMEOUT_S).status_code
    except httpx.HTTPError:
        return None


@dataclass(frozen=True)
class Completion:
    final: dict[str, Any] | None  # the last chunk (stop: true), which carries the engine's timings
    text: str
    ttft_s: float | None  # wall clock from the request to the first chunk with a token
    total_s: float


def stream_completion(
    http: httpx.Client, body: dict[str, Any], error: Callable[[int, str], BackendError]
) -> Completion:
    """POST /completion with `"stream": true` and read its server-sent events until the final chunk.

    An HTTP status other than 200, or an "error" chunk, raises error(status, message body)."""
    start = time.monotonic()
    ttft: float | None = None
    text: list[str] = []
    final: dict[str, Any] | None = None
    with http.stream("POST", "/completion", json=body) as resp:
        if resp.status_code != 200:
            raise error(resp.status_code, resp.read().decode(errors="replace"))
        for raw in resp.iter_lines():
            line = raw.strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except ValueError as exc:
                raise BadResponse(
                    f"llama-server sent a stream chunk that is not JSON: {payload[:200]!r}"
                ) from exc
            if "error" in chunk:
                raise error(500, json.dumps(chunk["error"]))
            if ttft is None and (chunk.get("tokens") or chunk.get("content")):
                ttft = time.monotonic() - start
            text.append(chunk.get("content", ""))
            if chunk.get("stop"):
                final = chunk
                break
    return Completion(final, "".join(text), ttft, time.monotonic() - start)


def post_json(
    http: httpx.Client, path: str, body: dict[str, Any], error: Callable[[int, str], BackendError]
) -> dict[str, Any]:
    """POST `path` without streaming and return its JSON object; another status raises error(status, body)."""
    resp = http.post(path, json=body)
    if resp.status_code != 200:
        raise error(resp.status_code, resp.text)
    try:
        data = resp.json()
    except ValueError as exc:
        raise BadResponse(
            f"llama-server answered {path} with something that is not JSON: {resp.text[:200]!r}"
        ) from exc
    if not isinstance(data, dict):
        raise BadResponse(f"llama-server answered {path} with {type(data).__name__}, not an object.")
    return data
