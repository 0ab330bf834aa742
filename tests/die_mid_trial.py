"""`python tests/die_mid_trial.py N ARGS...` runs `autotune ARGS...` and SIGKILLs itself inside trial N: after
that trial's model is loaded, at its first generation. A process that dies mid-trial at a point the test
chooses, instead of at a moment the test guesses (no sleeps, no dependence on the machine's speed).
With DIE_AS_HOST set, it runs under that host name (another container, another machine)."""

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


def measure(backend: Any, probe: Any, config: Any, settings: Any, **kwargs: Any) -> Any:
    if kwargs.get("run_offset", 0) // 100 >= KILL_AT:  # run_offset is the trial number x 100
        backend.generate = _die
    return _measure(backend, probe, config, settings, **kwargs)


tuner.study.measure = measure  # type: ignore[assignment]
if os.environ.get("DIE_AS_HOST"):
    socket.gethostname = lambda: os.environ["DIE_AS_HOST"]  # type: ignore[assignment]
main(sys.argv[2:])
