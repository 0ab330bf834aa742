"""`autotune MODEL --serve --tune flash-attn,kv-cache,parallel,gpus` end to end on the simulator run as
`ollama serve` (tuner/sim/serve.py): trials grouped by server environment, one restart per group, each
start's logged config, the restart seconds per trial, the server files of the best config; and the
estimator's slot and KV-type predictions against what the simulated server reports."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import httpx
import pytest

from tuner.backend.ollamaserve import ManagedOllama
from tuner.cli import main
from tuner.estimate import ModelSpec, Request, predict
from tuner.serverenv import parse_server_config
from tuner.servergroups import current, key_of, plan, restarts
from tuner.sim.catalog import lookup
from tuner.sim.modelinfo import spec_of
from tuner.sim.serve import write_shim
from tuner.study import load_records


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def shim(tmp_path: Path, gpus: str, version: str = "0.32.15") -> Path:
    args = ["--gpus", gpus, "--ollama-version", version, "--noise", "0", "--local", "default"]
    return write_shim(tmp_path / "ollama", args)


def starts(log: Path) -> list[dict[str, str]]:
    return [parse_server_config(line) for line in log.read_text().splitlines() if "server config" in line]


def test_a_study_tunes_server_knobs_one_restart_per_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path}/s.db"
    args = ["qwen2.5:7b", "--serve", "--ollama", str(shim(tmp_path, "1x24GiB"))]
    args += ["--tune", "flash-attn,kv-cache,parallel", "--parallel-values", "1,2,4", "--budget", "12"]
    args += ["--storage", storage, "--out", str(out), "--no-quality", "--remeasure-rounds", "0"]
    args += ["--num-predict", "16", "--study", "served"]
    assert run_cli(args) == 0
    err = capsys.readouterr().err
    _, records = load_records(storage, "served")
    assert len(records) == 12 and records[0].baseline and records[0].num_parallel is None
    tuned = [r for r in records if not r.baseline]
    keys = [key_of(r) for r in tuned]
    groups = [k for k, _ in groupby(keys)]
    assert len(groups) == len(set(groups)) >= 3  # each environment in one run: never revisited
    assert {k[2] for k in groups} >= {1, 2} and {k[1] for k in groups} >= {"f16", "q8_0"}
    # the first trial of each group paid a restart, the others none
    for _, run in groupby(tuned, key=key_of):
        first, *rest = list(run)
        assert first.restart_s and first.restart_s > 0 and all(r.restart_s == 0 for r in rest)
    assert "(server restart" in err and "parallel=2" in err
    # one start for the baseline's defaults, then one per group, each logging its settings
    logged = starts(out / "serve-logs" / "ollama-serve.log")
    assert len(logged) == 1 + len(groups) == 1 + restarts(keys) + 1
    for config, (fa, kv, par, _gpus) in zip(logged[1:], groups):
        assert config["OLLAMA_NUM_PARALLEL"] == str(par)
        assert config["OLLAMA_KV_CACHE_TYPE"] == kv
        assert config["OLLAMA_FLASH_ATTENTION"] == ("true" if fa == "on" else "false")
    # more slots and an f16 cache take more memory at the same config
    by_key = {(key_of(r), r.num_gpu, r.num_ctx): r.peak_vram_bytes for r in tuned if r.peak_vram_bytes}
    pairs = [
        (v, by_key.get(((k[0], k[1], 1, k[3]), n, c))) for (k, n, c), v in by_key.items() if k[2] and k[2] > 1
    ]
    assert any(one is not None for _, one in pairs) and all(v > one for v, one in pairs if one is not None)
    env = dict(line.split("=", 1) for line in (out / "server.env").read_text().splitlines())
    assert "OLLAMA_NUM_PARALLEL" in env and env.get("OLLAMA_FLASH_ATTENTION") in ("0", "1")
    dropin = (out / "ollama.service.d" / "autotune.conf").read_text()
    assert f'Environment="OLLAMA_NUM_PARALLEL={env["OLLAMA_NUM_PARALLEL"]}"' in dropin
    assert (
        f"-e OLLAMA_NUM_PARALLEL={env['OLLAMA_NUM_PARALLEL']}" in (out / "docker-run-flags.txt").read_text()
    )


def test_gpu_subsets_restart_with_visible_devices_and_land_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path}/s.db"
    args = ["qwen2.5:7b", "--serve", "--ollama", str(shim(tmp_path, "2x24GiB", "0.12.10"))]
    args += ["--tune", "gpus", "--budget", "13", "--storage", storage, "--out", str(out), "--study", "g"]
    args += ["--no-quality", "--remeasure-rounds", "0", "--num-predict", "16"]
    assert run_cli(args) == 0
    _, records = load_records(storage, "g")
    tuned = [r for r in records if not r.baseline]
    assert {r.gpus for r in tuned} == {"0", "1", "0,1", "0,1+spread"}
    for r in tuned:
        if r.gpus in ("0", "1") and r.peak_vram_per_gpu:
            other = 1 - int(r.gpus)
            assert r.peak_vram_per_gpu[other] == 0 < r.peak_vram_per_gpu[int(r.gpus)]
        if r.gpus == "0,1+spread" and r.peak_vram_per_gpu and r.num_gpu > 0:
            assert all(v > 0 for v in r.peak_vram_per_gpu)  # spread: every GPU holds layers
    logged = starts(out / "serve-logs" / "ollama-serve.log")
    assert {c["CUDA_VISIBLE_DEVICES"] for c in logged} == {"", "0", "1", "0,1"}
    assert {c["OLLAMA_SCHED_SPREAD"] for c in logged} == {"false", "true"}
    assert "OLLAMA_NEW_ENGINE" in logged[0]  # the 0.12.10 simulator logs what that release logs


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tune", "parallel"], "add --serve"),
        (["--tune", "parallel,turbo"], "--tune 'turbo' is not a knob"),
        (["--serve", "--tune", "parallel", "--parallel-values", "0,2"], "--parallel-values '0,2'"),
    ],
)
def test_bad_tune_is_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["qwen2.5:7b", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_gpus_on_one_gpu_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    args = ["qwen2.5:7b", "--serve", "--ollama", str(shim(tmp_path, "1x24GiB")), "--tune", "gpus"]
    args += ["--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "out")]
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    assert "--tune gpus needs two or more GPUs; the server sees 1" in err and "Traceback" not in err


def test_groups_are_ordered_near_the_defaults_first_and_pass_on_unused_shares() -> None:
    home = ("on", "f16", 1, None)
    points = [
        (fa, kv, p, None) for fa, kv in (("on", "f16"), ("off", "f16"), ("on", "q8_0")) for p in (1, 2, 4)
    ]
    gp = plan(points, home, 8)  # two trials a group at least: four groups
    assert gp.points[0] == home and len(gp.points) == 4 and gp.quotas == (2, 2, 2, 2)
    assert {sum(a != b for a, b in zip(p, home)) for p in gp.points[1:]} == {1}
    assert len(gp.left_out) == len(points) - 4
    assert [p[1:3] for p in gp.points[1:]] == [("q8_0", 1), ("f16", 2), ("f16", 1)]  # KV, slots, then FA off
    assert gp.points[3][0] == "off"
    # the first group is done after its share; a group with nothing left passes its share on
    assert current(gp, [home], lambda p: True) == home
    assert current(gp, [home] * 2, lambda p: True) == gp.points[1]
    assert current(gp, [home] * 2, lambda p: p != gp.points[1]) == gp.points[2]
    assert current(gp, [home] * 2 + [gp.points[2]] * 3, lambda p: p != gp.points[1]) == gp.points[2]
    assert current(gp, [home] * 2 + [gp.points[2]] * 4, lambda p: p != gp.points[1]) == gp.points[3]
    done = [home] * 2 + [gp.points[2]] * 4 + [gp.points[3]] * 2  # every share used
    assert current(gp, done, lambda p: p != gp.points[1], last=gp.points[3]) == gp.points[3]  # no restart
    assert current(gp, done, lambda p: p not in (gp.points[1], gp.points[3]), last=gp.points[3]) == home
    assert current(gp, done, lambda p: False) is None
    assert restarts([home, home, gp.points[1], gp.points[1], home]) == 2


def _reported(spec: ModelSpec, version: str, parallel: int, kv: str) -> int:
    """What the server reports as size_vram: memory.go's estimate in Era A, the runner's buffers in Era C."""
    p = predict(
        spec,
        [24 * 2**30],
        Request(num_ctx=4096, num_parallel=parallel, kv_type=kv, flash_attn=True),
        engine="ollama",
        version=version,
    )
    if p.ollama is not None:
        return p.ollama.vram_bytes
    return sum(d.weights + d.kv + d.compute for d in p.allocation.gpu)


@pytest.mark.parametrize("version", ["0.12.10", "0.32.15"])
def test_the_estimators_slot_and_kv_prices_match_the_simulated_servers_reports(
    tmp_path: Path, version: str
) -> None:
    """/api/ps size_vram of the simulated server, restarted per setting (default hidden estimator error),
    grows from one setting to the next by what the estimator predicts (KV cache, and in Era A memory.go's
    graph that grows with the slots; in Era C the per-slot attention graph does not)."""
    binary = write_shim(
        tmp_path / "ollama", ["--gpus", "1x24GiB", "--ollama-version", version, "--noise", "0"]
    )
    tag = "llama3.1:8b"
    mf = lookup(tag)
    assert mf is not None
    spec = spec_of(mf)
    sizes: dict[tuple[int, str], int] = {}
    for par, kv in ((1, "f16"), (2, "f16"), (4, "f16"), (2, "q8_0"), (2, "q4_0")):
        env = {"OLLAMA_NUM_PARALLEL": str(par), "OLLAMA_KV_CACHE_TYPE": kv, "OLLAMA_FLASH_ATTENTION": "1"}
        with ManagedOllama(binary, models_dir=tmp_path / "m", env=env, log_path=tmp_path / "s.log") as s:
            body = {
                "model": tag,
                "prompt": "hi",
                "stream": False,
                "options": {"num_ctx": 4096, "num_predict": 1},
            }
            httpx.post(s.url + "/api/generate", json=body, timeout=60).raise_for_status()
            sizes[(par, kv)] = int(httpx.get(s.url + "/api/ps", timeout=10).json()["models"][0]["size_vram"])
    for a, b in (((1, "f16"), (2, "f16")), ((2, "f16"), (4, "f16")), ((2, "q8_0"), (2, "f16"))):
        grew, priced = sizes[b] - sizes[a], _reported(spec, version, *b) - _reported(spec, version, *a)
        assert priced > 0 and abs(grew - priced) <= 0.1 * priced, (a, b, grew, priced)
    assert sizes[(2, "q4_0")] < sizes[(2, "q8_0")] < sizes[(2, "f16")]


def test_per_request_knobs_are_searched_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """num_batch and main_gpu go in each request: a --serve study restarts only for server knobs, and in
    Era C main_gpu runs the model on that GPU alone."""
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path}/s.db"
    args = ["qwen2.5:7b", "--serve", "--ollama", str(shim(tmp_path, "2x24GiB"))]
    args += ["--tune", "num-batch,main-gpu", "--sampler", "random", "--budget", "10", "--study", "r"]
    args += ["--storage", storage, "--out", str(out), "--no-quality", "--remeasure-rounds", "0"]
    args += ["--num-predict", "16"]
    assert run_cli(args) == 0
    _, records = load_records(storage, "r")
    tuned = [r for r in records if not r.baseline]
    assert len({r.num_batch for r in tuned}) >= 2 and {r.main_gpu for r in tuned} == {0, 1}
    assert all(not r.restart_s for r in tuned)  # no server knob: the server never restarts
    assert len(starts(out / "serve-logs" / "ollama-serve.log")) == 1
    for r in tuned:
        if r.peak_vram_per_gpu and r.num_gpu > 0 and r.main_gpu is not None:
            assert r.peak_vram_per_gpu[1 - r.main_gpu] == 0 < r.peak_vram_per_gpu[r.main_gpu]


def test_main_gpu_is_one_gpu_in_era_c_only() -> None:
    from tuner.sim import Simulation

    c = Simulation("2x24GiB", version="0.32.15", noise=0, estimator_error=0)
    assert c.plan("llama3.3:70b", num_ctx=4096, main_gpu=1).runner_gpus == (1,)
    assert len(c.plan("llama3.3:70b", num_ctx=4096).runner_gpus) == 2
    a = Simulation("2x24GiB", version="0.12.10", noise=0, estimator_error=0)
    assert len(a.plan("llama3.3:70b", num_ctx=4096, main_gpu=1).runner_gpus) == 2


def test_the_fitcheck_prices_slots_gpu_subsets_and_forced_one_slot_models() -> None:
    import dataclasses

    from tuner.fitcheck import FitCheck
    from tuner.space import Config

    mf = lookup("llama3.1:8b")
    assert mf is not None
    spec = spec_of(mf)
    free = [24 * 2**30, 24 * 2**30]

    def kv(s: ModelSpec, **cfg: object) -> tuple[int, tuple[int, ...]]:
        check = FitCheck({"m": s}, free, engine="ollama", version="0.32.15")
        p = check.predict(Config("m", 33, 4096, **cfg))  # type: ignore[arg-type]
        assert p is not None
        return sum(d.kv for d in p.allocation.gpu), p.runner_gpus

    one, _ = kv(spec, num_parallel=1)
    four, _ = kv(spec, num_parallel=4)
    assert four == 4 * one
    assert kv(dataclasses.replace(spec, arch="mllama"), num_parallel=4)[0] == one  # Ollama gives it one slot
    assert kv(spec, gpus="1")[1] == (1,) and len(kv(spec, gpus="0,1+spread")[1]) == 2
    assert kv(spec, main_gpu=1)[1] == (1,)  # Era C: main_gpu alone
