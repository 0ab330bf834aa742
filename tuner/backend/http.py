"""HTTP limits that hold against a server that trickles, goes silent or never answers.

httpx's read timeout restarts with every byte received, so a server that sends one byte every 30 s never
trips it, and it cannot tell the long wait for a model to load (nothing is sent until it is loaded) from a
stall in the middle of an answer. Here every read of the socket is bounded by the window the caller opened:

    with limits("the load", first_byte_s=3600, between_bytes_s=120):      # one request, or a few
        client.generate(...)
    with deadline("the trial", 14400, "--trial-timeout"):                 # around a whole trial
        ...

    first byte      the wait for the answer to start (the load, or a deep prompt's processing)
    between bytes   once it has started, the longest silence
    deadline        an absolute time (the window's own total and the enclosing trial's), past which no read
                    is allowed: a trickle cannot stretch a request forever

A read past a limit raises httpx.ReadTimeout naming the limit and its option (the backend turns it into
BackendTimeout). The limits travel in context variables, so they apply to the thread that opened them:
the probe's sampler thread is not affected. `limited_transport()` is the httpx transport that enforces
them; without an open window a read gets the client's own timeout.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import time
import typing
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import httpcore
import httpx


@dataclass
class _Window:
    what: str
    first_byte_s: float
    between_bytes_s: float
    deadline: float  # time.monotonic(); inf for none
    total_s: float
    first_flag: str
    between_flag: str
    started: bool = field(default=False)


@dataclass(frozen=True)
class _Deadline:
    what: str
    at: float
    flag: str
    seconds: float


_WINDOW: ContextVar[_Window | None] = ContextVar("autotune_http_window", default=None)
_DEADLINE: ContextVar[_Deadline | None] = ContextVar("autotune_http_deadline", default=None)


@contextlib.contextmanager
def limits(
    what: str,
    *,
    first_byte_s: float,
    between_bytes_s: float,
    total_s: float = float("inf"),
    first_flag: str = "",
    between_flag: str = "--read-timeout",
) -> Iterator[None]:
    """Bound every socket read in the block: the first byte within `first_byte_s`, then at most
    `between_bytes_s` of silence, nothing after `total_s` (nor after an enclosing deadline)."""
    window = _Window(
        what, first_byte_s, between_bytes_s, time.monotonic() + total_s, total_s, first_flag, between_flag
    )
    token = _WINDOW.set(window)
    try:
        yield
    finally:
        _WINDOW.reset(token)


@contextlib.contextmanager
def deadline(what: str, seconds: float, flag: str, *, at: float | None = None) -> Iterator[None]:
    """No read in the block goes past `seconds` from now, or past `at` (time.monotonic()) when given: the
    whole-trial limit, `flag` and `seconds` being what a message names."""
    outer = _DEADLINE.get()
    mine = _Deadline(what, at if at is not None else time.monotonic() + seconds, flag, seconds)
    token = _DEADLINE.set(mine if outer is None or mine.at < outer.at else outer)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def window_open() -> bool:
    """Whether limits() are in force in this context."""
    return _WINDOW.get() is not None


def _read_limit(default: float | None) -> tuple[float | None, str]:
    """The timeout for the next read and what to say when it passes."""
    now = time.monotonic()
    window, outer = _WINDOW.get(), _DEADLINE.get()
    timeout, why = default, f"no answer within {default} s"
    if window is not None:
        if window.started:
            timeout = window.between_bytes_s
            why = f"{window.what}: no byte for {timeout:g} s ({window.between_flag})"
        else:
            timeout = window.first_byte_s
            flag = f" ({window.first_flag})" if window.first_flag else ""
            why = f"{window.what}: no answer within {timeout:g} s{flag}"
        if window.deadline - now < (timeout if timeout is not None else float("inf")):
            timeout = window.deadline - now
            flag = f" ({window.first_flag})" if window.first_flag else ""
            why = f"{window.what} took longer than {window.total_s:g} s{flag}"
    if outer is not None and outer.at - now < (timeout if timeout is not None else float("inf")):
        timeout = outer.at - now
        why = f"{outer.what} ran past {outer.flag} {outer.seconds:g} s"
    if timeout is not None and math.isinf(timeout):
        timeout = None  # sockets take None for "no limit"
    return timeout, why


class _LimitedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        limit, why = _read_limit(timeout)
        if limit is not None and limit <= 0:
            raise httpcore.ReadTimeout(why)
        try:
            data = self._inner.read(max_bytes, limit)
        except httpcore.ReadTimeout as exc:
            raise httpcore.ReadTimeout(why) from exc
        window = _WINDOW.get()
        if data and window is not None:
            window.started = True
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _LimitedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _LimitedBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        outer = _DEADLINE.get()
        if outer is not None:
            left = outer.at - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout(f"{outer.what} ran past {outer.flag} {outer.seconds:g} s")
            timeout = left if timeout is None else min(timeout, left)
        return _LimitedStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: typing.Any = None
    ) -> httpcore.NetworkStream:
        return _LimitedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class LimitedTransport(httpx.HTTPTransport):
    """httpx's own transport (connection pool, TLS, HTTP/1.1) over sockets whose reads obey limits()."""

    def __init__(self) -> None:
        super().__init__()
        limits_ = httpx.Limits(max_connections=10, max_keepalive_connections=10, keepalive_expiry=5.0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits_.max_connections,
            max_keepalive_connections=limits_.max_keepalive_connections,
            keepalive_expiry=limits_.keepalive_expiry,
            network_backend=_LimitedBackend(),
        )


def limited_transport() -> httpx.HTTPTransport:
    return LimitedTransport()
