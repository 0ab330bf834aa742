"""Sizing OLLAMA_NUM_PARALLEL inside a study (tuner.serveslots): `--serve --tune parallel --concurrency N`
climbs the ladder at every slot count the study found feasible, restarting the managed server (the simulator
as `ollama`) for each, picks across them, and the server files and the report follow that pick."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_serve_study import run_cli, starts
from tuner.concurrency import choose_setting
from tuner.decision.picks import eligible
from tuner.sim.serve import write_shim
from tuner.study import load_records


def test_a_parallel_study_sizes_the_slots_with_one_ladder_per_slot_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path}/s.db"
    sim = ["--gpus", "1xRTX4090", "--ollama-version", "0.32.15", "--noise", "0", "--local", "default"]
    binary = write_shim(tmp_path / "ollama", [*sim, "--realtime"])
    args = [
        "qwen2.5:7b",
        "--serve",
        "--ollama",
        str(binary),
        "--tune",
        "parallel",
        "--parallel-values",
        "1,2",
    ]
    args += [
        "--budget",
        "5",
        "--concurrency",
        "4",
        "--sla-itl",
        "5",
        "--study",
        "slots",
        "--storage",
        storage,
    ]
    args += ["--out", str(out), "--no-quality", "--remeasure-rounds", "0", "--num-predict", "8"]
    assert run_cli(args) == 0
    err = capsys.readouterr().err
    meta, records = load_records(storage, "slots")
    block = meta.concurrency
    assert block is not None
    settings = block["settings"]
    feasible = sorted({r.num_parallel for r in eligible(meta, records) if r.num_parallel})
    assert [s["num_parallel"] for s in settings] == feasible == [1, 2]
    for s in settings:  # each ladder ran on a trial of that slot count, under that environment
        trial = next(r for r in records if r.number == s["trial"])
        assert trial.num_parallel == s["num_parallel"] and s["env"]["OLLAMA_NUM_PARALLEL"] == str(
            s["num_parallel"]
        )
        assert [lv["concurrency"] for lv in s["levels"]][0] == 1 and s["levels"]
    assert "concurrency ladder 1 of 2: OLLAMA_NUM_PARALLEL=1" in err
    assert "concurrency ladder 2 of 2: OLLAMA_NUM_PARALLEL=2" in err
    # the serving pick across slot counts is serve-bench's rule over the stored ladders
    tok_s = []
    for s in settings:
        level = next((lv for lv in s["levels"] if lv["concurrency"] == s["serving_pick"]), None)
        tok_s.append(None if level is None else level["aggregate_tok_s"])
    index = choose_setting(tok_s, [s["num_parallel"] for s in settings])
    assert index is not None and block["chosen"] == settings[index]["num_parallel"]
    assert block["levels"] == settings[index]["levels"]  # the top level is the chosen ladder
    # the server restarted for the ladders: its last start carries the last slot count measured
    logged = starts(out / "serve-logs" / "ollama-serve.log")
    assert logged[-1]["OLLAMA_NUM_PARALLEL"] == "2"
    # the server files carry the serving pick's slots
    env = dict(line.split("=", 1) for line in (out / "server.env").read_text().splitlines())
    assert env["OLLAMA_NUM_PARALLEL"] == str(block["chosen"])
    dropin = (out / "ollama.service.d" / "autotune.conf").read_text()
    assert f'Environment="OLLAMA_NUM_PARALLEL={block["chosen"]}"' in dropin
    assert f"-e OLLAMA_NUM_PARALLEL={block['chosen']}" in (out / "docker-run-flags.txt").read_text()
    # the report: the serving pick on the first screen, one curve and the rows per slot count below
    report = (out / "report.md").read_text().replace("\\_", "_")
    first, details = report.split("## Details", 1)
    assert "Serving pick (concurrent load):" in first and f"OLLAMA_NUM_PARALLEL={block['chosen']}" in first
    assert f"**`OLLAMA_NUM_PARALLEL={block['chosen']}`** of the slot counts measured (1, 2)" in details
    assert "server.env, the systemd drop-in and docker-run-flags.txt carry" in details
    for s in settings:  # one table row per slot count and level
        rows = [
            line
            for line in details.splitlines()
            if line.startswith(f"| {s['num_parallel']} | #{s['trial']} |")
        ]
        assert len(rows) == len(s["levels"])
    assert "Serving pick (concurrent load)" in (out / "report.html").read_text()
    assert (out / "concurrency.png").stat().st_size > 0


def _level(concurrency: int, tok_s: float) -> dict[str, object]:
    trio = {"p50": 0.01, "p90": 0.02, "p99": 0.03}
    return {
        "concurrency": concurrency,
        "requests": 2,
        "ok": 2,
        "errors": 0,
        "aggregate_tok_s": tok_s,
        "per_request_tok_s": 50.0,
        "req_s": 1.0,
        "ttft_s": trio,
        "itl_s": trio,
        "e2e_s": trio,
        "saturated": False,
    }


def test_the_first_screen_line_follows_the_stored_block() -> None:
    from tuner.report.concurrency import concurrency_section
    from tuner.report.slotsplot import serving_row

    single = {"levels": [_level(1, 90.0), _level(2, 150.0)], "serving_pick": 2, "trial": 4, "env": {}}
    assert (
        serving_row(single)
        == "2 concurrent streams (trial #4): 150.0 tok/s in all, p90 TTFT 20 ms, p90 ITL 20 ms"
    )
    assert serving_row(None) is None and serving_row({"levels": []}) is None
    settings = [
        {"num_parallel": n, "trial": n, "levels": [_level(1, 90.0)], "serving_pick": None, "env": {}}
        for n in (1, 2)
    ]
    unmet = {**settings[0], "settings": settings, "chosen": None}
    row = serving_row(unmet)
    assert row is not None and row.startswith("none:") and "OLLAMA_NUM_PARALLEL" not in row
    text = " ".join(b.text for b in concurrency_section(unmet, None) if b.kind == "p")
    assert "no serving pick" in text and "the server files follow the fastest config" in text
