"""--max-ctx, --min-ctx, --vram-limit and --gpu-only hold in every recommendation: the picks, best.Modelfile
and --apply; asserted over hundreds of generated studies, then through the CLI (the baseline's default context
is above --max-ctx)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.test_report import make_meta
from tuner.cli import main
from tuner.modelfile import parse_modelfile
from tuner.report import picks, write_report
from tuner.schema import TrialRecord, limits_broken
from tuner.sim import SimServer
from tuner.study import load_records
from tuner.units import GiB

CTX = (2048, 4096, 8192, 16384, 32768)


def random_study(rng: random.Random) -> list[TrialRecord]:
    records = []
    for number in range(rng.randint(1, 25)):
        ctx = rng.choice(CTX)
        loaded = rng.random() > 0.15
        fraction = rng.choice([1.0, 1.0, 0.8, 0.4])
        records.append(
            TrialRecord(
                number=number,
                state="COMPLETE",
                tag=rng.choice(["m:q4", "m:q8"]),
                num_gpu=rng.choice([-1, 0, 10, 20, 33]),
                num_ctx=ctx,
                decode_tok_s=rng.uniform(5, 150) if loaded else None,
                peak_vram_bytes=int(rng.uniform(1, 24) * GiB) if loaded else None,
                size_bytes=10 * GiB,
                size_vram_bytes=int(10 * GiB * fraction),
                gpu_fraction=fraction,
                cpu_spill=fraction < 1,
                context_length_loaded=ctx,
                feasible=loaded,  # as if stored by a run without (or with other) limits
                oom=not loaded,
            )
        )
    return records


def test_no_pick_ever_breaks_the_study_limits():
    rng = random.Random(11)
    checked = 0
    for _ in range(400):
        limits = {
            "vram_limit_bytes": rng.choice([None, 6 * GiB, 12 * GiB]),
            "min_ctx": rng.choice([None, 4096, 16384]),
            "max_ctx": rng.choice([None, 3000, 8192]),
            "gpu_only": rng.random() < 0.3,
        }
        meta = make_meta(**limits)
        records = random_study(rng)
        for pick in picks(meta, records).values():
            assert limits_broken(meta, pick.trial) == [], (limits, pick)
            checked += 1
        # and a trial within the limits is never dropped for them
        allowed = [r for r in records if r.feasible and not limits_broken(meta, r)]
        assert bool(allowed) == bool(picks(meta, records))
    assert checked > 300


def test_the_written_report_honours_limits_the_stored_trials_did_not_know(tmp_path):
    rng = random.Random(3)
    records = random_study(rng) + [
        TrialRecord(
            99,
            "COMPLETE",
            "m:q4",
            -1,
            4096,
            decode_tok_s=999.0,
            peak_vram_bytes=GiB,
            gpu_fraction=1.0,
            cpu_spill=False,
            context_length_loaded=4096,
            feasible=True,
            baseline=True,
        )
    ]
    meta = make_meta(max_ctx=3000)
    written = write_report(meta, records, tmp_path)
    for name, path in written.items():
        if str(path).endswith(".Modelfile"):
            assert int(parse_modelfile(Path(path).read_text())["parameters"]["num_ctx"]) <= 3000, name
    pick_rows = [
        line
        for line in (tmp_path / "report.md").read_text().splitlines()
        if line.startswith(("| fastest", "| largest context", "| balanced", "| leanest"))
    ]
    assert pick_rows and not any(
        "| #99 |" in line for line in pick_rows
    )  # shown as your setting, never picked


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_max_ctx_holds_against_the_engine_default_context_of_the_baseline(tmp_path):
    """The baseline runs at Ollama's own default context (4096 here), above --max-ctx 3000: it is measured
    for the comparison, but nothing written recommends it."""
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "r"
    with SimServer(gpus="1xRTX4090", seed=9) as sim:
        args = ["llama3.1:8b", "--host", sim.url, "--budget", "5", "--storage", storage, "--study", "c"]
        assert run_cli([*args, "--out", str(out), "--max-ctx", "3000", "--num-predict", "16"]) == 0
    _, records = load_records(storage, "c")
    baseline = next(r for r in records if r.baseline)
    assert baseline.num_ctx == 4096 and not baseline.feasible and "--max-ctx 3000" in baseline.error
    assert baseline.constraints["ctx_over"] > 0
    modelfiles = list(out.glob("*.Modelfile"))
    assert modelfiles and (out / "best.Modelfile") in modelfiles
    for path in modelfiles:
        assert int(parse_modelfile(path.read_text())["parameters"]["num_ctx"]) <= 3000, path.name

    # A limit given later (a rerun with --vram-limit) rules out what the stored trials allowed.
    lean = min(r.peak_vram_bytes for r in records if r.feasible and r.peak_vram_bytes)
    limit = f"{(lean + 0.01 * GiB) / GiB:.2f}GiB"
    with SimServer(gpus="1xRTX4090", seed=9) as sim:
        args = ["llama3.1:8b", "--host", sim.url, "--budget", "5", "--storage", storage, "--study", "c"]
        assert run_cli([*args, "--out", str(out), "--max-ctx", "3000", "--vram-limit", limit]) == 0
    meta, records = load_records(storage, "c")
    for pick in picks(meta, records).values():
        assert pick.trial.peak_vram_bytes <= lean + 0.01 * GiB
    assert len(list(out.glob("pick-*.Modelfile"))) >= 1
