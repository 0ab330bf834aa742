"""A trial's attempts: its measurement, again after a failure that is not the config's fault.

    measure_with_retries(measure_once, backend, policy, timeouts, notify) -> (Measurement, attempts)

What can go wrong, and what happens:

    transient        a timeout, a 5xx that is not a memory error, a reset connection, an answer that is not
                     JSON, a stream cut short, the server changed under the trial (BackendError.transient):
                     the attempt is discarded and the trial runs again after a backoff (policy.backoff:
                     2, 4, 8 s ... at most 60 s), at most policy.retries more times
    unreachable      the server stopped answering (connection refused, DNS): the study pauses, asks every
                     policy.poll_s whether it is back, and runs the attempt again when it is (not counted);
                     after policy.server_wait_s it stops with Unreachable (the CLI writes what finished)
    the trial's own  --trial-timeout bounds the trial, its retries and backoffs included (not the pauses for
    deadline         a server that is down): past it, no further attempt
    anything else    (a memory failure is a result, not an error; a missing model; Ctrl-C) goes up as it is

Every discarded attempt is recorded with its reason ("attempt 1: ..."); when the attempts run out the trial
fails with TrialFailed, its reason and its attempts, and the study goes on with the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tuner.backend.base import Backend
from tuner.backend.http import deadline
from tuner.config import RetryPolicy, Timeouts
from tuner.errors import BackendError, TrialFailed, TunerError, Unreachable
from tuner.measure import Measurement

Notify = Callable[[str], None]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def wait_for_server(
    backend: Backend,
    policy: RetryPolicy,
    why: str,
    notify: Notify,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Block until the server answers again; return the seconds waited. Unreachable after server_wait_s."""
    start = clock()
    notify(
        f"the server stopped answering ({why}); waiting for it to come back "
        f"(up to {policy.server_wait_s:g} s, --server-wait)"
    )
    while True:
        waited = clock() - start
        if waited >= policy.server_wait_s:
            raise Unreachable(
                f"{why.rstrip('.')}; still down after waiting {policy.server_wait_s:g} s (--server-wait). "
                "Start the server again and run the same command to resume."
            )
        sleep(min(policy.poll_s, max(0.0, policy.server_wait_s - waited)))
        try:
            backend.server_info()
        except BackendError:
            continue
        waited = clock() - start
        notify(f"the server is back after {waited:.0f} s; the trial runs again")
        return waited


def measure_with_retries(
    measure_once: Callable[[], Measurement],
    backend: Backend,
    policy: RetryPolicy,
    timeouts: Timeouts,
    notify: Notify,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Measurement, list[str]]:
    """The measurement of one trial, retried as the module docstring says; (measurement, discarded attempts)."""
    attempts: list[str] = []
    retries = 0
    ends = time.monotonic() + timeouts.trial_s  # moved on by the time spent waiting for a server that is down
    while True:
        try:
            with deadline("the trial", timeouts.trial_s, "--trial-timeout", at=ends):
                return measure_once(), attempts
        except Unreachable as exc:
            reason = _first_line(exc)
            waited = wait_for_server(backend, policy, reason, notify, sleep=sleep, clock=clock)
            ends += waited
            attempts.append(f"server down for {waited:.0f} s ({reason})")
            continue
        except TunerError as exc:
            if not exc.transient:
                raise
            reason = _first_line(exc)
        if time.monotonic() >= ends:
            attempts.append(f"attempt {len(attempts) + 1}: {reason}")
            raise TrialFailed(
                f"the trial ran past --trial-timeout {timeouts.trial_s:g} s: {reason}", attempts
            )
        retries += 1
        if retries > policy.retries:
            attempts.append(f"attempt {len(attempts) + 1}: {reason}")
            raise TrialFailed(
                f"{retries} attempts failed (--retries {policy.retries}); the last: {reason}", attempts
            )
        wait = policy.backoff(retries)
        attempts.append(f"attempt {len(attempts) + 1}: {reason} (retried after {wait:g} s)")
        notify(f"{reason} Retrying in {wait:g} s (retry {retries} of {policy.retries}).")
        sleep(min(wait, max(0.0, ends - time.monotonic())))
