"""python -m tuner.quality: the table without a study, on the simulator; bad input is one line, exit 2."""

from __future__ import annotations

from tuner.quality.__main__ import main
from tuner.sim import SimServer

TAGS = [f"llama3.1:8b-instruct-{q}" for q in ("q4_K_M", "q8_0", "fp16")]


def test_prints_each_tag_and_repeats_the_same_figures(capsys) -> None:
    with SimServer(gpus="1xRTX4090", version="0.24.0") as sim:
        assert main([*TAGS, "--host", sim.url, "--tokens", "8", "--repeat", "2"]) == 0
    rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| 1 ") or line.startswith("| 2 ")
    ]
    assert len(rows) == 6
    first = sorted(r[4:] for r in rows if r.startswith("| 1 "))
    second = sorted(r[4:] for r in rows if r.startswith("| 2 "))
    assert first == second
    assert any("fp16 | default | reference" in r for r in rows)
    assert any("q4_K_M | default | 0.0" in r and "greedy-prefix" in r for r in rows)


def test_era_a_prints_why_not(capsys) -> None:
    with SimServer(gpus="1xRTX4090", version="0.12.10") as sim:
        assert main(TAGS[:2] + ["--host", sim.url]) == 0
    assert "not measured: Ollama 0.12.10 serves no token log-probabilities" in capsys.readouterr().out


def test_bad_input_is_one_line_exit_2(capsys) -> None:
    assert main(["a", "b", "--tokens", "2"]) == 2
    assert capsys.readouterr().err.strip() == "--tokens 2 must be >= 4 and --repeat 1 >= 1."
