"""Request options and durations the way Ollama parses them (api/types.go Options.FromMap, api.Duration).

Pure functions; errors are raised as OptionError / DurationError with Ollama's exact wording.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tuner.modelfile import BOOL_PARAMETERS, FLOAT_PARAMETERS, INT_PARAMETERS, LIST_PARAMETERS

# Ollama's api.Options types, one table for the whole project (the same names and types a Modelfile takes)
INT_OPTIONS = INT_PARAMETERS
FLOAT_OPTIONS = FLOAT_PARAMETERS
BOOL_OPTIONS = BOOL_PARAMETERS
LIST_OPTIONS = LIST_PARAMETERS
RUNNER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
FOREVER_S = math.inf


class OptionError(ValueError):
    """A wrong option type: HTTP 500 from the scheduler, as Ollama does."""


class DurationError(ValueError):
    """A bad keep_alive: HTTP 400 from the JSON binding."""


def parse_options(merged: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert options (Modelfile parameters overlaid with the request's); unknown keys dropped."""
    out: dict[str, Any] = {}
    for key, val in merged.items():
        if val is None:
            continue
        if key in INT_OPTIONS:
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise OptionError(f'option "{key}" must be of type integer')
            out[key] = int(val)  # JSON floats are truncated
        elif key in FLOAT_OPTIONS:
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise OptionError(f'option "{key}" must be of type float32')
            out[key] = float(val)
        elif key in BOOL_OPTIONS:
            if not isinstance(val, bool):
                raise OptionError(f'option "{key}" must be of type boolean')
            out[key] = val
        elif key in LIST_OPTIONS:
            if not isinstance(val, list):
                raise OptionError(f'option "{key}" must be of type array')
            if not all(isinstance(v, str) for v in val):
                raise OptionError(f'option "{key}" must be of an array of strings')
            out[key] = list(val)
        # anything else: Ollama logs "invalid option provided" and skips it
    return out


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds."""
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    pos = 0
    total = 0.0
    while pos < len(s):
        match = _PART.match(s, pos)
        if not match:
            if re.fullmatch(r"\d+(?:\.\d*)?", s[pos:]):
                raise DurationError(f'time: missing unit in duration "{text}"')
            raise DurationError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """api.Duration: a number is seconds, a string a Go duration; negative means forever; None = not given."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise DurationError("json: cannot unmarshal bool into Go value of type api.Duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise DurationError(
            f"json: cannot unmarshal {type(value).__name__} into Go value of type api.Duration"
        )
    return FOREVER_S if seconds < 0 else seconds


def runner_options(opts: dict[str, Any], default_ctx: int) -> dict[str, Any]:
    """The load-time (Runner) options of a request, with defaults filled in as Ollama stores them."""
    return {
        "num_ctx": opts.get("num_ctx", default_ctx),
        "num_batch": opts.get("num_batch"),  # None: the release's default (Era C sizes it by context)
        "num_gpu": opts.get("num_gpu", -1),
        "main_gpu": opts.get("main_gpu"),
        "use_mmap": opts.get("use_mmap"),
        "num_thread": opts.get("num_thread", 0),
        "auto_ctx": "num_ctx" not in opts,
    }


def needs_reload(loaded: dict[str, Any], new: dict[str, Any], *, era: str, trained_ctx: int) -> bool:
    """sched.go needsReload on the Runner options (section 7).

    An omitted / negative num_gpu in the new request is not compared; Era C caps num_ctx at the trained
    context before comparing and ignores it when both sides are automatic.
    """
    for key in RUNNER_OPTIONS:
        old, cur = loaded.get(key), new.get(key)
        if key == "num_gpu" and (cur is None or cur < 0):
            continue
        if key == "num_ctx" and era == "C":
            if loaded.get("auto_ctx") and new.get("auto_ctx"):
                continue
            if old is not None and cur is not None:
                old, cur = min(old, trained_ctx), min(cur, trained_ctx)
        if old != cur:
            return True
    return False
