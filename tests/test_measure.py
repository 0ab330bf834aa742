from tests.fakes import FakeBackend, FakeMachine, FakeProbe
from tuner.config import MeasureSettings
from tuner.measure import make_prompt, measure, relative_standard_error
from tuner.probe import NullProbe
from tuner.space import Config
from tuner.units import GiB


def test_stable_speed_stops_at_the_minimum_repeats_and_measures_peak():
    machine = FakeMachine()
    m = measure(FakeBackend(machine), FakeProbe(machine), Config("toy:q4", 33, 4096), MeasureSettings())
    assert m.loaded and not m.oom
    assert len(m.generations) == 3
    assert m.decode_tok_s == 64 / (64 * 0.01)
    assert m.peak_vram_bytes == machine.need(33, 4096)
    assert m.vram_source == "fake"
    assert machine.used == 0  # unloaded at the end


def test_noisy_speed_repeats_until_the_maximum():
    machine = FakeMachine(noise=0.2)
    settings = MeasureSettings(max_repeats=6)
    m = measure(FakeBackend(machine), FakeProbe(machine), Config("toy:q4", 33, 4096), settings)
    assert len(m.generations) == 6
    assert m.decode_cv is not None and m.decode_cv > 0.05


def test_out_of_memory_at_load_is_a_result():
    machine = FakeMachine(gpu_bytes=8 * GiB)
    m = measure(FakeBackend(machine), FakeProbe(machine), Config("toy:q4", 33, 131072), MeasureSettings())
    assert m.oom and not m.loaded
    assert "cudaMalloc failed" in m.error
    assert m.decode_tok_s is None and m.generations == []


def test_without_a_probe_peak_falls_back_to_size_vram():
    machine = FakeMachine()
    m = measure(FakeBackend(machine), NullProbe("remote"), Config("toy:q4", 10, 2048), MeasureSettings())
    assert m.vram_source == "size_vram"
    assert m.peak_vram_bytes == machine.need(10, 2048)


def test_prompts_are_unique_and_fill_the_depth():
    assert make_prompt(1) != make_prompt(2)
    deep = make_prompt(1, depth_tokens=1000)
    assert 900 < len(deep.split()) < 1100


def test_relative_standard_error():
    assert relative_standard_error([10.0]) == float("inf")
    assert relative_standard_error([10.0, 10.0, 10.0]) == 0.0
    assert 0.01 < relative_standard_error([9.0, 10.0, 11.0]) < 0.1
