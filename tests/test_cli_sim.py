"""The CLI against the simulator: pulling missing tags, --apply, an unknown model, rebuilding a report."""

from __future__ import annotations

import ollama
import pytest

from tuner.cli import main
from tuner.modelfile import parse_modelfile
from tuner.sim import SimServer
from tuner.study import load_records


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def test_quant_list_pulls_missing_tags_with_progress_then_applies_the_best(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/s.db"
    with SimServer(gpus="1xRTX4090", seed=8, local="default") as sim:
        code = run_cli(
            [
                "llama3.1:8b",
                "--host",
                sim.url,
                "--quant",
                "q4_K_M,q8_0",
                "--pull",
                "--budget",
                "6",
                "--storage",
                storage,
                "--out",
                str(tmp_path / "r"),
                "--apply",
                "llama3.1-tuned",
            ]
        )
        assert code == 0
        client = ollama.Client(host=sim.url)
        try:
            local = [m.model for m in client.list().models]
            show = client.show("llama3.1-tuned")
        finally:
            client.close()
    err = capsys.readouterr().err
    assert "llama3.1:8b-instruct-q8_0" in local  # pulled: it was not local
    assert "pulling" in err and "success" in err
    meta, records = load_records(storage, "llama3.1-8b-q4_k_m-q8_0")
    assert meta.tags == ["llama3.1:8b", "llama3.1:8b-instruct-q8_0"]
    best = parse_modelfile((tmp_path / "r" / "best.Modelfile").read_text())
    assert "llama3.1-tuned:latest" in local
    assert f"num_ctx                        {best['parameters']['num_ctx']}" in (show.parameters or "")


def test_without_pull_a_missing_quant_is_one_line_naming_the_fix(tmp_path, capsys):
    with SimServer(gpus="1xRTX4090", local="default") as sim:
        code = run_cli(
            ["llama3.1:8b", "--host", sim.url, "--quant", "q8_0", "--storage", f"sqlite:///{tmp_path}/s.db"]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "No local tag of 'llama3.1:8b' in quantization 'q8_0'" in err[0] and "--pull" in err[0]


def test_unknown_model_exits_1_with_one_line(tmp_path, capsys):
    with SimServer(gpus="1xRTX4090") as sim:
        code = run_cli(["nope:1b", "--host", sim.url, "--storage", f"sqlite:///{tmp_path}/s.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "has no model 'nope:1b'" in err[0] and "ollama pull nope:1b" in err[0]


def test_report_is_rebuilt_from_the_study_alone(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    with SimServer(gpus="1xRTX4090", seed=9) as sim:
        assert (
            run_cli(
                [
                    "llama3.1:8b",
                    "--host",
                    sim.url,
                    "--budget",
                    "4",
                    "--storage",
                    storage,
                    "--study",
                    "x",
                    "--out",
                    str(tmp_path / "first"),
                ]
            )
            == 0
        )
    # the server is gone: the report comes from the stored study
    assert run_cli(["report", "--study", "x", "--storage", storage, "--out", str(tmp_path / "again")]) == 0
    first = (tmp_path / "first" / "trials.csv").read_text()
    assert first == (tmp_path / "again" / "trials.csv").read_text()
    assert (tmp_path / "again" / "report.html").stat().st_size > 10_000
