"""The simulated GPUs' power, heat and clocks (tuner.sim.power): the model on its own, then through a real
SimServer (faults injected at start and mid-run, the simulated clock, telemetry in /sim/state, SimProbe).

Every clock here is simulated or a test's own counter: nothing depends on how fast this machine is.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import httpx
import pytest

from tests.sim.helpers import state
from tuner.hardware import parse_gpus
from tuner.probe import SimProbe, telemetry_of
from tuner.sim import SimServer
from tuner.sim.__main__ import main as sim_main
from tuner.sim.power import CARDS, PowerModel, Throttle

PUBLIC_TDP_W = {"RTX4090": 450, "RTX3090": 350, "A100-80GB": 400, "H100": 700, "L4": 72}


class Wall:
    """A wall clock that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model(card: str = "RTX4090", n: int = 1) -> PowerModel:
    return PowerModel(parse_gpus(f"{n}x{card}"), wall=Wall())


@pytest.mark.parametrize(("card", "tdp"), sorted(PUBLIC_TDP_W.items()))
def test_board_power_is_the_public_figure_and_the_default_limit(card: str, tdp: int) -> None:
    m = model(card)
    t = m.telemetry()[0]
    assert t["power_limit_w"] == tdp
    assert 0 < t["power_w"] < 0.25 * tdp and t["throttle_reasons"] == ["GpuIdle"]  # idle


def test_every_known_card_has_figures_that_make_sense() -> None:
    for name, c in CARDS.items():
        assert 0 < c.idle_w < c.tdp_w, name
        assert c.sm_idle_mhz < c.sm_max_mhz and c.mem_idle_mhz <= c.mem_max_mhz, name
        assert AMBIENT_AT_TDP_BELOW_SLOWDOWN(c), name


def AMBIENT_AT_TDP_BELOW_SLOWDOWN(c) -> bool:  # noqa: N802 - reads as the property it checks
    """At board power in the default 30 C air a card settles below its slowdown temperature."""
    return 30 + c.offset_c + c.tdp_w * c.c_per_w < c.slowdown_c


def test_power_is_capped_at_the_limit_and_the_cap_lowers_the_clock() -> None:
    m = model("RTX4090")
    m.work(10, [0], "prefill")  # compute-bound: asks for more than the board allows
    t = m.telemetry()[0]
    assert t["power_w"] == pytest.approx(450) and "SwPowerCap" in t["throttle_reasons"]
    assert t["sm_clock_mhz"] < CARDS["NVIDIA GeForce RTX 4090"].sm_max_mhz
    assert t["violation_s"]["power"] == pytest.approx(10)
    m.set_power_limit(200)  # now even decode is held at the lower limit
    m.work(5, [0], "decode")
    t = m.telemetry()[0]
    assert t["power_limit_w"] == 200 and t["power_w"] == pytest.approx(200)
    assert t["violation_s"]["power"] == pytest.approx(15)
    prompt, decode = m.slowdown([0])
    assert decode > 1.0 and prompt > 1.0  # the lower cap slows both phases
    with pytest.raises(ValueError, match="power limit"):
        m.set_power_limit(-5)


def test_an_l4_runs_at_its_72_w_cap_under_any_load() -> None:
    m = model("L4")
    m.work(30, [0], "decode")
    t = m.telemetry()[0]
    assert t["power_w"] == pytest.approx(72) and "SwPowerCap" in t["throttle_reasons"]
    assert m.slowdown([0]) == (1.0, 1.0)  # its usual operating point: the speed model already includes it


def test_temperature_rises_toward_steady_state_with_the_thermal_time_constant() -> None:
    m = model("H100")
    card = CARDS["NVIDIA H100 80GB HBM3"]
    start = m.telemetry()[0]["temperature_c"]
    readings = []
    for _ in range(6):
        m.work(card.tau_s, [0], "decode")
        readings.append(m.telemetry()[0]["temperature_c"])
    power = m.telemetry()[0]["power_w"]
    steady = m.ambient_c + card.offset_c + power * card.c_per_w
    assert start < readings[0] < readings[1] < readings[-1] <= steady + 1e-6
    # first order: after one time constant 63% of the way, after six almost all of it
    assert readings[0] - start == pytest.approx((steady - start) * (1 - math.exp(-1)), rel=0.02)
    assert steady - readings[-1] < 0.01 * (steady - start)
    m.idle(6 * card.tau_s)  # and it cools back
    assert m.telemetry()[0]["temperature_c"] < start + 0.05 * (steady - start)


def test_a_hot_card_lowers_its_clocks_and_counts_thermal_time() -> None:
    m = model("RTX4090")
    m.set_ambient(70)  # a blocked intake: decode heat takes it past the slowdown temperature
    m.work(600, [0], "decode")
    t = m.telemetry()[0]
    card = CARDS["NVIDIA GeForce RTX 4090"]
    assert t["temperature_c"] > card.slowdown_c
    assert "SwThermalSlowdown" in t["throttle_reasons"]
    assert t["sm_clock_mhz"] < 0.95 * card.sm_max_mhz
    assert t["violation_s"]["thermal"] > 0 and t["violation_s"]["power"] == 0
    assert m.slowdown([0])[1] > 1.05
    assert "SwThermalSlowdown" in m.slowdown_reasons()


def test_an_injected_throttle_collapses_the_clock_while_the_temperature_stays_normal() -> None:
    m = model("RTX4090")
    m.throttles = [Throttle.parse("100:50:thermal")]
    m.work(99, [0], "decode")
    assert m.slowdown([0]) == (1.0, 1.0) and m.telemetry()[0]["throttle_reasons"] == []
    m.work(2, [0], "decode")  # now inside the window
    t = m.telemetry()[0]
    assert t["throttle_reasons"] == ["HwThermalSlowdown"]
    assert t["sm_clock_mhz"] == pytest.approx(0.4 * 2520)
    assert t["temperature_c"] < 87
    assert m.slowdown([0])[1] == pytest.approx(1 / 0.4)
    assert t["violation_s"]["thermal"] == pytest.approx(1, abs=1e-6)
    m.work(60, [0], "decode")  # past the end of the window
    assert m.slowdown([0]) == (1.0, 1.0)
    assert m.telemetry()[0]["violation_s"]["thermal"] == pytest.approx(50, abs=1e-6)


def test_drift_lowers_decode_speed_over_simulated_time() -> None:
    m = model("RTX4090")
    m.drift_pct_per_hour = 10
    assert m.slowdown([0])[1] == pytest.approx(1.0)
    m.idle(1800)
    assert m.slowdown([0])[1] == pytest.approx(1 / 0.95)
    m.idle(1800)
    assert m.slowdown([0])[1] == pytest.approx(1 / 0.90)
    assert m.slowdown([0])[0] == 1.0  # prompt processing is unchanged: only decode drifts


def test_energy_is_monotonic_and_power_times_time() -> None:
    m = model("RTX4090", n=2)
    energy = [t["energy_j"] for t in m.telemetry()]
    m.work(100, [0], "decode")  # GPU 1 idles meanwhile
    after = m.telemetry()
    card = CARDS["NVIDIA GeForce RTX 4090"]
    assert after[0]["energy_j"] - energy[0] == pytest.approx(100 * after[0]["power_w"], rel=1e-6)
    assert after[1]["energy_j"] - energy[1] == pytest.approx(100 * card.idle_w, rel=1e-6)
    readings = [after[0]["energy_j"]]
    for phase in ("prefill", "load", "decode"):
        m.work(3, [0, 1], phase)
        m.idle(7)
        readings.append(m.telemetry()[0]["energy_j"])
    assert readings == sorted(readings) and len(set(readings)) == len(readings)


def test_idle_time_between_work_comes_from_the_wall_clock_not_twice() -> None:
    wall = Wall()
    m = PowerModel(parse_gpus("RTX4090"), wall=wall)
    m.sync()
    m.work(5, [0], "decode")  # billed, not slept (the server is not realtime)
    wall.now += 0.5
    m.sync()
    assert m.time_s == pytest.approx(5.5)
    m.realtime = True
    m.work(4, [0], "decode")  # a realtime server sleeps the 4 s after billing them
    wall.now += 1
    m.sync()  # mid-sleep: no idle yet
    assert m.time_s == pytest.approx(9.5)
    wall.now += 4
    m.sync()  # 1 s of the 5 was idle
    assert m.time_s == pytest.approx(10.5)


def test_throttle_and_drift_specs() -> None:
    assert Throttle.parse("600") == Throttle(600.0, None, "power")
    assert Throttle.parse("+10:5:thermal", now_s=100) == Throttle(110.0, 5.0, "thermal")
    assert Throttle.parse("now:30", now_s=7).at_s == 7
    for bad in ("", "x", "10:-1", "10:5:heat", "1:2:3:4", "-5"):
        with pytest.raises(ValueError, match="Invalid throttle"):
            Throttle.parse(bad)


# -- through the server --------------------------------------------------------------------------------
def _generate(url: str, n: int = 64, tag: str = "llama3.1:8b") -> dict:
    reply = httpx.post(
        url + "/api/generate",
        json={"model": tag, "prompt": "hello there", "stream": False, "options": {"num_predict": n}},
        timeout=30,
    )
    reply.raise_for_status()
    return reply.json()


def _decode_tok_s(reply: dict) -> float:
    return reply["eval_count"] / (reply["eval_duration"] / 1e9)


def test_state_serves_telemetry_and_the_simulated_clock_advances_with_the_work() -> None:
    with SimServer(gpus="2xRTX4090", noise=0, local="all", clock=Wall()) as sim:
        before = state(sim)
        assert before["time_s"] == 0
        assert {"index", "used_bytes", "throttle_reasons", "telemetry"} <= set(before["gpus"][0])
        reply = _generate(sim.url, 128)
        after = state(sim)
        work = (reply["load_duration"] + reply["prompt_eval_duration"] + reply["eval_duration"]) / 1e9
        assert after["time_s"] >= work
        tel = after["gpus"][0]["telemetry"]
        assert tel["time_s"] == after["time_s"]
        assert tel["energy_j"] > before["gpus"][0]["telemetry"]["energy_j"]
        assert tel["power_w"] > 100 and tel["sm_clock_mhz"] > 2000  # read right after the work


def test_an_injected_throttle_slows_decode_and_shows_in_reasons_and_counters() -> None:
    with SimServer(gpus="1xRTX4090", noise=0, local="all", clock=Wall(), inject_throttle=["0:100000"]) as sim:
        slow = _decode_tok_s(_generate(sim.url))
        tel = state(sim)["gpus"][0]
        assert "HwPowerBrakeSlowdown" in tel["telemetry"]["throttle_reasons"]
        assert "HwPowerBrakeSlowdown" in tel["throttle_reasons"]  # what the interference monitor reads
        assert tel["telemetry"]["violation_s"]["power"] > 0
    with SimServer(gpus="1xRTX4090", noise=0, local="all", clock=Wall()) as sim:
        normal = _decode_tok_s(_generate(sim.url))
    assert slow == pytest.approx(0.4 * normal, rel=0.01)


def test_a_throttle_injected_mid_run_then_cleared(tmp_path) -> None:
    with SimServer(gpus="1xRTX4090", noise=0, local="all", clock=Wall()) as sim:
        first = _decode_tok_s(_generate(sim.url))
        reply = httpx.post(sim.url + "/sim/power", json={"throttle": "now:3600:thermal"})
        assert reply.status_code == 200 and reply.json()["power"]["throttles"][0]["kind"] == "thermal"
        throttled = _decode_tok_s(_generate(sim.url))
        assert throttled < 0.5 * first
        assert "HwThermalSlowdown" in state(sim)["gpus"][0]["telemetry"]["throttle_reasons"]
        httpx.post(sim.url + "/sim/power", json={"clear": True}).raise_for_status()
        assert _decode_tok_s(_generate(sim.url)) == pytest.approx(first, rel=0.01)
        bad = httpx.post(sim.url + "/sim/power", json={"throttle": "soon"})
        assert bad.status_code == 400 and "Invalid throttle 'soon'" in bad.json()["error"]
        unknown = httpx.post(sim.url + "/sim/power", json={"heat": 1})
        assert unknown.status_code == 400 and "heat" in unknown.json()["error"]


def test_drift_and_idle_time_through_the_endpoint() -> None:
    with SimServer(gpus="1xRTX4090", noise=0, local="all", clock=Wall(), inject_drift=20) as sim:
        first = _decode_tok_s(_generate(sim.url))
        t0 = state(sim)["time_s"]
        reply = httpx.post(sim.url + "/sim/power", json={"advance_s": 1800})
        assert reply.json()["power"]["time_s"] == pytest.approx(t0 + 1800)
        later = _decode_tok_s(_generate(sim.url))
        assert later == pytest.approx(first * (1 - 0.2 * (t0 + 1800) / 3600), rel=0.01)


def test_sim_probe_reads_telemetry_over_http() -> None:
    with SimServer(gpus="2xH100", noise=0, local="all", clock=Wall()) as sim:
        probe = SimProbe(sim.url)
        try:
            idle = probe.telemetry()
            assert [t.gpu for t in idle] == [0, 1]
            assert idle[0].power_limit_w == 700 and idle[0].throttle == ("GpuIdle",)
            assert idle[0].violation_s == {"power": 0.0, "thermal": 0.0}
            _generate(sim.url, 256)
            busy = telemetry_of(probe)
            assert busy[0].time_s > idle[0].time_s
            assert busy[0].energy_j is not None and idle[0].energy_j is not None
            assert busy[0].energy_j > idle[0].energy_j
            assert busy[0].sm_clock_mhz == 1980 and busy[0].mem_clock_mhz == 2619
        finally:
            probe.close()


def test_cli_flags_bad_values_exit_2_with_one_line(capsys) -> None:
    assert sim_main(["--port", "0", "--inject-throttle", "later"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Invalid throttle 'later'" in err[0]
    assert sim_main(["--port", "0", "--inject-drift", "150"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Invalid drift" in err[0]


CAPTURE = Path(__file__).resolve().parents[2] / "reports" / "examples" / "h100-nvml" / "telemetry.csv"


def _phases() -> dict[str, dict[str, float]]:
    """Each phase of the real H100 capture (NVML at 4 Hz): its length, mean power, median SM clock, last
    temperature and the power violation time it added."""
    rows: dict[str, list[dict[str, str]]] = {}
    with CAPTURE.open() as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["phase"], []).append(row)
    out = {}
    for phase, rs in rows.items():
        out[phase] = {
            "s": float(rs[-1]["t_s"]) - float(rs[0]["t_s"]),
            "power_w": statistics.fmean(int(r["power_mw"]) for r in rs) / 1000,
            "sm_mhz": statistics.median(int(r["sm_clock_mhz"]) for r in rs),
            "start_c": float(rs[0]["temperature_c"]),
            "end_c": float(rs[-1]["temperature_c"]),
            "power_violation_s": (int(rs[-1]["viol_power_ns"]) - int(rs[0]["viol_power_ns"])) / 1e9,
        }
    return out


def test_the_h100_model_replays_a_real_capture() -> None:
    """The capture's phases (idle, a compute burn at the cap, a memory-bound load like decode, a cool-down)
    run through the model as idle, prefill, decode and idle: power, clocks, heating and the power violation
    counter follow the real card. The cool-down is looser: the real card held its clocks and ~100 W for a
    while after the load and its heatsink cooled slower than the model's one time constant."""
    real = _phases()
    m = model("H100")
    idle = m.telemetry()[0]
    assert idle["power_w"] == pytest.approx(real["idle"]["power_w"], rel=0.05)
    assert idle["temperature_c"] == pytest.approx(real["idle"]["start_c"], abs=3)
    for phase, run in (("compute", "prefill"), ("memory", "decode")):
        want = real[phase]
        before = m.telemetry()[0]
        m.work(want["s"], [0], run)
        got = m.telemetry()[0]
        mean_w = (got["energy_j"] - before["energy_j"]) / want["s"]
        assert mean_w == pytest.approx(want["power_w"], rel=0.05), phase
        assert got["sm_clock_mhz"] == pytest.approx(want["sm_mhz"], rel=0.05), phase
        assert got["temperature_c"] == pytest.approx(want["end_c"], abs=3), phase
        added = got["violation_s"]["power"] - before["violation_s"]["power"]
        assert added == pytest.approx(want["power_violation_s"], abs=2), phase
    hot = m.telemetry()[0]["temperature_c"]
    m.idle(real["cool"]["s"])
    assert real["idle"]["start_c"] - 3 < m.telemetry()[0]["temperature_c"] < hot


def test_a_gpu_waiting_on_the_cpus_layers_draws_less() -> None:
    def mean_power(num_gpu: int) -> float:
        with SimServer(gpus="1xRTX4090", noise=0, local="all", clock=Wall()) as sim:
            httpx.post(
                sim.url + "/api/generate", json={"model": "llama3.1:8b", "options": {"num_gpu": num_gpu}}
            )
            before = state(sim)
            reply = httpx.post(
                sim.url + "/api/generate",
                json={
                    "model": "llama3.1:8b",
                    "prompt": "hi",
                    "stream": False,
                    "options": {"num_gpu": num_gpu},
                },
                timeout=30,
            ).json()
            after = state(sim)
        assert reply["eval_count"] > 0
        joules = after["gpus"][0]["telemetry"]["energy_j"] - before["gpus"][0]["telemetry"]["energy_j"]
        return joules / (after["time_s"] - before["time_s"])

    full, spilled = mean_power(33), mean_power(26)  # 26 of 33 layers: the CPU reads the rest
    idle_w = CARDS["NVIDIA GeForce RTX 4090"].idle_w
    assert idle_w < spilled < 0.6 * full
