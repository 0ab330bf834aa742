"""`python tests/die_mid_trial.py N ARGS...` runs `autotune ARGS...` and SIGKILLs itself inside trial N (or
the first after it that loads a model): after that trial's model is loaded, at its first generation. A process
that dies mid-trial at a point the test chooses, instead of at a moment the test guesses (no sleeps, no
dependence on the machine's speed).
With DIE_AS_HOST set, it runs under that host name (another container, another machine).
With DIE_ONCE_AFTER=PATH, it dies in the first trial (numbered N or more) that it begins after PATH exists,
and only if no other process has claimed that death (PATH.claimed, created atomically): several workers
can run this way, and exactly one of them, the one on the server when the test says go, dies."""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

import tuner.study
from tuner.cli import main

KILL_AT = int(sys.argv[1])
_measure = tuner.study.measure


def _die(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def _my_turn() -> bool:
    go = os.environ.get("DIE_ONCE_AFTER")
    if not go:
        return True
    if not os.path.exists(go):
        return False
    try:
        os.close(os.open(go + ".claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False  # another worker died already
    return True


def measure(backend: Any, probe: Any, config: Any, settings: Any, **kwargs: Any) -> Any:
    if kwargs.get("run_offset", 0) // 100 >= KILL_AT and not hasattr(backend, "_die_wrapped"):
        real = backend.generate  # run_offset is the trial number x 100

        def generate(*args: Any, **kw: Any) -> Any:
            if _my_turn():  # at a generation: a config that never loads dies nowhere
                _die()
            return real(*args, **kw)

        backend.generate = generate
        backend._die_wrapped = True
    return _measure(backend, probe, config, settings, **kwargs)


tuner.study.measure = measure  # type: ignore[assignment]
if os.environ.get("DIE_AS_HOST"):
    socket.gethostname = lambda: os.environ["DIE_AS_HOST"]  # type: ignore[assignment]
main(sys.argv[2:])
