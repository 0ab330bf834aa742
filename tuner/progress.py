"""What a running study shows: one line per finished trial, and a tqdm bar where someone is watching.

The line names trial n/N, the config, what it measured (or why it did not load), the best feasible trial so
far, the elapsed time and the ETA. Where stderr is a terminal (or the code runs in a notebook) a tqdm bar
sits under the lines; where stderr is a file or a pipe (CI, `2> log`), there is no bar: one line per trial,
nothing else. Pulls get the same treatment: a byte bar per layer on a terminal, status lines otherwise.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, Any

from tqdm.auto import tqdm

from tuner.redact import redact
from tuner.schema import TrialRecord
from tuner.units import GiB

if TYPE_CHECKING:  # the study (and Optuna) is imported only when a study runs
    from tuner.runloop import TrialEvent


def watched(stream: IO[str]) -> bool:
    """A person sees this stream live: a terminal, or a Jupyter notebook (where tqdm.auto draws a widget)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or _in_notebook()


def _in_notebook() -> bool:
    """Inside a Jupyter kernel (tqdm.autonotebook's own test): IPython is loaded and its shell is a kernel's."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _interval(seconds: float | None) -> str:
    return "?" if seconds is None or seconds != seconds else tqdm.format_interval(seconds)


def _config(r: TrialRecord) -> str:
    gpu = "auto" if r.num_gpu < 0 else str(r.num_gpu)
    server = "".join(
        f" {k}={v}"
        for k, v in (
            ("fa", r.flash_attn),
            ("kv", r.kv_cache_type),
            ("parallel", r.num_parallel),
            ("gpus", r.gpus),
            ("num_batch", r.num_batch),
            ("main_gpu", r.main_gpu),
            ("num_thread", r.num_thread),
        )
        if v is not None
    )
    restart = f" (server restart {r.restart_s:.1f} s)" if r.restart_s else ""
    return f"{r.tag} num_gpu={gpu} ctx={r.num_ctx if r.num_ctx > 0 else 'default'}{server}{restart}"


def _outcome(r: TrialRecord) -> str:
    if r.decode_tok_s is not None:
        got = f"{r.decode_tok_s:.1f} tok/s, {(r.peak_vram_bytes or 0) / GiB:.1f} GiB"
        if r.cpu_spill:
            got += f", {100 * (1 - (r.gpu_fraction or 0)):.0f}% on CPU"
        if r.noisy:
            got += f", noisy (RSE {100 * (r.decode_rse or 0):.1f}%)"
        if not r.feasible:
            got += " (violates a constraint)"
        return got
    if r.state == "COMPLETE":
        return "did not load: " + (r.error.splitlines()[0][:80] if r.error else "out of memory")
    if r.state == "FAIL" and r.error:
        return "failed: " + r.error.splitlines()[0][:160]
    return r.state.lower()


def _best(best: TrialRecord | None) -> str:
    if best is None:
        return "best: none feasible yet"
    gpu = "auto" if best.num_gpu < 0 else best.num_gpu
    return f"best {best.decode_tok_s:.1f} tok/s (#{best.number}: num_gpu={gpu} ctx={best.num_ctx})"


def trial_line(event: TrialEvent) -> str:
    """'trial 3/40 | m:q4 num_gpu=33 ctx=8192 -> 41.2 tok/s, 5.3 GiB | best ... | elapsed 00:42, ETA 05:10'."""
    return (
        f"trial {event.done}/{event.budget} | {_config(event.record)} -> {_outcome(event.record)} | "
        f"{_best(event.best)} | elapsed {_interval(event.elapsed_s)}, ETA {_interval(event.eta_s)}"
    )


class Progress:
    """The study's on_trial callback (see the module docstring); close() ends the bar."""

    def __init__(self, stream: IO[str] | None = None, bar: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bar = watched(self.stream) if bar is None else bar
        self._tqdm: Any = None

    def __call__(self, event: TrialEvent) -> None:
        line = trial_line(event)
        if not self.bar:
            print(line, file=self.stream, flush=True)
            return
        if self._tqdm is None:
            self._tqdm = tqdm(
                total=event.budget, initial=event.done - 1, unit="trial", file=self.stream, dynamic_ncols=True
            )
        self._tqdm.write(line, file=self.stream)
        self._tqdm.set_postfix_str(_best(event.best), refresh=False)
        self._tqdm.update(event.done - self._tqdm.n)

    def note(self, message: str) -> None:
        """A line about the run itself (a retry, a wait, a recovered trial), above the bar where there is one."""
        line = f"  {redact(message)}"
        if self._tqdm is not None:
            self._tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


class PullBar:
    """The pull callback (status, completed bytes, total bytes): a tqdm byte bar per layer where watched,
    else each status once, and a layer's line when it completes."""

    def __init__(self, stream: IO[str] | None = None, bar: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bar = watched(self.stream) if bar is None else bar
        self._status = ""
        self._last = ""
        self._tqdm: Any = None

    def __call__(self, status: str, completed: int, total: int) -> None:
        if self.bar:
            self._draw(status, completed, total)
            return
        line = f"  {status} {completed / GiB:.1f}/{total / GiB:.1f} GiB" if total else f"  {status}"
        if line != self._last and (not total or completed >= total):
            print(line, file=self.stream, flush=True)
        self._last = line

    def _draw(self, status: str, completed: int, total: int) -> None:
        if status != self._status or not total:
            self.close()
            self._status = status
        if not total:
            print(f"  {status}", file=self.stream, flush=True)
            return
        if self._tqdm is None:
            self._tqdm = tqdm(
                total=total,
                desc=f"  {status}",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self.stream,
            )
        self._tqdm.update(completed - self._tqdm.n)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
