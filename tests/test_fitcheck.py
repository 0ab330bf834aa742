"""Configs the learned belief gives almost no chance are never loaded; the belief learns from loads and failures."""

from __future__ import annotations

import pytest

from tuner.cli import main
from tuner.fitcheck import SKIP_BELOW, FitCheck
from tuner.schema import TrialRecord
from tuner.search import PROBE_MIN, max_failed_loads
from tuner.sim import SimServer
from tuner.study import load_records
from tuner.units import GiB


def record(
    n: int,
    pred: list[int],
    fixed: list[int],
    peak: list[int] | None = None,
    error: str = "",
    compute: list[int] | None = None,
) -> TrialRecord:
    return TrialRecord(
        number=n,
        state="COMPLETE",
        tag="t",
        num_gpu=10,
        num_ctx=4096,
        decode_tok_s=None if peak is None else 10.0,
        peak_vram_per_gpu=peak or [],
        oom=bool(error),
        error=error,
        predicted_vram_per_gpu=pred,
        predicted_fixed_per_gpu=fixed,
        predicted_compute_per_gpu=compute or [],
    )


def test_the_belief_learns_from_loads_and_gpu_failures_not_from_host_failures() -> None:
    check = FitCheck({}, [20 * GiB], engine="ollama", version="0.12.10")
    prior = check.belief([]).mean()
    # predicted 10 GiB of which 8 exact (1.7 GiB compute + the 320 MiB context); 10.5 GiB measured
    loaded = record(0, [10 * GiB], [8 * GiB], peak=[int(10.5 * GiB)], compute=[int(1.7 * GiB)])
    c, d = check.belief([loaded]).mean()
    assert c * 1.7 * GiB + 320 * 2**20 + d == pytest.approx(2.5 * GiB, rel=0.05)  # the guessed part was 2.5
    failed = record(
        1,
        [int(19.5 * GiB)],
        [18 * GiB],
        error="llama runner process has terminated: cudaMalloc failed: out of memory",
    )
    assert check.belief([loaded, failed]).mean() != check.belief([loaded]).mean()
    host = record(
        2,
        [int(19.5 * GiB)],
        [18 * GiB],
        error="model requires more system memory (15.2 GiB) than is available (12.0 GiB)",
    )
    assert check.belief([loaded, host]).mean() == check.belief([loaded]).mean()  # says nothing about VRAM
    assert check.belief([]).mean() == prior


def test_a_config_is_skipped_only_when_the_belief_gives_it_almost_no_chance() -> None:
    from tests.estimate.specs import spec  # noqa: PLC0415
    from tuner.space import Config  # noqa: PLC0415

    check = FitCheck({"q4": spec("llama3.1:8b")}, [int(5.2 * GiB)], engine="ollama", version="0.12.10")
    for n in (0, 16, 30, 33):
        v = check.verdict(Config("q4", n, 4096), [])
        assert v is not None and v.skip == (v.p_fit < SKIP_BELOW)
    assert not check.verdict(Config("q4", 0, 4096), []).skip
    assert check.verdict(Config("q4", 33, 131072), []).skip  # a 16 GiB KV cache on a 5 GiB card


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "auto"])
def test_a_study_loads_only_what_its_belief_allows_and_tests_edges_within_a_budget(tmp_path, sampler) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    with SimServer(gpus="2xRTX4090", host_ram="128GiB", seed=3) as sim:
        with pytest.raises(SystemExit) as info:
            main(
                [
                    "llama3.3:70b",
                    "--quant",
                    "q4_K_M,q8_0",
                    "--host",
                    sim.url,
                    "--budget",
                    "20",
                    "--sampler",
                    sampler,
                    "--storage",
                    storage,
                    "--study",
                    "fit",
                    "--out",
                    str(tmp_path / "rep"),
                    "--num-predict",
                    "16",
                ]
            )
        assert info.value.code == 0
        state = sim.scheduler.state()  # what the simulator saw: loads and failed loads
    _, records = load_records(storage, "fit")
    done = [r for r in records if r.state == "COMPLETE"]
    assert all(r.predicted_vram_per_gpu for r in done), "every trial records its predicted VRAM"
    skipped = [r for r in done if r.predicted_skip]
    loaded = [r for r in done if not r.predicted_skip]
    if sampler == "random":  # a plain sampler proposes configs that cannot fit: they are not loaded
        assert skipped
    else:  # ours does not even propose them
        assert not skipped
    assert all(r.error.startswith("predicted to exceed memory") for r in skipped)
    assert all(r.constraints["load_failed"] > 0 and not r.feasible for r in skipped)
    assert all(r.p_fit is not None and r.p_fit < SKIP_BELOW for r in skipped)
    assert state["counters"]["loads"] + state["counters"]["failed_loads"] >= len(loaded)
    failed = [r for r in loaded if r.oom and not r.baseline]
    if sampler == "auto":  # ours loads what is safe, and tests the edge on purpose, within a budget
        assert all(r.p_fit is not None and r.p_fit >= PROBE_MIN for r in loaded if not r.baseline)
        assert len(failed) <= max_failed_loads(20)
    else:  # a plain sampler loads whatever the belief does not rule out
        assert all(r.p_fit is not None and r.p_fit >= SKIP_BELOW for r in loaded if not r.baseline)
    assert (tmp_path / "rep" / "predicted_vs_measured.png").exists()
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Predicted against measured memory" in text and "(rule: Ollama 0.12.10 (Era A)" in text


def test_the_num_gpu_range_ends_where_nothing_could_fit() -> None:
    from tests.estimate.specs import spec  # noqa: PLC0415
    from tuner.sim import Simulation  # noqa: PLC0415

    free = Simulation("8xA800-80GB", noise=0).free_gpu_bytes()
    q8 = FitCheck({"q8": spec("deepseek-r1:671b-q8_0")}, free, engine="ollama", version="0.12.10")
    bound = q8.num_gpu_bound(2048, 62)
    assert 45 < bound < 62  # every layer cannot fit, even with half the predicted compute buffers
    both = FitCheck(
        {"q8": spec("deepseek-r1:671b-q8_0"), "q4": spec("deepseek-r1:671b")},
        free,
        engine="ollama",
        version="0.12.10",
    )
    assert both.num_gpu_bound(2048, 62) == 62  # q4_K_M fits whole
