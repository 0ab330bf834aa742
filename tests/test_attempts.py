"""A trial's attempts (tuner.attempts): what is retried, how often, what is recorded, and the pause for a
server that went down. A fake clock and sleep: nothing here waits."""

from __future__ import annotations

import pytest

from tuner.attempts import measure_with_retries, wait_for_server
from tuner.backend.base import ServerInfo
from tuner.config import RetryPolicy, Timeouts
from tuner.errors import (
    BackendTimeout,
    BadResponse,
    ModelNotFound,
    OutOfMemory,
    ServerStateChanged,
    TrialFailed,
    Unreachable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Server:
    """server_info() fails `down` times, then answers."""

    def __init__(self, down: int = 0) -> None:
        self.down = down

    def server_info(self) -> ServerInfo:
        if self.down > 0:
            self.down -= 1
            raise Unreachable("Cannot reach Ollama at 'http://x:1' (connection refused)")
        return ServerInfo("ollama", "0.12.10", "http://x:1")


def failing(*errors: Exception):
    """A measurement that raises each error in turn, then succeeds."""
    queue = list(errors)

    def measure_once():
        if queue:
            raise queue.pop(0)
        return "measured"

    return measure_once


def run(measure_once, policy=None, server=None, clock=None):
    policy = policy or RetryPolicy(retries=3, backoff_s=2.0)
    clock = clock or Clock()
    notes: list[str] = []
    result = measure_with_retries(
        measure_once, server or Server(), policy, Timeouts(), notes.append, sleep=clock.sleep, clock=clock
    )
    return result, notes, clock


@pytest.mark.parametrize(
    "error",
    [
        BackendTimeout("a generation: no byte for 120 s (--read-timeout)"),
        BadResponse("refused a generation (HTTP 500): llama runner process has terminated", transient=True),
        BadResponse("broke the connection (reset)", transient=True),
        ServerStateChanged("also has other:latest loaded; the measurement is discarded."),
    ],
)
def test_transient_failures_are_retried_with_backoff_and_recorded(error):
    (m, attempts), notes, clock = run(failing(error, error))
    assert m == "measured"
    assert clock.slept == [2.0, 4.0]  # doubling
    assert len(attempts) == 2 and all(str(error) in a for a in attempts)
    assert attempts[0].startswith("attempt 1: ") and "retried after 2 s" in attempts[0]
    assert len(notes) == 2 and "Retrying in 2 s (retry 1 of 3)" in notes[0]


def test_attempts_are_bounded_and_the_trial_fails_with_every_reason():
    error = BadResponse("HTTP 503: busy", transient=True)
    with pytest.raises(TrialFailed) as info:
        run(failing(*[error] * 10), RetryPolicy(retries=2, backoff_s=1.0))
    assert "3 attempts failed (--retries 2); the last: HTTP 503: busy" in str(info.value)
    assert len(info.value.attempts) == 3


@pytest.mark.parametrize(
    "error",
    [
        BadResponse("HTTP 400: invalid option", transient=False),
        ModelNotFound("no model"),
        OutOfMemory("cudaMalloc failed: out of memory"),
    ],
)
def test_what_is_not_transient_goes_up_at_once(error):
    with pytest.raises(type(error)):
        run(failing(error))


def test_backoff_is_capped():
    assert RetryPolicy(backoff_s=10).backoff(1) == 10 and RetryPolicy(backoff_s=10).backoff(6) == 60


def test_a_server_that_went_down_is_waited_for_and_the_attempt_is_not_counted():
    down = Unreachable("Cannot reach Ollama at 'http://x:1' (connection refused); start 'ollama serve'.")
    policy = RetryPolicy(retries=0, server_wait_s=60, poll_s=5)
    (m, attempts), notes, clock = run(failing(down), policy, Server(down=3))
    assert m == "measured"  # with --retries 0: the pause is not a retry
    assert (
        clock.slept == [5, 5, 5, 5] and len(attempts) == 1 and attempts[0].startswith("server down for 20 s")
    )
    assert "stopped answering" in notes[0] and "back after 20 s" in notes[-1]


def test_a_server_that_stays_down_stops_the_study():
    policy = RetryPolicy(server_wait_s=12, poll_s=5)
    clock = Clock()
    with pytest.raises(Unreachable, match=r"still down after waiting 12 s \(--server-wait\)"):
        wait_for_server(
            Server(down=100), policy, "connection refused", lambda _m: None, sleep=clock.sleep, clock=clock
        )
    assert sum(clock.slept) == 12
