"""Click plumbing shared by autotune (tuner.cli) and the search benchmark (tuner.bench_search): option types
that say what is wrong the house way, and the runner that turns errors into one line and an exit code."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import click

from tuner.errors import Interrupted, Stopped, TunerError
from tuner.redact import install_log_filter, redact


def say(message: str) -> None:
    """A line on stderr, with every known secret masked (tuner.redact)."""
    click.echo(redact(message), err=True)


class OptionValueError(click.BadParameter):
    """A bad option value, said the house way: the message alone names the flag, the value and the fix."""

    def format_message(self) -> str:
        return self.message


class WholeNumber(click.IntRange):
    """An integer option of at least `min` (--help: INTEGER RANGE); bad values name the flag and an example."""

    def __init__(self, example: str, min: int = 1) -> None:
        super().__init__(min=min)
        self.example = example
        self.least = min

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        flag = param.opts[0] if param is not None else "value"
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise OptionValueError(
                f"{flag} '{value}' is not a whole number; use e.g. {self.example}.", ctx, param
            ) from None
        if number < self.least:
            raise OptionValueError(
                f"{flag} {number} must be at least {self.least}; use e.g. {self.example}.", ctx, param
            )
        return number


class Fraction(click.FloatRange):
    """A float in [0, 1) (--help: FLOAT RANGE), e.g. --depth 0.5."""

    def __init__(self) -> None:
        super().__init__(min=0.0, max=1.0, max_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        flag = param.opts[0] if param is not None else "value"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OptionValueError(
                f"{flag} '{value}' is not a number; use a fraction like {flag} 0.5.", ctx, param
            ) from None
        if not 0.0 <= number < 1.0:
            raise OptionValueError(
                f"{flag} {value} must be at least 0 and below 1; use e.g. {flag} 0.5.", ctx, param
            )
        return number


SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum, SIGNAL_NAMES.get(signal.Signals(signum), f"signal {signum}"))


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise Interrupted (a KeyboardInterrupt) wherever the program is, so both end the
    same clean way: the running trial fails, its model is unloaded, the report of what finished is written.
    Only the main thread can take signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in SIGNAL_NAMES}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def quiet_threads(debug: bool) -> Iterator[None]:
    """A background thread that dies (Optuna's heartbeat on a full disk) prints no traceback: the main
    thread meets the same failure and says it in one line. TUNER_DEBUG=1 shows it."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if debug:
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


class Seconds(click.FloatRange):
    """A duration in seconds (--help: FLOAT RANGE), above zero unless `zero_ok`; bad values name the flag
    and an example."""

    def __init__(self, example: str, *, zero_ok: bool = False) -> None:
        super().__init__(min=0.0, min_open=not zero_ok)
        self.example = example
        self.zero_ok = zero_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        flag = param.opts[0] if param is not None else "value"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise OptionValueError(
                f"{flag} '{value}' is not a number of seconds; use e.g. {self.example}.", ctx, param
            ) from None
        if number != number or number < 0 or (number == 0 and not self.zero_ok):
            least = "at least 0" if self.zero_ok else "above 0"
            raise OptionValueError(
                f"{flag} {value} must be {least} seconds; use e.g. {self.example}.", ctx, param
            )
        return number


def _stops_cleanly(command: click.Command) -> None:
    """Make the commands' callbacks turn Ctrl-C / SIGTERM into Stopped, so that click does not turn them into
    its Abort (which prints an empty line first and forgets which signal it was)."""
    commands = [command, *getattr(command, "commands", {}).values()]
    for cmd in commands:
        callback = cmd.callback
        if callback is None or getattr(callback, "_stops_cleanly", False):
            continue

        @functools.wraps(callback)
        def wrapper(*args: Any, _callback: Any = callback, **kwargs: Any) -> Any:
            try:
                return _callback(*args, **kwargs)
            except KeyboardInterrupt as exc:
                if isinstance(exc, Interrupted):
                    raise Stopped(exc.name, exc.exit_code) from exc
                raise Stopped("Ctrl-C", 130) from exc

        wrapper._stops_cleanly = True  # type: ignore[attr-defined]
        cmd.callback = wrapper


def _traceback(code: int) -> None:
    """TUNER_DEBUG=1: the traceback, secrets masked like everything else printed, and the exit code."""
    say(traceback.format_exc().rstrip())
    sys.exit(code)


def run_command(
    command: click.Command, argv: list[str] | None, *, prog: str, name: str, interrupted: str
) -> None:
    """Run a click command the house way: bad usage is one line and exit 2, a TunerError one line and its
    exit code (1), Ctrl-C exit 130 and SIGTERM 143 (after the command's own clean-up; `interrupted` ends that
    line, e.g. "; finished trials are stored"), anything unexpected one line and exit 1; secrets masked in
    all of it. TUNER_DEBUG=1 shows the traceback instead."""
    debug = os.environ.get("TUNER_DEBUG") == "1"
    install_log_filter()
    _stops_cleanly(command)
    try:
        with signals_as_interrupts(), quiet_threads(debug):
            command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if debug:
            _traceback(2)
        say(f"{name}: {exc.format_message()} (see '{prog} --help')")
        sys.exit(2)
    except Stopped as exc:
        said = "interrupted" if exc.exit_code == 130 else f"stopped by {exc.signal_name}"
        say(f"{name}: {said}{interrupted}")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort) as exc:  # outside a command's body
        cause = exc if isinstance(exc, Interrupted) else exc.__cause__
        if isinstance(cause, Interrupted) and cause.signum != signal.SIGINT:
            say(f"{name}: stopped by {cause.name}{interrupted}")
            sys.exit(cause.exit_code)
        say(f"{name}: interrupted{interrupted}")
        sys.exit(130)
    except TunerError as exc:
        if debug:
            _traceback(exc.exit_code)
        say(f"{name}: {' '.join(str(exc).split())}")
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last resort: still one line, never a traceback
        if debug:
            _traceback(1)
        detail = " ".join(str(exc).split())[:300]
        say(
            f"{name}: unexpected {type(exc).__name__}: {detail}; run again with TUNER_DEBUG=1 to see where, "
            "and report it."
        )
        sys.exit(1)
    sys.exit(0)
