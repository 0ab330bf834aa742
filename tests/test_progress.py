"""What a running study shows (tuner.progress): a line per trial, and a tqdm bar only where someone watches."""

from __future__ import annotations

import io

from tuner.progress import Progress, PullBar, trial_line
from tuner.runloop import TrialEvent
from tuner.schema import TrialRecord
from tuner.units import GiB


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def event(done: int, record: TrialRecord, best: TrialRecord | None) -> TrialEvent:
    return TrialEvent(done, 40, record, best, elapsed_s=42.0 * done, eta_s=42.0 * (40 - done))


FAST = TrialRecord(
    3, "COMPLETE", "m:q4", 33, 8192, decode_tok_s=41.25, peak_vram_bytes=5 * GiB, feasible=True
)
SPILLED = TrialRecord(
    4,
    "COMPLETE",
    "m:q8",
    20,
    8192,
    decode_tok_s=9.0,
    peak_vram_bytes=20 * GiB,
    cpu_spill=True,
    gpu_fraction=0.6,
)
FAILED = TrialRecord(
    5, "COMPLETE", "m:q8", 33, 131072, oom=True, error="cudaMalloc failed: out of memory\nmore"
)


def test_the_line_names_the_trial_the_config_the_outcome_the_best_and_the_eta() -> None:
    line = trial_line(event(3, FAST, FAST))
    assert line.startswith("trial 3/40 | m:q4 num_gpu=33 ctx=8192 -> 41.2 tok/s, 5.0 GiB | ")
    assert "best 41.2 tok/s (#3: num_gpu=33 ctx=8192)" in line and line.endswith("elapsed 02:06, ETA 25:54")
    assert "-> 9.0 tok/s, 20.0 GiB, 40% on CPU (violates a constraint)" in trial_line(event(4, SPILLED, FAST))
    failed = trial_line(event(5, FAILED, None))
    assert (
        "did not load: cudaMalloc failed: out of memory |" in failed and "best: none feasible yet" in failed
    )
    baseline = TrialRecord(0, "COMPLETE", "m:q4", -1, 0, decode_tok_s=1.0, feasible=True)
    assert "num_gpu=auto ctx=default" in trial_line(TrialEvent(1, 40, baseline, None, 1.0, None))


def test_without_a_terminal_each_trial_is_one_plain_line() -> None:
    out = io.StringIO()
    progress = Progress(out)
    for n, r in enumerate((FAST, SPILLED, FAILED), start=3):
        progress(event(n, r, FAST))
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"trial {n}/40 |") for n, line in zip((3, 4, 5), lines))
    assert "\r" not in out.getvalue()


def test_on_a_terminal_a_bar_counts_the_trials_under_the_lines() -> None:
    out = Terminal()
    progress = Progress(out)
    progress(event(1, FAST, FAST))
    progress(event(2, SPILLED, FAST))
    progress.close()
    text = out.getvalue()
    assert "trial 1/40 | m:q4" in text and "trial 2/40 | m:q8" in text
    assert "2/40" in text.rsplit("\r", 1)[-1]  # the bar's last state: two of forty trials


def test_pulls_without_a_terminal_print_each_status_and_each_finished_layer_once() -> None:
    out = io.StringIO()
    bar = PullBar(out)
    for status, done, total in [
        ("pulling manifest", 0, 0),
        ("pulling 3c0e4ec38669", 0, 4 * GiB),
        ("pulling 3c0e4ec38669", 2 * GiB, 4 * GiB),
        ("pulling 3c0e4ec38669", 4 * GiB, 4 * GiB),
        ("pulling 3c0e4ec38669", 4 * GiB, 4 * GiB),
        ("success", 0, 0),
    ]:
        bar(status, done, total)
    assert out.getvalue().splitlines() == [
        "  pulling manifest",
        "  pulling 3c0e4ec38669 4.0/4.0 GiB",
        "  success",
    ]


def test_pulls_on_a_terminal_get_a_byte_bar() -> None:
    out = Terminal()
    bar = PullBar(out)
    bar("pulling 3c0e4ec38669", 2 * GiB, 4 * GiB)
    bar("pulling 3c0e4ec38669", 4 * GiB, 4 * GiB)
    bar("success", 0, 0)
    text = out.getvalue()
    assert "pulling 3c0e4ec38669" in text and "4.00G/4.00G" in text and text.rstrip().endswith("success")
