"""Configs predicted not to fit are never loaded; the margin is learned from the study's own trials."""

from __future__ import annotations

import pytest

from tuner.cli import main
from tuner.fitcheck import PRIOR_MARGIN, SLACK, FitCheck
from tuner.schema import TrialRecord
from tuner.sim import SimServer
from tuner.study import load_records
from tuner.units import GiB


def record(
    n: int, pred: list[int], fixed: list[int], peak: list[int] | None = None, error: str = ""
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
    )


def test_margin_is_learned_from_compute_and_context_ratios_and_from_failed_loads() -> None:
    check = FitCheck({}, [20 * GiB], engine="ollama", version="0.12.10")
    assert check.margin([]) == PRIOR_MARGIN
    # predicted 10 GiB of which 8 exact: measured 10.5 -> the uncertain 2 GiB were really 2.5 (x 1.25)
    loaded = record(0, [10 * GiB], [8 * GiB], peak=[int(10.5 * GiB)])
    assert check.margin([loaded]) == pytest.approx(1.25 + SLACK)
    # a load that failed with 18 exact + 1.5 predicted on 20 free: the real factor was at least 2/1.5
    failed = record(
        1,
        [int(19.5 * GiB)],
        [18 * GiB],
        error="llama runner process has terminated: cudaMalloc failed: out of memory",
    )
    assert check.margin([loaded, failed]) == pytest.approx(2 / 1.5 + SLACK / 4 + SLACK)
    # running out of host memory says nothing about VRAM
    host = record(
        2,
        [int(19.5 * GiB)],
        [18 * GiB],
        error="model requires more system memory (15.2 GiB) than is available (12.0 GiB)",
    )
    assert check.margin([loaded, host]) == pytest.approx(1.25 + SLACK)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "auto"])
def test_a_study_never_loads_what_its_final_margin_rules_out(tmp_path, sampler) -> None:
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
        free = sim.simulation.free_gpu_bytes()
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
    assert state["counters"]["loads"] + state["counters"]["failed_loads"] >= len(loaded)
    final = FitCheck({}, free, engine="ollama", version="0.12.10").margin(done)
    for r in loaded:
        need = [f + final * (p - f) for p, f in zip(r.predicted_vram_per_gpu, r.predicted_fixed_per_gpu)]
        assert all(n <= g for n, g in zip(need, free) if n), f"trial {r.number} would be ruled out now"
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
