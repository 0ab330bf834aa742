"""The four situations users report (../shared/user-stories.md), reproduced on the simulator and solved by
`autotune` itself (the CLI, the official ollama client, the simulator over HTTP) within 25 trials.

The truth each test checks against comes from the simulator's noise-free core, evaluated exhaustively.
"""

from __future__ import annotations

import pytest

from tuner.cli import main
from tuner.report import picks
from tuner.schema import TrialRecord
from tuner.sim import SimServer, Simulation
from tuner.study import load_records

BUDGET = "25"


def tune(sim: SimServer, tmp_path, *args: str):
    storage = f"sqlite:///{tmp_path}/studies.db"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                *args,
                "--host",
                sim.url,
                "--budget",
                BUDGET,
                "--storage",
                storage,
                "--study",
                "story",
                "--out",
                str(tmp_path / "report"),
            ]
        )
    assert exit_info.value.code == 0
    meta, records = load_records(storage, "story")
    done = sum(r.state == "COMPLETE" for r in records)  # auto stops early once nothing new is deployable
    assert 8 <= done <= int(BUDGET)
    assert (tmp_path / "report" / "report.html").exists() and (
        tmp_path / "report" / "best.Modelfile"
    ).exists()
    return meta, records


def baseline_of(records: list[TrialRecord]) -> TrialRecord:
    (baseline,) = [r for r in records if r.baseline]
    return baseline


def on_gpu(sim: Simulation, tag: str, num_gpu: int, num_ctx: int) -> bool:
    p = sim.plan(tag, num_gpu, num_ctx)
    return p.ok and p.size_vram_bytes >= 0.999 * p.size_bytes


@pytest.mark.slow
def test_a_two_24gb_cards_70b_fully_on_gpu_beats_ollamas_split(tmp_path):
    # newer Ollama picks a VRAM-tiered default context (131072 on 48 GB), which pushes layers to the CPU
    with SimServer(gpus="2xRTX4090", host_ram="128GiB", version="0.32.0", seed=1) as sim:
        meta, records = tune(sim, tmp_path, "llama3.3:70b")
    base = baseline_of(records)
    assert base.cpu_spill, "Ollama's own placement should leave layers on the CPU"
    assert base.num_ctx == 131072  # recorded as what the server reports it used
    fastest = picks(meta, records)["fastest"].trial
    assert fastest.gpu_fraction is not None and fastest.gpu_fraction >= 0.999
    assert fastest.decode_tok_s > 1.5 * base.decode_tok_s


@pytest.mark.slow
def test_b_32b_at_131072_spills_and_the_largest_context_on_gpu_is_reported(tmp_path):
    tag = "deepseek-r1:32b"
    with SimServer(gpus="1xRTX4090", host_ram="64GiB", seed=2) as sim:
        meta, records = tune(sim, tmp_path, tag, "--baseline-ctx", "131072")
    base = baseline_of(records)
    assert base.num_ctx == 131072 and base.cpu_spill
    truth_sim = Simulation("1xRTX4090", host_ram="64GiB", noise=0)
    layers = meta.block_count[tag] + 1
    truth = max(c for c in meta.ctx_ladder if on_gpu(truth_sim, tag, layers, c))
    pick = picks(meta, records)["largest_ctx_on_gpu"].trial
    assert pick.num_ctx == truth
    assert pick.decode_tok_s > 3 * base.decode_tok_s


@pytest.mark.slow
def test_c_gemma3_on_four_8gb_cards_at_131072_is_infeasible_and_a_working_context_is_found(tmp_path):
    with SimServer(gpus="4xGTX1070Ti", host_ram="16GiB", seed=3) as sim:
        meta, records = tune(sim, tmp_path, "gemma3:12b", "--baseline-ctx", "131072")
    base = baseline_of(records)
    assert base.num_ctx == 131072 and base.oom and not base.feasible
    assert "memory" in base.error or "unable to allocate" in base.error
    feasible = [r for r in records if r.feasible]
    assert feasible and max(r.num_ctx for r in feasible) >= 8192
    assert all(r.decode_tok_s is None for r in records if r.oom)  # never a 0 tok/s for a failed load


@pytest.mark.slow
def test_d_671b_q8_on_eight_80gb_cards_finds_the_largest_num_gpu_that_loads(tmp_path):
    tag = "deepseek-r1:671b-q8_0"
    # the 7,7,7,6,... split of the report comes from Ollama's estimator before 0.7.0
    with SimServer(gpus="8xA800-80GB", host_ram="1TiB", version="0.5.7", seed=4) as sim:
        meta, records = tune(sim, tmp_path, "deepseek-r1:671b", "--tags", tag, "--max-ctx", "8192")
    base = baseline_of(records)
    assert base.oom and "unable to allocate CUDA0 buffer" in base.error
    truth_sim = Simulation("8xA800-80GB", host_ram="1TiB", version="0.5.7", noise=0)
    low = meta.ctx_ladder[0]
    truth = max(n for n in range(meta.block_count[tag] + 2) if truth_sim.plan(tag, n, low).ok)
    loaded = [
        r.num_gpu for r in records if r.num_ctx == low and r.decode_tok_s is not None and r.num_gpu >= 0
    ]
    assert max(loaded) == truth
    assert picks(meta, records)["fastest"].trial.num_gpu == truth
