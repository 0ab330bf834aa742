"""Running one build step: its output goes to a log file, the terminal gets a heartbeat.

A build of llama.cpp or Ollama runs for minutes on a small machine. Each step prints its command once,
then a line every `heartbeat_s` with the elapsed time and the last progress mark the tool printed
(cmake's "[ 42%]" or ninja's "[123/456]", or the Go package being built), and the step's time at the end. A failing step raises
BuildError with the last lines of the log and the log's path.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from tuner.errors import TunerError

_PERCENT = re.compile(r"^\[\s*(\d+)%\]")  # make: "[ 42%] Building ..."
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")  # ninja: "[123/456] Building ..."


class BuildError(TunerError):
    pass


def say(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


def fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_mark(line: str) -> str | None:
    """How far a build is, from one line of its output: '42%', '75% (3/4)', a Go package; else None."""
    if m := _PERCENT.match(line):
        return f"{m.group(1)}%"
    if n := _NINJA.match(line):
        return f"{100 * int(n.group(1)) // max(1, int(n.group(2)))}% ({n.group(1)}/{n.group(2)})"
    if line.startswith("# github.com/") or line.startswith("go: downloading"):
        return line.split()[-1][:60]
    return None


def run_step(
    what: str,
    cmd: list[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    heartbeat_s: float = 30.0,
) -> float:
    """Run `cmd`, appending its output to `log`; return its wall time in seconds."""
    say(f"{what}: $ {shlex.join(cmd)}")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    mark = [""]
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env if env is not None else dict(os.environ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise BuildError(f"{what}: cannot run '{cmd[0]}' ({exc}); install it and retry.") from exc
        done = threading.Event()

        def beat() -> None:
            while not done.wait(heartbeat_s):
                extra = f", at {mark[0]}" if mark[0] else ""
                say(f"{what}: {fmt_s(time.monotonic() - start)} so far{extra}")

        ticker = threading.Thread(target=beat, daemon=True)
        ticker.start()
        with proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                m = _PERCENT.match(line)
                n = _NINJA.match(line)
                if m:
                    mark[0] = f"{m.group(1)}%"
                elif n:
                    mark[0] = (
                        f"{100 * int(n.group(1)) // max(1, int(n.group(2)))}% ({n.group(1)}/{n.group(2)})"
                    )
                elif line.startswith("# github.com/") or line.startswith("go: downloading"):
                    mark[0] = line.split()[-1][:60]
            rc = proc.wait()
        done.set()
        ticker.join()
    took = time.monotonic() - start
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"{what} failed (exit {rc}) after {fmt_s(took)}; full log in '{log}':\n{tail}")
    say(f"{what}: done in {fmt_s(took)}")
    return took
