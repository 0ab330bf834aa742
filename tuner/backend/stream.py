"""One streaming /api/generate request, timed chunk by chunk on the client: what a load test needs.

The official `ollama` client hides when each chunk arrives; here httpx reads the NDJSON lines itself and
stamps them with an injected clock. Errors never raise: a load test counts them (an HTTP status such as
503 "server busy", an `{"error": ...}` line mid-stream, a refused connection or a timeout).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class StreamRecord:
    """Client-side times (seconds on the injected clock) of one streamed request."""

    sent_s: float
    first_token_s: float | None  # the first chunk with non-empty text (AIPerf skips empty ones)
    done_s: float | None  # the final chunk (done: true)
    output_tokens: int  # eval_count of the final chunk, else the number of non-empty chunks
    chunk_times_s: tuple[float, ...] = field(default=())  # arrival of each non-empty chunk
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.done_s is not None


class OllamaStreamer:
    """POST /api/generate with stream: true; one client shared by every worker thread."""

    def __init__(
        self,
        host: str,
        *,
        timeout_s: float = 600.0,
        clock: Callable[[], float] = time.perf_counter,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.clock = clock
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
            transport=transport,
        )

    def generate(
        self, model: str, prompt: str, options: dict[str, Any], keep_alive: str = "5m"
    ) -> StreamRecord:
        body = {
            "model": model,
            "prompt": prompt,
            "stream": True,
            "options": options,
            "keep_alive": keep_alive,
        }
        sent = self.clock()
        chunks: list[float] = []
        first: float | None = None
        try:
            with self._client.stream("POST", self.host + "/api/generate", json=body) as resp:
                if resp.status_code != 200:
                    text = resp.read().decode(errors="replace")
                    return StreamRecord(sent, None, None, 0, (), f"HTTP {resp.status_code}: {_message(text)}")
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    now = self.clock()
                    obj = json.loads(line)
                    if "error" in obj:
                        return StreamRecord(sent, first, None, len(chunks), tuple(chunks), str(obj["error"]))
                    if obj.get("response") or obj.get("thinking"):
                        chunks.append(now)
                        first = now if first is None else first
                    if obj.get("done"):
                        count = int(obj.get("eval_count") or len(chunks))
                        return StreamRecord(sent, first, now, count, tuple(chunks))
        except httpx.HTTPError as exc:
            return StreamRecord(sent, first, None, len(chunks), tuple(chunks), f"{type(exc).__name__}: {exc}")
        except ValueError as exc:
            return StreamRecord(sent, first, None, len(chunks), tuple(chunks), f"bad NDJSON line: {exc}")
        return StreamRecord(sent, first, None, len(chunks), tuple(chunks), "stream ended before done: true")

    def close(self) -> None:
        self._client.close()


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("error", text)).strip()
    except (ValueError, AttributeError):
        return text.strip()[:200]
