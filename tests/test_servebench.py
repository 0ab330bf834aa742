"""`autotune serve-bench` end to end against a realtime simulator: the table, the pick, the files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuner.cli import cli, main
from tuner.sim import SimServer

MODEL = "llama3.1:8b"


def test_ladder_against_two_slots_saturates_and_picks_a_level(tmp_path: Path) -> None:
    with SimServer(gpus="1xRTX4090", num_parallel=2, noise=0, realtime=True, local="default") as sim:
        result = CliRunner().invoke(
            cli,
            [
                "serve-bench",
                MODEL,
                "--host",
                sim.url,
                "--max-concurrency",
                "4",
                "--num-predict",
                "8",
                "--json",
                "--out",
                str(tmp_path),
            ],
        )
        slots = sim.state()["slots"]
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.splitlines()[0])
    levels = data["levels"]
    concurrency = [lv["concurrency"] for lv in levels]
    # 1, 2, 4; or it stopped at 2 as over-saturated (the simulator sleeps in real time here, so a busy machine
    # can make two streams look no faster than one)
    assert len(concurrency) >= 2 and concurrency == [1, 2, 4][: len(concurrency)]
    assert data["stopped"] == ("max concurrency" if len(concurrency) == 3 else "saturated")
    assert [lv["requests"] for lv in levels] == [2 * c for c in concurrency]  # two requests per stream
    assert all(lv["errors"] == 0 and lv["ok"] == lv["requests"] for lv in levels)
    assert all(lv["output_tokens"] == 8 * lv["ok"] for lv in levels)
    for key in ("ttft_s", "itl_s", "e2e_s"):
        assert set(levels[0][key]) == {"p50", "p90", "p99"}
    assert data["serving_pick"] in concurrency
    assert slots["peak_busy"] == 2  # never more than the two slots busy, even with four streams
    assert (tmp_path / "concurrency.png").stat().st_size > 0
    assert json.loads((tmp_path / "concurrency.json").read_text())["schema"] == 1


def test_table_and_an_sla_nothing_meets(capsys: pytest.CaptureFixture[str]) -> None:
    with SimServer(gpus="1xRTX4090", noise=0, realtime=True, local="default") as sim:
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    "serve-bench",
                    MODEL,
                    "--host",
                    sim.url,
                    "--max-concurrency",
                    "2",
                    "--num-predict",
                    "4",
                    "--sla-ttft",
                    "0.000001",
                ]
            )
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "TTFT p50/p90/p99" in out and "serving pick: none" in out


def test_a_missing_model_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with SimServer(gpus="1xRTX4090", local="default") as sim:
        with pytest.raises(SystemExit) as exc:
            main(["serve-bench", "nosuch:1b", "--host", sim.url])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and len(err) == 1 and "'nosuch:1b'" in err[0] and "pull it" in err[0]


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--max-concurrency", "0", "--max-concurrency 0 must be at least 1"),
        ("--sla-itl", "fast", "--sla-itl 'fast'"),
    ],
)
def test_bad_values_exit_2_naming_the_value(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve-bench", MODEL, flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err and len(err.strip().splitlines()) == 1
