"""Click plumbing shared by autotune (tuner.cli) and the search benchmark (tuner.bench_search): option types
that say what is wrong the house way, and the runner that turns errors into one line and an exit code."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from tuner.errors import TunerError


def say(message: str) -> None:
    click.echo(message, err=True)


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


def run_command(
    command: click.Command, argv: list[str] | None, *, prog: str, name: str, interrupted: str
) -> None:
    """Run a click command the house way: bad usage is one line and exit 2, a TunerError one line and its
    exit code (1), Ctrl-C exit 130; TUNER_DEBUG=1 shows the traceback instead."""
    debug = os.environ.get("TUNER_DEBUG") == "1"
    try:
        command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if debug:
            raise
        say(f"{name}: {exc.format_message()} (see '{prog} --help')")
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        say(f"{name}: {interrupted}")
        sys.exit(130)
    except TunerError as exc:
        if debug:
            raise
        say(f"{name}: {exc}")
        sys.exit(exc.exit_code)
    sys.exit(0)
