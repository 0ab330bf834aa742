"""Power, thermal and energy telemetry in the product: NvmlProbe.telemetry through a stand-in pynvml (the
real one needs a driver), the energy of a trial's measured window (tuner.measure.energy_between), the
most-efficient pick (tuner.decision.energy), and a whole study on the simulator whose trials.csv and report
carry J/token, next to an older study without energy that still reports.
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import pandas as pd
import pytest

from tuner.cli import main
from tuner.decision.energy import energy_picks
from tuner.decision.picks import decide
from tuner.measure import energy_between, throttle_between
from tuner.probe import NvmlProbe, Telemetry, telemetry_of
from tuner.report import write_report
from tuner.schema import TrialRecord
from tuner.sim import SimServer
from tuner.study import load_records
from tuner.units import GiB


def fake_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs. GPU 0 answers everything; GPU 1 is an older part: no power reading, no energy counter, no
    thermal violation counter (NotSupported), and the driver predates the ClocksEventReasons name."""

    class NVMLError(Exception):
        pass

    class Violation:
        def __init__(self, ns: int) -> None:
            self.referenceTime, self.violationTime = 1, ns  # noqa: N815 - NVML's field names

    def not_on_1(value: object):
        def call(handle: int, *args: object) -> object:
            if handle == 1:
                raise NVMLError("Not Supported")
            return value

        return call

    def clock(handle: int, kind: int) -> int:
        return {1: 1755, 2: 2619}[kind] if handle == 0 else {1: 1410, 2: 1593}[kind]

    def violation(handle: int, policy: int) -> Violation:
        if handle == 1 and policy == 1:
            raise NVMLError("Not Supported")
        return Violation(2_500_000_000 if policy == 0 else 750_000_000)

    def event_reasons(handle: int) -> int:
        if handle == 1:
            raise AttributeError("this driver has no nvmlDeviceGetCurrentClocksEventReasons")
        return 0x4 | 0x40

    module = types.SimpleNamespace(
        NVMLError=NVMLError,
        NVML_CLOCK_SM=1,
        NVML_CLOCK_MEM=2,
        NVML_TEMPERATURE_GPU=0,
        NVML_PERF_POLICY_POWER=0,
        NVML_PERF_POLICY_THERMAL=1,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlSystemGetDriverVersion=lambda: "550.54",
        nvmlDeviceGetClockInfo=clock,
        nvmlDeviceGetTemperature=lambda h, sensor: 64 if h == 0 else 41,
        nvmlDeviceGetPowerUsage=not_on_1(612_345),  # mW
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000 if h == 0 else 400_000,  # mW
        nvmlDeviceGetTotalEnergyConsumption=not_on_1(123_456_789),  # mJ
        nvmlDeviceGetViolationStatus=violation,
        nvmlDeviceGetCurrentClocksEventReasons=event_reasons,
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x20,
    )
    monkeypatch.setitem(sys.modules, "pynvml", module)


def test_nvml_telemetry_maps_units_and_loses_only_what_is_not_supported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_pynvml(monkeypatch)
    full, old = NvmlProbe().telemetry()
    assert (full.gpu, full.sm_clock_mhz, full.mem_clock_mhz, full.temperature_c) == (0, 1755, 2619, 64)
    assert full.power_w == pytest.approx(612.345) and full.power_limit_w == pytest.approx(700)
    assert full.energy_j == pytest.approx(123_456.789)
    assert full.violation_s == {"power": pytest.approx(2.5), "thermal": pytest.approx(0.75)}
    assert full.throttle == ("SwPowerCap", "HwThermalSlowdown")
    assert (old.gpu, old.sm_clock_mhz, old.temperature_c, old.power_limit_w) == (1, 1410, 41, 400)
    assert old.power_w is None and old.energy_j is None
    assert old.violation_s == {"power": pytest.approx(2.5)}  # the thermal counter: NotSupported
    assert old.throttle == ("SwThermalSlowdown",)  # from the older name of the call
    assert full.time_s == old.time_s  # one reading, one clock


def test_telemetry_of_a_probe_without_it_is_empty() -> None:
    class Bare:
        pass

    assert telemetry_of(Bare()) == []


# -- the energy of a window -----------------------------------------------------------------------------
def _t(gpu: int, time_s: float, energy_j: float | None) -> Telemetry:
    return Telemetry(gpu=gpu, time_s=time_s, energy_j=energy_j)


def test_energy_of_a_window_sums_the_gpus_counter_deltas() -> None:
    energy = energy_between([_t(0, 10, 1000), _t(1, 10, 500)], [_t(0, 14, 1900), _t(1, 14, 700)], tokens=550)
    assert energy is not None
    assert energy.energy_j == pytest.approx(1100) and energy.window_s == pytest.approx(4)
    assert energy.energy_j_per_token == pytest.approx(2.0) and energy.mean_power_w == pytest.approx(275)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], []),  # no telemetry at all
        ([_t(0, 0, None)], [_t(0, 1, None)]),  # no energy counter
        ([_t(0, 0, 100), _t(1, 0, None)], [_t(0, 1, 200), _t(1, 1, 5)]),  # one GPU without it
        ([_t(0, 0, 100)], [_t(0, 1, 50)]),  # the counter went back (driver reloaded)
        ([_t(0, 0, 100)], [_t(1, 1, 200)]),  # not the same GPUs
    ],
)
def test_no_energy_unless_every_gpu_counts_it_both_times(before, after) -> None:
    assert energy_between(before, after, tokens=100) is None


def test_throttle_seconds_of_a_window_by_cause_the_most_of_any_gpu() -> None:
    def v(gpu: int, power: float, thermal: float | None = None) -> Telemetry:
        counters = {"power": power} if thermal is None else {"power": power, "thermal": thermal}
        return Telemetry(gpu=gpu, time_s=0, violation_s=counters)

    held = throttle_between([v(0, 10, 1), v(1, 4)], [v(0, 12.5, 4), v(1, 9)])
    assert held == {"power": pytest.approx(5), "thermal": pytest.approx(3)}
    assert throttle_between([], [v(0, 3, 3)]) == {}  # nothing to subtract from


# -- the pick ---------------------------------------------------------------------------------------------
def _record(
    number: int, speed: float, jpt: float | None, ctx: int = 4096, on_gpu: bool = True
) -> TrialRecord:
    return TrialRecord(
        number=number,
        state="COMPLETE",
        tag="m:q4",
        num_gpu=33,
        num_ctx=ctx,
        decode_tok_s=speed,
        decode_samples=[speed * 0.999, speed, speed * 1.001],
        peak_vram_bytes=5 * GiB,
        gpu_fraction=1.0 if on_gpu else 0.8,
        cpu_spill=not on_gpu,
        feasible=True,
        energy_j_per_token=jpt,
        mean_power_w=300.0 if jpt else None,
    )


def test_least_energy_at_the_users_context_fully_on_the_gpu() -> None:
    pool = [
        _record(0, 100, 3.0),
        _record(1, 120, 2.5),
        _record(2, 150, 1.5, ctx=2048),  # less energy, but below the user's context
        _record(3, 60, 1.2, on_gpu=False),  # less energy, but spilled to the CPU
    ]
    chosen, missing = energy_picks(pool, user_ctx=4096)
    assert missing == {} and chosen["most_efficient"][0].number == 1
    assert "2.5 J/token" in chosen["most_efficient"][1]


def test_a_tie_within_noise_goes_to_the_faster_config() -> None:
    chosen, _ = energy_picks([_record(0, 100, 2.00), _record(1, 140, 2.04), _record(2, 90, 2.6)], user_ctx=0)
    assert chosen["most_efficient"][0].number == 1
    assert "tied within noise with 1 other config" in chosen["most_efficient"][1]


def test_no_energy_no_pick_and_only_spilled_configs_say_why() -> None:
    assert energy_picks([_record(0, 100, None)], user_ctx=0) == ({}, {})
    chosen, missing = energy_picks([_record(0, 100, 2.0, on_gpu=False)], user_ctx=0)
    assert chosen == {} and "fully on the GPU" in missing["most_efficient"]


def test_the_decision_names_the_pick_only_where_energy_was_measured() -> None:
    from tuner.decision.picks import bare_meta

    with_energy = [_record(0, 100, 3.0), _record(1, 120, 2.5)]
    assert decide(bare_meta(), with_energy).picks["most_efficient"].trial.number == 1
    old = [replace(r, energy_j_per_token=None, mean_power_w=None) for r in with_energy]
    decision = decide(bare_meta(), old)
    assert "most_efficient" not in decision.picks and "most_efficient" not in decision.names


# -- a whole study on the simulator -----------------------------------------------------------------------
def _run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_a_study_on_the_simulator_records_energy_and_reports_the_min_energy_pick(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "r"
    with SimServer(gpus="1xRTX4090", seed=3, local="all") as sim:
        args = ["llama3.1:8b", "--host", sim.url, "--budget", "4", "--storage", storage, "--out", str(out)]
        assert _run_cli(args) == 0
    trials = pd.read_csv(out / "trials.csv")
    measured = trials[trials["decode_tok_s"].notna()]
    assert len(measured) >= 3
    assert measured["energy_j_per_token"].notna().all() and (measured["energy_j_per_token"] > 0).all()
    assert measured["energy_j"].notna().all()
    report = (out / "report.md").read_text()
    assert "energy (J/token)" in report and "| least energy |" in report
    assert (out / "pick-most-efficient.Modelfile").exists()
    assert "J/token" in (out / "pick-most-efficient.Modelfile").read_text()

    # The same study as an older autotune stored it: no energy anywhere. It still reports, without the pick.
    meta, records = load_records(storage, "llama3.1-8b")
    old = [replace(r, energy_j=None, energy_j_per_token=None, mean_power_w=None) for r in records]
    written = write_report(meta, old, tmp_path / "old")
    text = written["report.md"].read_text()
    assert "least energy" not in text and "J/token" not in text and "| fastest" in text
    old_csv = pd.read_csv(written["trials.csv"])
    assert old_csv["energy_j_per_token"].isna().all()


def test_a_record_stored_before_energy_reads_back_without_it() -> None:
    stored = {
        "number": 3,
        "state": "COMPLETE",
        "tag": "m:q4",
        "num_gpu": 33,
        "num_ctx": 4096,
        "decode_tok_s": 50.0,
    }
    record = TrialRecord.from_attrs(stored)
    assert (record.energy_j, record.energy_j_per_token, record.mean_power_w) == (None, None, None)
    row = record.to_row()
    assert row["energy_j_per_token"] is None and row["energy_j"] is None


def test_a_thermal_throttle_shows_in_the_trials_violation_counters_and_the_report(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    out = tmp_path / "r"
    with SimServer(gpus="1xRTX4090", seed=3, local="all", inject_throttle=["0:100000:thermal"]) as sim:
        args = ["llama3.1:8b", "--host", sim.url, "--budget", "2", "--storage", storage, "--out", str(out)]
        args += ["--remeasure-rounds", "0"]
        assert _run_cli(args) == 0
    trials = pd.read_csv(out / "trials.csv")
    measured = trials[trials["decode_tok_s"].notna()]
    assert (measured["interference_thermal_throttle_s"] > 0).all()
    assert "held down for heat" in (out / "report.md").read_text()
