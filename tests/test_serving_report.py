"""The concurrency curves in the report: a study run with --concurrency stores its ladder, report.md and
report.html show the curves, the table and the serving pick, and `autotune report` rebuilds them from the
study alone; a report without a ladder has none of it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from tests.test_report import make_meta, normal_study
from tuner.cli import main
from tuner.concurrency import Ladder, LevelResult, Percentiles
from tuner.report import write_report
from tuner.sim import SimServer
from tuner.study import CONCURRENCY_ATTR

SECTION = "Serving under concurrent load"


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One study with --concurrency 8 against two slots of a real-time simulator (the queue makes the
    latencies climb), and an ITL target every level meets."""
    tmp = tmp_path_factory.mktemp("served")
    storage = f"sqlite:///{tmp}/s.db"
    with SimServer(gpus="1xRTX4090", num_parallel=2, noise=0, realtime=True, local="default", seed=1) as sim:
        args = ["llama3.1:8b", "--host", sim.url, "--budget", "3", "--storage", storage, "--study", "c"]
        args += ["--out", str(tmp / "first"), "--num-predict", "8", "--remeasure-rounds", "0", "--no-quality"]
        args += ["--concurrency", "8", "--sla-itl", "5"]
        assert run_cli(args) == 0
    return tmp, storage


def _table_streams(md: str) -> list[int]:
    """The streams column of the report's concurrency table."""
    part = md[md.index(SECTION) :]
    return [int(m) for m in re.findall(r"^\| (\d+) \| \d+/\d+ \|", part, flags=re.M)]


def test_a_study_with_a_ladder_stores_it_and_the_report_shows_the_curves(served: tuple[Path, str]) -> None:
    tmp, storage = served
    out = tmp / "first"
    stored = optuna.load_study(study_name="c", storage=storage).user_attrs[CONCURRENCY_ATTR]
    levels = [lv["concurrency"] for lv in stored["levels"]]
    assert levels[:2] == [1, 2] and levels == [1, 2, 4, 8][: len(levels)]
    assert stored["sla_itl_s"] == 5 and stored["sla_ttft_s"] is None
    assert stored["serving_pick"] in levels and stored["trial"] is not None
    assert json.loads((out / "concurrency.json").read_text())["levels"] == stored["levels"]
    assert (out / "concurrency.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert (
        f"### {SECTION}" in md
        and "![throughput and latency against concurrent streams](concurrency.png)" in md
    )
    assert f"**Serving pick: {stored['serving_pick']} concurrent streams**" in md
    assert "p90 ITL ≤ 5000 ms" in md
    assert _table_streams(md) == levels
    if stored["stopped"] == "saturated":
        assert f"Over-saturated at {levels[-1]} streams" in md
    html = (out / "report.html").read_text()
    assert SECTION in html and 'alt="throughput and latency against concurrent streams"' in html


def test_autotune_report_rebuilds_the_curves_from_the_study(served: tuple[Path, str]) -> None:
    tmp, storage = served
    again = tmp / "again"
    assert run_cli(["report", "--study", "c", "--storage", storage, "--out", str(again)]) == 0
    first = tmp / "first"
    assert (again / "concurrency.json").read_text() == (first / "concurrency.json").read_text()
    assert (again / "concurrency.png").is_file()
    section = (first / "report.md").read_text().split(f"### {SECTION}")[1].split("\n### ")[0]
    assert section in (again / "report.md").read_text()


def _level(n: int, tok_s: float, ttft_s: float, saturated: bool = False, errors: int = 0) -> LevelResult:
    p = Percentiles(ttft_s, ttft_s * 1.2, ttft_s * 1.4)
    itl = Percentiles(0.01, 0.012, 0.015)
    e2e = Percentiles(ttft_s + 0.5, ttft_s + 0.6, ttft_s + 0.7)
    return LevelResult(
        n, 2 * n, 2 * n - errors, errors, (), 1.0, int(tok_s), tok_s, 90.0, 2.0, p, itl, e2e, saturated
    )


def _block(ladder: Ladder, sla_ttft_s: float | None) -> dict[str, object]:
    pick = ladder.pick(sla_ttft_s, None)
    return {
        "model": "qwen2.5:14b-instruct-q4_K_M",
        "trial": 3,
        "options": {"num_ctx": 8192, "num_predict": 64},
        "env": {"OLLAMA_NUM_PARALLEL": "4"},
        "sla_ttft_s": sla_ttft_s,
        "sla_itl_s": None,
        **ladder.to_json(),
        "serving_pick": pick.concurrency if pick else None,
    }


def test_the_section_follows_the_stored_ladder_and_is_absent_without_one(tmp_path: Path) -> None:
    ladder = Ladder((_level(1, 40, 0.1), _level(2, 75, 0.2), _level(4, 78, 0.9, saturated=True)), "saturated")
    meta = make_meta(concurrency=_block(ladder, sla_ttft_s=0.5))
    written = write_report(meta, normal_study(), tmp_path)
    assert {"concurrency.png", "concurrency.json"} <= set(written)
    md = (tmp_path / "report.md").read_text()
    assert "**Serving pick: 2 concurrent streams**: 75.0 tok/s in all" in md
    assert "within p90 TTFT ≤ 500 ms" in md and "Over-saturated at 4 streams" in md
    assert "server environment `OLLAMA_NUM_PARALLEL=4`" in md and "trial #3" in md
    assert _table_streams(md) == [1, 2, 4]
    assert re.search(r"^\| 4 \| 8/8 \|.*\| over-saturated \|$", md, flags=re.M)

    # the same folder, now from a study without a ladder: no section, and the old curves are removed
    written = write_report(make_meta(), normal_study(), tmp_path)
    assert "concurrency.png" not in written and not (tmp_path / "concurrency.png").exists()
    assert not (tmp_path / "concurrency.json").exists()
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert SECTION not in text and "concurrency.png" not in text


def test_no_level_meets_the_target_says_so(tmp_path: Path) -> None:
    ladder = Ladder((_level(1, 40, 0.8), _level(2, 70, 1.5)), "max concurrency")
    write_report(make_meta(concurrency=_block(ladder, sla_ttft_s=0.2)), normal_study(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "**Serving pick: none.**" in md and "missed the SLA" in md
    assert "serving pick |" not in md  # no row is marked


def test_an_empty_block_is_no_ladder(tmp_path: Path) -> None:
    meta = replace(make_meta(), concurrency={"levels": []})
    assert "concurrency.png" not in write_report(meta, normal_study(), tmp_path)


def test_sla_without_a_ladder_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["llama3.1:8b", "--sla-ttft", "2", "--storage", "in-memory"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--concurrency" in err[0]
