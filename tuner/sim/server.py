"""The HTTP layer: a real Ollama-compatible server on loopback (stdlib ThreadingHTTPServer, HTTP/1.1,
chunked NDJSON for streams, Content-Length otherwise).

    with SimServer(gpus="2x24GiB", host_ram="64GiB", seed=0, local="all") as sim:
        client = ollama.Client(host=sim.url)

Simulated durations are reported, not slept, unless realtime=True.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tuner.hardware import GpuSpec
from tuner.sim.api import Api
from tuner.sim.core import Interference, Simulation
from tuner.sim.power import Throttle, parse_drift
from tuner.sim.registry import Registry
from tuner.sim.reply import Reply
from tuner.sim.scheduler import Scheduler
from tuner.sim.slots import MAX_QUEUE_DEFAULT

ROUTES: dict[str, dict[str, str]] = {
    "/": {"GET": "root", "HEAD": "root"},
    "/api/version": {"GET": "version", "HEAD": "version"},
    "/api/tags": {"GET": "tags", "HEAD": "tags"},
    "/api/ps": {"GET": "ps"},
    "/api/generate": {"POST": "generate"},
    "/api/chat": {"POST": "chat"},
    "/api/show": {"POST": "show"},
    "/api/pull": {"POST": "pull"},
    "/api/create": {"POST": "create"},
    "/api/delete": {"DELETE": "delete"},
    "/api/copy": {"POST": "copy"},
    "/sim/state": {"GET": "sim_state"},
    "/sim/reset": {"POST": "sim_reset"},
    "/sim/interference": {"POST": "sim_interference"},
    "/sim/power": {"POST": "sim_power"},
}
NO_BODY = {"root", "version", "tags", "ps", "sim_state", "sim_reset"}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "Ollama-sim"
    sys_version = ""
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        body = self._read_body()  # always consumed, so a keep-alive connection stays in step
        methods = ROUTES.get(path)
        if path.startswith("/api/blobs/") and method in ("HEAD", "POST"):
            digest = path[len("/api/blobs/") :]
            api = self.server.api
            reply = api.blob_head(digest) if method == "HEAD" else api.blob_post(digest, body)
        elif methods is None:
            reply = Reply(404, "404 page not found")
        elif method not in methods:
            reply = Reply(405, "405 method not allowed")
        else:
            reply = self.server.call(methods[method], body)
        try:
            self._send(reply, head=method == "HEAD")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, reply: Reply, head: bool) -> None:
        realtime = self.server.realtime
        if reply.lines is not None:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if head:
                return
            chunks = []
            for i, line in enumerate(reply.lines):
                data = _dumps(line) + b"\n"
                chunk = f"{len(data):x}\r\n".encode() + data + b"\r\n"
                if realtime:
                    if i < len(reply.sleeps):
                        self.server.sleep(reply.sleeps[i])
                    self.wfile.write(chunk)
                    self.wfile.flush()
                else:
                    chunks.append(chunk)
            self.wfile.write(b"".join(chunks) + b"0\r\n\r\n")
            return
        if realtime and reply.sleeps:
            self.server.sleep(sum(reply.sleeps))
        if isinstance(reply.body, (dict, list)):
            data, ctype = _dumps(reply.body), "application/json; charset=utf-8"
        elif isinstance(reply.body, str):
            data, ctype = reply.body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = b"", ""
        self.send_response(reply.status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head and data:
            self.wfile.write(data)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], api: Api, realtime: bool, sleep: Callable[[float], None]
    ) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.realtime = realtime
        self.sleep = sleep
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conn_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def call(self, name: str, body: bytes) -> Reply:
        if name == "root":
            return Reply(200, "Ollama is running")
        handler = getattr(self.api, name)
        try:
            return handler() if name in NO_BODY else handler(body)
        except Exception as exc:  # noqa: BLE001 - a bug in the simulator must not kill the connection
            return Reply(500, {"error": f"simulator error: {type(exc).__name__}: {exc}"})


class SimServer:
    """An Ollama-compatible server with simulated GPUs, served from a background thread."""

    def __init__(
        self,
        gpus: str | list[GpuSpec] = "1x24GiB",
        host_ram: str | int | None = None,
        host_bandwidth: float | None = None,
        version: str = "0.12.10",
        num_parallel: int = 1,
        max_queue: int = MAX_QUEUE_DEFAULT,
        seed: int = 0,
        machine: str = "sim",  # which simulated machine: its cards' UUIDs (/sim/state details)
        noise: float = 0.02,
        estimator_error: float = 1.0,
        memory_truth: str = "estimator",
        interference: Interference | str | None = None,
        local: str | list[str] = "all",
        realtime: bool = False,
        port: int = 0,
        bind: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        concurrent: bool | None = None,
        inject_throttle: Sequence[str] = (),
        inject_drift: float = 0.0,
        host_cores: int | None = None,
    ) -> None:
        self.simulation = Simulation(
            gpus,
            None,
            version,
            num_parallel,
            seed,
            noise,
            host_ram=host_ram,
            host_bandwidth=host_bandwidth,
            host_cores=host_cores,
            estimator_error=estimator_error,
            memory_truth=memory_truth,
        )
        if interference is not None:
            self.simulation.interference = (
                Interference.parse(interference) if isinstance(interference, str) else interference
            )
        power = self.simulation.power
        power.wall, power.realtime = clock, realtime  # idle between requests is simulated time too
        power.throttles = [Throttle.parse(t) for t in inject_throttle]
        power.drift_pct_per_hour = parse_drift(inject_drift)
        self.scheduler = Scheduler(self.simulation, max_queue)
        self.registry = Registry(local, clock())
        self.api = Api(self.scheduler, self.registry, clock, realtime if concurrent is None else concurrent)
        self.api.machine = machine
        self._address = (bind, int(port))
        self._realtime = realtime
        self._sleep = sleep
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("SimServer is not running; call start() or use it as a context manager.")
        host, port = self._httpd.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> SimServer:
        if self._httpd is None:
            self._httpd = _HttpServer(self._address, self.api, self._realtime, self._sleep)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="ollama-sim",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.api.blobs.close()
        self._httpd = None
        self._thread = None

    def interfere(self, interference: Interference | str) -> None:
        """Inject (or, with Interference(), end) a simulated neighbour: what POST /sim/interference does."""
        with self.scheduler.lock:
            self.simulation.interference = (
                Interference.parse(interference) if isinstance(interference, str) else interference
            )

    def state(self) -> dict[str, Any]:
        """What GET /sim/state returns, without HTTP."""
        reply = self.api.sim_state()
        return reply.body

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
