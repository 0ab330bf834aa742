"""Noise is data: every trial records its repeats, their interval and RSE, whether it missed the RSE target,
and what else used the machine; with a noisy neighbour injected into the simulator, trials are marked noisy
and the contenders are measured again, interleaved. Behaviour only: no timing is expected to be stable."""

from __future__ import annotations

import math
import statistics

import pytest

from tuner.cli import main
from tuner.interference import InterferenceMonitor, descendants
from tuner.probe import Activity, GpuProcess, SimProbe
from tuner.remeasure import rounds_for, visit_order
from tuner.sim import SimServer
from tuner.stats import relative_standard_error
from tuner.study import load_records

NOISY = "cpu=1.5,gpu=2GiB,throttle=HwSlowdown,jitter=0.3"


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def study(tmp_path, sim: SimServer, *extra: str, name: str = "noise", budget: int = 10):
    storage = f"sqlite:///{tmp_path}/{name}.db"
    code = run_cli(
        [
            "deepseek-r1:32b",
            "--host",
            sim.url,
            "--budget",
            str(budget),
            "--storage",
            storage,
            "--study",
            name,
            "--out",
            str(tmp_path / name),
            *extra,
        ]
    )
    assert code == 0
    return load_records(storage, name)


def test_every_measured_trial_carries_its_repeats_interval_rse_and_interference(tmp_path):
    with SimServer(gpus="1xRTX4090", seed=11) as sim:
        meta, records = study(tmp_path, sim, "--remeasure-rounds", "0")
    measured = [r for r in records if r.decode_tok_s is not None]
    assert measured and meta.target_rse == 0.02
    for r in measured:
        assert len(r.decode_samples) == r.repeats >= 3
        assert r.decode_tok_s == pytest.approx(statistics.fmean(r.decode_samples), rel=1e-3)
        assert r.decode_rse == pytest.approx(relative_standard_error(r.decode_samples), abs=1e-4)
        assert r.noisy == (r.decode_rse >= meta.target_rse)
        if r.noisy:
            assert r.repeats == 8  # it tried every repeat allowed before giving up
        block = r.interference
        assert block["source"] == "simulator" and block["other_cpu_during"] == 0.0
        assert block["gpu_processes_during"] == [] and block["throttle_during"] == []
        # TTFT from the simulator's own durations: at least its prompt time, never the 0 of a reply that
        # arrived at once
        assert r.ttft_s is not None and r.ttft_s > 0.001
    assert not meta.remeasure


def test_a_noisy_neighbour_marks_trials_noisy_and_the_contenders_are_measured_again(tmp_path):
    with SimServer(gpus="1xRTX4090", seed=12, interference=NOISY) as sim:
        meta, records = study(tmp_path, sim, "--remeasure-rounds", "3", budget=12)
    measured = [r for r in records if r.decode_tok_s is not None]
    noisy = [r for r in measured if r.noisy]
    assert noisy, "a 0.3 jitter must leave some trial above the 2% RSE target"
    for r in noisy:
        assert r.repeats == 8 and r.decode_rse >= 0.02
    for r in measured:  # the neighbour was seen before and during every trial
        block = r.interference
        assert block["other_cpu_before"] == 1.5 and block["other_cpu_during"] == 1.5
        assert [row[2] for row in block["gpu_processes_during"]] == ["other-tenant"]
        assert block["gpu_processes_during"][0][3] == 2 * 2**30
        assert block["throttle_before"] == ["HwSlowdown"] and block["throttle_during"] == ["HwSlowdown"]

    again = meta.remeasure
    assert again and len(again["trials"]) >= 2
    assert again["rounds"] == rounds_for(3, len(again["trials"]), 12) >= 2  # within half the budget in loads
    rounds = again["rounds"]
    assert [v["trial"] for v in again["visits"]] == [n for _, n in visit_order(again["order"], rounds)]
    remeasured = [r for r in records if r.remeasure_samples]
    assert sorted(r.number for r in remeasured) == again["trials"]
    for r in remeasured:
        assert len(r.remeasure_samples) == rounds and all(v > 0 for v in r.remeasure_samples)
        assert r.feasible and r.decode_tok_s is not None

    md = (tmp_path / "noise" / "report.md").read_text()
    assert "measured again after the search, interleaved" in md
    assert "Uncertain" in md or "noisy" in md
    assert "other processes used 1.5 CPU cores" in md and "HwSlowdown" in md


def test_resuming_a_finished_study_does_not_measure_the_same_contenders_twice(tmp_path):
    with SimServer(gpus="1xRTX4090", seed=13, interference="jitter=0.2") as sim:
        meta, _ = study(tmp_path, sim, "--remeasure-rounds", "2", budget=8)
        loads = sim.state()["counters"]["loads"]
        meta_again, _ = study(tmp_path, sim, "--remeasure-rounds", "2", budget=8)
        assert sim.state()["counters"]["loads"] == loads  # nothing new to measure
    assert meta_again.remeasure["trials"] == meta.remeasure["trials"]


def test_the_interference_monitor_counts_other_processes_and_never_ours_or_the_engines():
    me = __import__("os").getpid()
    tables = iter(
        [
            # pid: (name, parent, cpu seconds so far)
            {
                me: ("pytest", 1, 10.0),
                200: ("ollama", 1, 5.0),
                201: ("runner", 200, 1.0),
                300: ("stress", 1, 2.0),
            },
            {
                me: ("pytest", 1, 11.0),
                200: ("ollama", 1, 5.5),
                201: ("runner", 200, 2.0),
                300: ("stress", 1, 3.0),
            },
            {
                me: ("pytest", 1, 12.0),
                200: ("ollama", 1, 6.0),
                201: ("runner", 200, 4.0),
                300: ("stress", 1, 4.0),
            },
        ]
    )
    clock = iter([0.0, 1.0, 3.0])

    class FakeNvml:
        source = "nvml"

        def activity(self) -> Activity:
            return Activity(
                [GpuProcess(0, 201, "runner", 5 * 2**30), GpuProcess(0, 777, "Xorg", 2**28)], ["SwPowerCap"]
            )

    monitor = InterferenceMonitor(
        FakeNvml(), lambda: {200}, table=lambda: next(tables), clock=lambda: next(clock), cpu_count=2
    )
    monitor.start()
    monitor.mark()
    block = monitor.stop()
    assert block["source"] == "this host" and block["cpu_count"] == 2
    assert block["other_cpu_before"] == 1.0  # stress: 1 s of CPU in 1 s; ours and the engine's left out
    assert block["other_cpu_during"] == 0.5  # 1 s in 2 s
    assert block["top_cpu"] == [["stress", 300, 0.5]]
    assert block["gpu_processes_during"] == [[0, 777, "Xorg", 2**28]]  # the engine's runner left out
    assert block["throttle_during"] == ["SwPowerCap"]
    assert descendants({1: ("a", 0, 0), 2: ("b", 1, 0), 3: ("c", 2, 0), 4: ("d", 0, 0)}, [1]) == {1, 2, 3}


def test_the_simulator_reports_an_injected_neighbour_and_it_can_be_ended(tmp_path):
    with SimServer(gpus="2x24GiB", interference="cpu=0.5,gpu=1GiB,throttle=SwThermalSlowdown") as sim:
        probe = SimProbe(sim.url)
        try:
            seen = probe.activity()
            assert seen.host_other_cpu_cores == 0.5 and seen.throttle == ["SwThermalSlowdown"]
            assert [(p.gpu, p.name, p.used_bytes) for p in seen.processes] == [
                (0, "other-tenant", 2**30),
                (1, "other-tenant", 2**30),
            ]
            assert min(probe.used_bytes()) >= 2**30  # the neighbour's memory is in use
            sim.interfere("")
            quiet = probe.activity()
            assert quiet.processes == [] and quiet.throttle == [] and quiet.host_other_cpu_cores == 0.0
        finally:
            probe.close()


def test_relative_standard_error_and_the_interval_agree():
    from tuner.stats import t_interval, t_quantile

    values = [40.0, 41.0, 42.0, 43.0]
    interval = t_interval(values)
    assert interval is not None and interval.mean == 41.5
    assert interval.half_width == pytest.approx(
        t_quantile(3) * relative_standard_error(values) * interval.mean, rel=1e-9
    )
    assert math.isinf(relative_standard_error([1.0]))


def test_the_re_measure_stays_within_half_the_budget_and_alternates_its_order():
    assert rounds_for(3, 3, 40) == 3 and rounds_for(3, 4, 12) == 2 and rounds_for(5, 2, 8) == 2
    assert rounds_for(0, 3, 40) == 0 and rounds_for(3, 1, 40) == 0
    assert visit_order([1, 2, 3], 2) == [(0, 1), (0, 2), (0, 3), (1, 3), (1, 2), (1, 1)]
