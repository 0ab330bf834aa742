"""A study never mixes machines by accident: resuming on other GPUs or another server version stops with one
line, --allow-other-machine mixes them on purpose, every trial says which machine measured it, and the
report groups the trials by machine."""

from __future__ import annotations

import pytest

from tuner.cli import main
from tuner.errors import ConfigError
from tuner.fingerprint import check_machine, describe, differences, fingerprint_id
from tuner.sim import SimServer
from tuner.study import load_records

FP = {
    "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 * 2**30, "driver": "550.54"}],
    "server": {"engine": "ollama", "version": "0.12.10", "host": "http://127.0.0.1:11434"},
    "host": {"name": "box", "cpu": "AMD Ryzen 9 7950X", "ram_bytes": 64 * 2**30},
    "tool": {"name": "autotune", "version": "0.1.0"},
}


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def tune(sim: SimServer, tmp_path, budget: int, *extra: str) -> int:
    return run_cli(
        [
            "llama3.1:8b",
            "--host",
            sim.url,
            "--budget",
            str(budget),
            "--storage",
            f"sqlite:///{tmp_path}/s.db",
            "--study",
            "machines",
            "--out",
            str(tmp_path / "r"),
            "--remeasure-rounds",
            "0",
            *extra,
        ]
    )


def test_what_makes_a_machine_different():
    same = {**FP, "host": {**FP["host"], "name": "new-container"}, "server": {**FP["server"], "host": "x"}}
    assert differences(FP, same) == [] and fingerprint_id(FP) == fingerprint_id(same)
    driver = {**FP, "gpus": [{**FP["gpus"][0], "driver": "560.1"}]}
    assert differences(FP, driver) == ["driver"]
    server = {**FP, "server": {**FP["server"], "version": "0.24.0"}}
    assert differences(FP, server) == ["server version"] and fingerprint_id(server) != fingerprint_id(FP)
    assert describe(FP) == "1x NVIDIA GeForce RTX 4090 24 GiB, driver 550.54, ollama 0.12.10"
    check_machine([FP], same, "s", allow=False)  # no error
    check_machine([FP], server, "s", allow=True)
    with pytest.raises(ConfigError) as info:
        check_machine([FP], server, "s", allow=False)
    assert "--allow-other-machine" in str(info.value) and "server version differ" in str(info.value)


def test_resuming_on_other_gpus_stops_with_one_line_and_allow_other_machine_mixes_on_purpose(
    tmp_path, capsys
):
    with SimServer(gpus="1xRTX4090", seed=21) as sim:
        assert tune(sim, tmp_path, 3) == 0
    meta, first = load_records(f"sqlite:///{tmp_path}/s.db", "machines")
    original = meta.fingerprint
    capsys.readouterr()

    with SimServer(gpus="2xRTX4090", seed=22) as other:
        assert tune(other, tmp_path, 5) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert "Study 'machines' was measured on 1x NVIDIA GeForce RTX 4090" in err[0]
        assert "GPUs differ" in err[0] and "--study" in err[0] and "--allow-other-machine" in err[0]
        meta_after, records = load_records(f"sqlite:///{tmp_path}/s.db", "machines")
        assert len(records) == 3 and meta_after.fingerprint == original  # nothing ran, nothing rewritten

        assert tune(other, tmp_path, 5, "--allow-other-machine") == 0
    meta, records = load_records(f"sqlite:///{tmp_path}/s.db", "machines")
    assert meta.fingerprint == original  # the study keeps the machine it started on
    assert len(meta.fingerprints) == 2
    ids = [r.fingerprint_id for r in sorted(records, key=lambda r: r.number)]
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1 and ids[0] != ids[3]
    assert set(ids) == set(meta.fingerprints)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "measured on 2 different machines" in md
    for ident in set(ids):
        assert f"Measured on machine `{ident}`" in md and f"**Machine `{ident}`**" in md


def test_another_server_version_on_the_same_gpus_also_stops(tmp_path, capsys):
    with SimServer(gpus="1xRTX4090", seed=23) as sim:
        assert tune(sim, tmp_path, 2) == 0
    capsys.readouterr()
    with SimServer(gpus="1xRTX4090", seed=23, version="0.24.0") as newer:
        assert tune(newer, tmp_path, 3) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server version" in err[0] and "ollama 0.24.0" in err[0]
