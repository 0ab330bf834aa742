"""A misbehaving HTTP proxy on loopback, in front of the simulator (or a real Ollama), for the fault suite.

    with FaultProxy(sim.url) as proxy:
        proxy.inject("/api/generate", "reset", times=2, after=3)     # the 4th and 5th generate requests
        autotune ... --host proxy.url

Every request is forwarded unchanged unless a fault matches it (path prefix, and `body_has` in the request
body when given, e.g. "[run " for generations but not loads; skipping the first `after` matches, then
`times` of them):

    trickle   the answer, one byte every `delay_s` (headers included): it never goes silent, it never ends
    silence   the request is read and never answered
    stall     the answer starts (its headers and first line), then nothing more
    hold      the request waits `seconds` (`held` is set meanwhile), then is forwarded: a slow trial to stop
    garbage   200 with a body that is not JSON (a stream's lines too)
    reset     the connection is reset (RST) before any answer
    5xx       HTTP 500 with Ollama's error body (`message`, default a runner crash, not a memory error)
    cut       a streamed answer without its final chunk, as real Ollama ends an aborted generation
    intrude   before forwarding, another client loads `model` with other options (the server changes
              under the trial)
    down      the connection is reset and the proxy stops listening for `seconds` (connection refused),
              then listens again on the same port

`hits` counts the requests per path; `faults_done` the faults applied; `authorizations` the Authorization
headers received.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass
class Fault:
    path: str
    kind: str
    times: int
    after: int
    delay_s: float = 0.2
    seconds: float = 1.0
    message: str = "llama runner process has terminated: exit status 2"
    model: str = ""
    body_has: str = ""
    seen: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a fault, or a server gone at the end of a test: not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        self.server.proxy._open.add(self.connection)  # a server that goes down drops these too

    def finish(self) -> None:
        self.server.proxy._open.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Authorization"):
            proxy.authorizations.append(self.headers["Authorization"])
        fault = proxy._match(self.path, body)
        kind = fault.kind if fault else "pass"
        if kind == "silence":
            proxy._closed.wait()
            self.close_connection = True
            return
        if kind == "hold" and fault is not None:
            proxy.held.set()
            proxy._closed.wait(fault.seconds)
        if kind in ("reset", "down"):
            self._reset()
            if kind == "down" and fault is not None:
                threading.Thread(target=proxy._go_down, args=(fault.seconds,), daemon=True).start()
            return
        if kind == "5xx":
            self._send(500, json.dumps({"error": fault.message if fault else ""}).encode())
            return
        if kind == "garbage":
            self._send(200, b"<html>this is not JSON {{{\n")
            return
        if kind == "intrude" and fault is not None:
            options = {"num_ctx": 2048, "num_gpu": 1}
            httpx.post(
                proxy.upstream + "/api/generate",
                json={"model": fault.model, "prompt": "", "keep_alive": "10m", "options": options},
                timeout=60,
            )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        with httpx.Client(timeout=None) as client:
            request = client.build_request(method, proxy.upstream + self.path, content=body, headers=headers)
            response = client.send(request, stream=True)
            try:
                if response.headers.get("transfer-encoding", "").lower() == "chunked":
                    self._relay_stream(response, kind, fault)
                else:
                    data = response.read()
                    if kind == "trickle" and fault is not None:
                        self._trickle(response.status_code, response.headers, data, fault.delay_s)
                    else:
                        self._send(response.status_code, data, response.headers.get("content-type"))
            finally:
                response.close()

    def _relay_stream(self, response: httpx.Response, kind: str, fault: Fault | None) -> None:
        lines = [line for line in response.iter_lines() if line.strip()]
        if kind == "stall":
            self.send_response(response.status_code)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = lines[0].encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            self.server.proxy._closed.wait()
            self.close_connection = True
            return
        if kind == "cut":
            lines = [line for line in lines if not json.loads(line).get("done")]
        payload = b"".join(line.encode() + b"\n" for line in lines)
        if kind == "trickle" and fault is not None:
            self._trickle(response.status_code, response.headers, payload, fault.delay_s)
            return
        self.send_response(response.status_code)
        self.send_header("Content-Type", response.headers.get("content-type", "application/x-ndjson"))
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = line.encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _trickle(self, status: int, headers: httpx.Headers, data: bytes, delay_s: float) -> None:
        head = f"HTTP/1.1 {status} OK\r\nContent-Type: {headers.get('content-type', 'application/json')}\r\n"
        raw = (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data
        proxy = self.server.proxy
        for i in range(len(raw)):
            if proxy._closed.wait(delay_s):
                break
            try:
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
            except OSError:
                break
        self.close_connection = True

    def _send(self, status: int, data: bytes, content_type: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class FaultProxy:
    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.hits: dict[str, int] = {}
        self.faults_done: list[tuple[str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.down_periods = 0
        self.authorizations: list[str] = []
        self.held = threading.Event()
        self._open: set[socket.socket] = set()  # client connections being served (kept alive)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, path: str, kind: str, *, times: int = 1, after: int = 0, **kw: Any) -> FaultProxy:
        with self._lock:
            self._faults.append(Fault(path, kind, times, after, **kw))
        return self

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _match(self, path: str, body: bytes = b"") -> Fault | None:
        with self._lock:
            key = path.split("?")[0]
            self.hits[key] = self.hits.get(key, 0) + 1
            for fault in self._faults:
                if not path.startswith(fault.path) or fault.times <= 0:
                    continue
                if fault.body_has and fault.body_has.encode() not in body:
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.times -= 1
                self.faults_done.append((key, fault.kind))
                return fault
        return None

    def start(self) -> FaultProxy:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.proxy = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _go_down(self, seconds: float) -> None:
        self.down_periods += 1
        self.stop_listening()
        for conn in list(self._open):  # a server that is down keeps no connection alive either
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        time.sleep(seconds)
        if not self._closed.is_set():
            self.start()

    def close(self) -> None:
        self._closed.set()
        self.stop_listening()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
