"""num_thread (`--tune num-thread`): the simulator's CPU threads, the space that searches them only where
layers sit on the CPU, the request option, the study's record and best.Modelfile."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tuner.backend.base import EngineOptions
from tuner.backend.ollama import OllamaBackend
from tuner.cli import main
from tuner.errors import ConfigError
from tuner.modelfile import parse_modelfile
from tuner.report import picks
from tuner.servetune import parse_tune
from tuner.sim import SimServer, Simulation
from tuner.space import Space
from tuner.study import load_records


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_a_spilled_config_speeds_up_with_threads_and_a_gpu_one_does_not() -> None:
    sim = Simulation("1x4GiB", noise=0, host_cores=8)
    spilled = {t: sim.speed(sim.plan("llama3.1:8b", 10, 4096, num_thread=t)) for t in (0, 2, 4, 8, 16)}
    assert spilled[2].decode_tok_s < spilled[4].decode_tok_s < spilled[8].decode_tok_s
    assert spilled[0] == spilled[8]  # Ollama's default: the physical cores
    assert spilled[16].prefill_tok_s < spilled[8].prefill_tok_s  # over-subscription costs a little
    big = Simulation("1x24GiB", noise=0, host_cores=8)
    on_gpu = {t: big.speed(big.plan("llama3.1:8b", 33, 4096, num_thread=t)) for t in (2, 8)}
    assert big.plan("llama3.1:8b", 33, 4096).fully_on_gpu and on_gpu[2] == on_gpu[8]


def test_the_simulated_host_reports_its_cores() -> None:
    with SimServer(gpus="1x4GiB", host_cores=6, local="default") as sim:
        state = httpx.get(sim.url + "/sim/state").json()
    assert state["host"]["physical_cores"] == 6
    with pytest.raises(ValueError, match="host cores"):
        Simulation(host_cores=0)


def test_threads_are_searched_only_where_layers_sit_on_the_cpu() -> None:
    knobs = parse_tune("num-thread", "1", serve=False, engine="ollama").on_host(8)
    assert knobs.threads == (0, 8, 4)
    assert parse_tune("num-thread", "1", serve=False, engine="ollama").on_host(1).threads == (0, 1)
    space = Space(("a",), 5, (2048,), thread_choices=knobs.threads)
    configs = list(space.all_configs())
    assert {c.num_thread for c in configs if c.num_gpu == 5} == {None}  # fully on the GPU: collapsed
    assert {c.num_thread for c in configs if c.num_gpu == 2} == {None, 8, 4}
    assert len(configs) == space.size() == 5 * 3 + 1
    assert space.config(space.params(configs[1])) == configs[1]
    with pytest.raises(ConfigError, match="num-thread"):
        parse_tune("num-thread", "1", serve=False, engine="llama-server")


def test_the_ollama_backend_sends_num_thread() -> None:
    """The option reaches the server: the simulated runner was loaded with it (and without it, the default)."""
    with SimServer(gpus="1x4GiB", host_cores=8, local="default", noise=0) as sim:
        backend = OllamaBackend(sim.url)
        try:
            backend.load("llama3.1:8b", EngineOptions(10, 4096, num_thread=4))
            with_threads = sim.state()["loaded"][0]
            backend.load("llama3.1:8b", EngineOptions(10, 4096))
            default = sim.state()["loaded"][0]
        finally:
            backend.close()
    assert with_threads["num_thread"] == 4 and default["num_thread"] == 0


def test_a_study_records_num_thread_and_the_modelfile_carries_the_winner(tmp_path: Path) -> None:
    storage, out = f"sqlite:///{tmp_path}/s.db", tmp_path / "out"
    with SimServer(gpus="1x4GiB", host_cores=8, local="default", noise=0) as sim:
        args = ["llama3.1:8b", "--host", sim.url, "--tune", "num-thread", "--sampler", "random"]
        args += ["--budget", "12", "--study", "t", "--storage", storage, "--out", str(out)]
        args += ["--no-quality", "--remeasure-rounds", "0", "--num-predict", "8", "--max-ctx", "4096"]
        assert run_cli(args) == 0
    meta, records = load_records(storage, "t")
    tuned = [r for r in records if not r.baseline]
    assert {r.num_thread for r in tuned if r.num_gpu < 33} >= {4, 8}
    assert all(r.num_thread is None for r in tuned if r.num_gpu >= 33)
    fastest = picks(meta, records)["fastest"].trial
    params = parse_modelfile((out / "best.Modelfile").read_text())["parameters"]
    assert fastest.num_gpu < 33 and fastest.num_thread  # nothing fits 4 GiB whole: a spilled winner
    assert params["num_thread"] == fastest.num_thread
    assert "Serving pick" not in (out / "report.md").read_text()  # no ladder ran: no serving line
