"""`python tests/die_in_qualify.py K ARGS...` runs `autotune ARGS...` (a qualification) and SIGKILLs itself at
the K-th trial measurement of the whole plan (counted across the models' studies, from 0), after that trial's
model is loaded, at its first generation: a kill inside a chosen model's study at a point the test chooses.
`soak:K` instead kills at the K-th generation of the first soak (counted from 0). DIE_SIGNAL=TERM sends SIGTERM
(a stop the command sees) instead of SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import tuner.qualify.soak
import tuner.study
from tuner.cli import main

WHERE, _, AT = sys.argv[1].rpartition(":")
KILL_AT = int(AT)
_measure = tuner.study.measure
_make_prompt = tuner.qualify.soak.make_prompt
_calls = [0]


SIGNAL = signal.SIGTERM if os.environ.get("DIE_SIGNAL") == "TERM" else signal.SIGKILL


def _die(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), SIGNAL)


def measure(backend: Any, probe: Any, config: Any, settings: Any, **kwargs: Any) -> Any:
    if _calls[0] >= KILL_AT:
        backend.generate = _die
    _calls[0] += 1
    return _measure(backend, probe, config, settings, **kwargs)


def make_prompt(run: int, depth_tokens: int = 0) -> str:
    if _calls[0] >= KILL_AT:
        _die()
    _calls[0] += 1
    return _make_prompt(run, depth_tokens)


if WHERE == "soak":
    tuner.qualify.soak.make_prompt = make_prompt  # type: ignore[assignment]
else:
    tuner.study.measure = measure  # type: ignore[assignment]
main(sys.argv[2:])
