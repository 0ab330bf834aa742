"""Quality in a study, on the simulator (Ollama 0.24.0 serves logprobs; 0.12.10 does not): measured once per
tag and stored, reused on resume, a constraint with --max-quality-loss, and a pick that takes a heavier tag
because of it."""

from __future__ import annotations

import csv

import pytest

from tuner.cli import main
from tuner.modelfile import parse_modelfile
from tuner.quality import stored
from tuner.sim import SimServer
from tuner.study import load_records

TAGS = {q: f"llama3.1:8b-instruct-{q}" for q in ("q4_K_M", "q8_0", "fp16")}
STUDY = "llama3.1-8b-q4_k_m-q8_0-fp16"


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def study(sim: SimServer, tmp_path, *extra: str, budget: int = 10) -> int:
    return run_cli(
        [
            "llama3.1:8b",
            "--host",
            sim.url,
            "--quant",
            "q4_K_M,q8_0,fp16",
            "--budget",
            str(budget),
            "--storage",
            f"sqlite:///{tmp_path}/s.db",
            "--out",
            str(tmp_path / "r"),
            "--remeasure-rounds",
            "0",
            *extra,
        ]
    )


def best_from(tmp_path) -> str:
    return parse_modelfile((tmp_path / "r" / "best.Modelfile").read_text())["from"]


def test_each_tag_gets_its_quality_and_the_report_shows_it(tmp_path) -> None:
    with SimServer(gpus="1xRTX4090", version="0.24.0", seed=3) as sim:
        assert study(sim, tmp_path) == 0
    meta, records = load_records(f"sqlite:///{tmp_path}/s.db", STUDY)
    results = stored.results(meta.quality)
    assert {q.tag for q in results.values()} == set(TAGS.values())
    loss = {q.tag: q.loss for q in results.values()}
    assert loss[TAGS["fp16"]] == 0.0 < loss[TAGS["q8_0"]] < loss[TAGS["q4_K_M"]]  # type: ignore[operator]
    assert all(r.quality_kl == loss[r.tag] for r in records)
    # the default limit (0.05 nats) lets q4_K_M through: the fastest tag is deployed
    assert best_from(tmp_path) == TAGS["q4_K_M"]
    report = (tmp_path / "r" / "report.md").read_text()
    assert "quality loss (KL vs the most precise tag)" in report and "### Quality of each tag" in report
    assert "**Quality:**" in report and "within the 0.05 nats limit" in report
    with open(tmp_path / "r" / "trials.csv") as f:
        row = next(csv.DictReader(f))
    assert "quality_kl" in row and "quality_top1" in row


def test_a_quality_limit_makes_the_best_pick_a_heavier_tag(tmp_path, capsys) -> None:
    with SimServer(gpus="1xRTX4090", version="0.24.0", seed=3) as sim:
        assert study(sim, tmp_path, "--max-quality-loss", "0.01") == 0
    assert best_from(tmp_path) == TAGS["q8_0"]
    meta, records = load_records(f"sqlite:///{tmp_path}/s.db", STUDY)
    assert meta.max_quality_loss == 0.01
    q4 = [r for r in records if r.tag == TAGS["q4_K_M"] and r.state == "COMPLETE"]
    assert q4 and all(not r.feasible and r.constraints["quality_over"] > 0 for r in q4)
    assert any("over --max-quality-loss 0.01" in r.error for r in q4)
    assert all(r.baseline for r in q4), "the search spends no trial on a tag over the limit"
    report = (tmp_path / "r" / "report.md").read_text()
    assert f"the best pick takes {TAGS['q8_0']}".replace("_", "\\_") in report


def test_resume_reuses_the_stored_quality(tmp_path, capsys) -> None:
    with SimServer(gpus="1xRTX4090", version="0.24.0", seed=3) as sim:
        assert study(sim, tmp_path, budget=4) == 0
        first = capsys.readouterr().err
        assert study(sim, tmp_path, budget=6) == 0
        second = capsys.readouterr().err
    assert "quality: reading log-probabilities" in first
    assert "quality: reading log-probabilities" not in second


def test_era_a_says_quality_not_measured_and_refuses_a_quality_limit(tmp_path, capsys) -> None:
    with SimServer(gpus="1xRTX4090", version="0.12.10", seed=3) as sim:
        assert study(sim, tmp_path, budget=4) == 0
        report = (tmp_path / "r" / "report.md").read_text()
        assert "**Quality not measured:** Ollama 0.12.10 serves no token log-probabilities" in report
        capsys.readouterr()
        code = run_cli(
            [
                "llama3.1:8b",
                "--host",
                sim.url,
                "--quant",
                "q4_K_M,q8_0",
                "--budget",
                "4",
                "--storage",
                f"sqlite:///{tmp_path}/t.db",
                "--out",
                str(tmp_path / "t"),
                "--max-quality-loss",
                "0.05",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(
        "autotune: --max-quality-loss 0.05 cannot be applied: quality not measured (Ollama 0.12.10"
    )


def test_a_negative_limit_or_a_limit_without_the_measure_is_one_line(tmp_path, capsys) -> None:
    assert run_cli(["m", "--max-quality-loss", "-1"]) == 2
    with SimServer(gpus="1xRTX4090", version="0.24.0") as sim:
        code = run_cli(
            [
                "llama3.1:8b",
                "--host",
                sim.url,
                "--no-quality",
                "--max-quality-loss",
                "0.1",
                "--storage",
                f"sqlite:///{tmp_path}/s.db",
            ]
        )
    assert code == 2
    assert "--max-quality-loss needs the quality measure" in capsys.readouterr().err


def test_a_limit_given_on_resume_judges_the_trials_already_measured(tmp_path, capsys) -> None:
    with SimServer(gpus="1xRTX4090", version="0.24.0", seed=3) as sim:
        assert study(sim, tmp_path, budget=6) == 0
        _, before = load_records(f"sqlite:///{tmp_path}/s.db", STUDY)
        assert any(r.tag == TAGS["q4_K_M"] and r.feasible for r in before)
        assert study(sim, tmp_path, "--max-quality-loss", "0.01", budget=8) == 0
    meta, after = load_records(f"sqlite:///{tmp_path}/s.db", STUDY)
    assert meta.max_quality_loss == 0.01
    old_q4 = [r for r in after if r.tag == TAGS["q4_K_M"] and r.number < 6 and r.state == "COMPLETE"]
    assert old_q4 and all(not r.feasible and "over --max-quality-loss 0.01" in r.error for r in old_q4)
    assert best_from(tmp_path) != TAGS["q4_K_M"]
