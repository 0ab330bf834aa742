"""The soak's detection, on synthetic series: drift (beyond the tolerance and beyond noise), clock collapse at
normal temperature (not a hot GPU's thermal drop), throttle time and energy from cumulative counters; and a
whole soak (tuner.qualify.soak.run_soak) over an in-memory engine whose probe reports telemetry on a simulated
clock, with a throttle window and a decode decline injected."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tests.fakes import FakeBackend, FakeMachine, FakeProbe
from tuner.backend.base import EngineOptions, Generation
from tuner.errors import BadResponse
from tuner.probe import Telemetry
from tuner.qualify import soakstats
from tuner.qualify.soak import SoakResult, SoakSettings, run_soak


def _series(minutes: float, every_s: float, base: float, pct_per_h: float, noise: float, seed: int = 1):
    rng = random.Random(seed)
    times = [i * every_s for i in range(int(minutes * 60 / every_s))]
    values = [base * (1 + pct_per_h / 100 * t / 3600) * (1 + rng.gauss(0, noise)) for t in times]
    return times, values


def test_a_steady_noisy_soak_is_not_drift():
    times, values = _series(30, 2, 100.0, 0.0, 0.02)
    t = soakstats.trend(times, values, tolerance_pct_per_h=5)
    assert t is not None and not t.drift
    assert abs(t.pct_per_h) < 5
    assert t.samples == len(times)


def test_a_decline_beyond_the_tolerance_is_drift_with_its_rate():
    times, values = _series(30, 2, 100.0, -20.0, 0.01)
    t = soakstats.trend(times, values, tolerance_pct_per_h=5)
    assert t is not None and t.drift
    assert -24 < t.pct_per_h < -16


def test_a_slope_within_the_tolerance_is_not_drift():
    times, values = _series(30, 2, 100.0, -3.0, 0.0)
    t = soakstats.trend(times, values, tolerance_pct_per_h=5)
    assert t is not None and not t.drift and -3.5 < t.pct_per_h < -2.5


def test_a_slope_inside_the_noise_is_not_drift():
    # 10 %/h over two minutes of 20 % noise: the fit cannot tell it from noise
    times, values = _series(2, 10, 100.0, -10.0, 0.2, seed=3)
    t = soakstats.trend(times, values, tolerance_pct_per_h=5)
    assert t is not None and not t.drift and abs(t.pct_per_h) <= t.noise_pct_per_h


def test_one_stalled_generation_does_not_make_drift():
    times, values = _series(30, 2, 100.0, 0.0, 0.01)
    values[-1] = 5.0  # the last generation stalled
    t = soakstats.trend(times, values, tolerance_pct_per_h=5)
    assert t is not None and not t.drift


def test_a_short_soak_does_not_extrapolate_a_wobble_into_drift():
    # 30 %/h, clean, but over 12 seconds: a 0.1 % change, no drift however many samples
    times = [i * 0.002 for i in range(6000)]
    values = [100.0 * (1 + 0.30 * t / 3600) for t in times]
    t = soakstats.trend(times, values, tolerance_pct_per_h=5)
    assert t is not None and 29 < t.pct_per_h < 31 and not t.drift


def test_too_few_samples_give_no_trend():
    times, values = _series(1, 6, 100.0, -50.0, 0.0)  # ten samples: too few to judge, however clear
    assert len(times) == 10 and soakstats.trend(times, values, 5) is None


def test_clock_collapse_at_normal_temperature_is_found_and_a_hot_drop_is_not():
    samples = [(float(i), 0, 1800.0, 65.0) for i in range(40)]
    samples[10] = (10.0, 0, 700.0, 66.0)  # cool: a collapse
    samples[20] = (20.0, 0, 900.0, 90.0)  # hot: thermal throttling, not a collapse
    found = soakstats.clock_collapses(samples, fraction=0.7, hot_c=83)
    assert [(c.time_s, c.sm_clock_mhz) for c in found] == [(10.0, 700.0)]
    assert found[0].median_mhz == 1800.0


def test_clock_collapses_are_judged_per_gpu():
    samples = [(float(i), g, 1800.0 if g == 0 else 1200.0, 60.0) for i in range(20) for g in (0, 1)]
    assert soakstats.clock_collapses(samples, 0.7, 83) == []  # GPU 1 is slower, not collapsed


def test_counter_deltas_by_cause_and_a_reset_never_goes_negative():
    assert soakstats.counter_delta({"power": 1.0, "thermal": 0.0}, {"power": 4.5, "thermal": 2.0}) == {
        "power": 3.5,
        "thermal": 2.0,
    }
    assert soakstats.counter_delta({"power": 9.0}, {"power": 1.0}) == {"power": 0.0}


def test_flagged_readings_become_spans():
    times = [float(t) for t in range(10)]
    assert soakstats.spans(times, {2.0, 3.0, 4.0, 7.0, 9.0}) == [(2.0, 4.0), (7.0, 7.0), (9.0, 9.0)]
    assert soakstats.spans(times, set()) == []


def test_energy_per_token():
    assert soakstats.energy_per_token(1000.0, 4000.0, 1500) == 2.0
    assert soakstats.energy_per_token(None, 4000.0, 1500) is None
    assert soakstats.energy_per_token(1000.0, 4000.0, 0) is None


def test_depth_ratio_is_deepest_over_shallowest():
    assert soakstats.depth_ratio([(8000, 80.0), (100, 100.0), (4000, 90.0)]) == 0.8
    assert soakstats.depth_ratio([(100, 100.0)]) is None


# -- a whole soak over an in-memory engine with telemetry on a simulated clock -----------------------------
@dataclass
class World:
    """The simulated clock and the injected faults the fake engine and probe share."""

    time_s: float = 0.0
    energy_j: float = 0.0
    power_violation_s: float = 0.0
    throttle_from_s: float = 1e12
    throttle_to_s: float = 1e12
    decline_pct_per_h: float = 0.0
    power_w: float = 300.0


class SoakBackend(FakeBackend):
    def __init__(self, world: World) -> None:
        super().__init__(FakeMachine())
        self.world = world

    def generate(self, model, prompt, options, *, num_predict, seed=0) -> Generation:
        w = self.world
        speed = 100.0 * (1 + w.decline_pct_per_h / 100 * w.time_s / 3600)
        throttled = w.throttle_from_s <= w.time_s < w.throttle_to_s
        if throttled:
            speed *= 0.6
        seconds = num_predict / speed
        w.time_s += seconds
        w.energy_j += w.power_w * seconds
        if throttled:
            w.power_violation_s += seconds
        return Generation(len(prompt) // 4, 0.01, num_predict, seconds, 0.02, seconds + 0.02)


class SmallContextBackend(SoakBackend):
    """An engine whose context is smaller than the soak asked for: prompts past it are refused."""

    def generate(self, model, prompt, options, *, num_predict, seed=0) -> Generation:
        if len(prompt) // 4 > 3000:
            raise BadResponse("request (9000 tokens) exceeds the available context size (4096 tokens)")
        return super().generate(model, prompt, options, num_predict=num_predict, seed=seed)


class TelemetryProbe(FakeProbe):
    source = "simulator"

    def __init__(self, world: World) -> None:
        super().__init__(FakeMachine())
        self.world = world

    def telemetry(self) -> list[Telemetry]:
        w = self.world
        throttled = w.throttle_from_s <= w.time_s < w.throttle_to_s
        return [
            Telemetry(
                0,
                w.time_s,
                sm_clock_mhz=1500.0 if throttled else 2500.0,
                mem_clock_mhz=10500.0,
                temperature_c=70.0,
                power_w=w.power_w,
                power_limit_w=450.0,
                energy_j=w.energy_j,
                throttle=("sw_power_cap",) if throttled else (),
                violation_s={"power": w.power_violation_s, "thermal": 0.0},
            )
        ]


SETTINGS = SoakSettings(heat_s=300, soak_s=1800, depth_steps=3, num_predict=128)


def _soak(world: World) -> SoakResult:
    backend = SoakBackend(world)
    result = run_soak(
        backend, TelemetryProbe(world), "toy:q4", EngineOptions(33, 8192), SETTINGS, monotonic=lambda: 0.0
    )
    assert backend.loaded is None  # unloaded at the end
    return result


def test_a_quiet_soak_runs_its_minutes_on_the_telemetry_clock():
    world = World()
    result = _soak(world)
    f = result.figures
    assert result.clock == "telemetry"
    assert 29.9 <= f["minutes"] <= 30.1  # the soak proper, after the heat soak
    assert f["heat_samples"] > 0 and f["samples"] > 100
    assert f["throttle_s"] == 0 and f["clock_collapses"] == 0 and not f["drift"]
    assert f["soak_j_per_token"] == pytest.approx(300.0 / 100.0, rel=1e-6)  # 300 W at 100 tok/s
    # the depth soak: a probe of the tokens per filler word, then 3 steps, the last filling the context
    depths = sorted(int(d) for d in f["depth_decode_tok_s"])
    assert len(depths) == 4 and [s.phase for s in result.samples].count("depth") == 7
    assert 0.85 * 8192 <= depths[-1] <= 8192 - SETTINGS.num_predict
    assert "depth_error" not in f
    assert SoakResult.from_dict(result.to_dict()) == result


def test_a_failing_depth_step_ends_the_depth_soak_and_keeps_the_soak():
    world = World()
    result = run_soak(
        SmallContextBackend(world), TelemetryProbe(world), "toy:q4", EngineOptions(33, 8192), SETTINGS
    )
    f = result.figures
    assert "exceeds the available context size" in f["depth_error"]
    assert f["samples"] > 100 and f["soak_decode_tok_s"] > 0 and f["throttle_s"] == 0
    assert 1 <= len(f["depth_decode_tok_s"]) < 4


def test_the_soak_says_its_progress_each_tenth():
    world = World(throttle_from_s=900, throttle_to_s=1020)
    said: list[str] = []
    run_soak(
        SoakBackend(world),
        TelemetryProbe(world),
        "toy:q4",
        EngineOptions(33, 8192),
        SETTINGS,
        on_phase=said.append,
    )
    progress = [s for s in said if s.startswith("soak ")]
    assert said[:2] == ["heat", "soak"] and said[-1] == "depth" and len(progress) == 9
    assert progress[0].startswith(
        "soak 3.0/30 min: decode 100.0 tok/s, GPU0 2500 MHz 70 °C 300 W, throttle 0.0 s"
    )
    assert progress[-1].endswith(" s so far")
    assert float(progress[-1].split("throttle ")[1].split(" s")[0]) == pytest.approx(120, abs=3)


def test_an_injected_throttle_is_measured_and_named():
    world = World(throttle_from_s=900, throttle_to_s=1020)  # two minutes, inside the soak proper
    f = _soak(world).figures
    assert f["throttle_s"] == pytest.approx(120, abs=3)
    assert f["throttle_by_cause_s"]["power"] == pytest.approx(120, abs=3)
    assert f["power_capped_s"] == pytest.approx(120, abs=3) and f["thermal_throttle_s"] == 0
    assert f["throttle_reasons"]["sw_power_cap"] > 0
    # the SM clock drop at 70 °C reads as a collapse at normal temperature
    assert f["clock_collapses"] > 0


def test_a_throttle_during_the_heat_soak_is_discarded():
    f = _soak(World(throttle_from_s=60, throttle_to_s=180)).figures
    assert f["throttle_s"] == 0 and f["clock_collapses"] == 0


def test_an_injected_drift_is_flagged():
    f = _soak(World(decline_pct_per_h=-20)).figures
    assert f["drift"] and -25 < f["soak_drift_pct_per_h"] < -15


def test_without_telemetry_the_soak_runs_on_the_monotonic_clock():
    ticks = iter(range(0, 10_000, 30))  # 30 s per reading
    result = run_soak(
        FakeBackend(FakeMachine()),
        FakeProbe(FakeMachine()),
        "toy:q4",
        EngineOptions(33, 4096),
        SoakSettings(heat_s=60, soak_s=300, depth_steps=0, num_predict=16),
        monotonic=lambda: float(next(ticks)),
    )
    assert result.clock == "monotonic"
    assert result.figures["samples"] == 10  # 300 s at 30 s a reading
    assert "throttle_s" not in result.figures and "soak_j_per_token" not in result.figures


def test_the_soak_figure_draws_the_telemetry_panels_where_there_is_telemetry():
    from tuner.report.soakplot import plot_soak, soak_png

    world = World(throttle_from_s=900, throttle_to_s=1020)
    result = _soak(world)
    samples = result.to_dict()["samples"]
    (span,) = result.figures["collapse_spans_s"]  # the throttle window's low SM clock at 70 °C
    assert 900 - 3 <= span[0] < span[1] <= 1020 + 3
    fig = plot_soak(samples, "toy", result.figures["collapse_spans_s"])
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == [
        "decode tok/s",
        "SM clock MHz",
        "temperature °C",
        "throttle s (cum.)",
        "memory clock MHz",
        "power W",
    ]
    throttle_axis = fig.axes[3]
    lines = {line.get_label(): max(line.get_ydata()) for line in throttle_axis.get_lines()}
    assert lines["power"] == pytest.approx(120, abs=3) and lines["thermal"] == 0
    bare = [{**s, "telemetry": []} for s in samples]
    assert [ax.get_ylabel() for ax in plot_soak(bare, "toy").axes] == ["decode tok/s"]
    assert soak_png(samples, "toy")[:4] == b"\x89PNG"
