"""`python tests/die_in_qualify.py K ARGS...` runs `autotune ARGS...` (a qualification) and SIGKILLs itself at
the K-th trial measurement of the whole plan (counted across the models' studies, from 0), after that trial's
model is loaded, at its first generation: a kill inside a chosen model's study at a point the test chooses."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import tuner.study
from tuner.cli import main

KILL_AT = int(sys.argv[1])
_measure = tuner.study.measure
_calls = [0]


def _die(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def measure(backend: Any, probe: Any, config: Any, settings: Any, **kwargs: Any) -> Any:
    if _calls[0] >= KILL_AT:
        backend.generate = _die
    _calls[0] += 1
    return _measure(backend, probe, config, settings, **kwargs)


tuner.study.measure = measure  # type: ignore[assignment]
main(sys.argv[2:])
