import os
import socket
import time
import warnings

import optuna
import pytest

from tests.fakes import FakeBackend, FakeMachine, FakeProbe
from tuner.config import StudyConfig
from tuner.errors import ConfigError
from tuner.landscape import Landscape
from tuner.runloop import run_study
from tuner.schema import SCHEMA_VERSION, StudyMeta, TrialRecord
from tuner.search import StructuredSampler
from tuner.space import Config, Space
from tuner.storage import recover_interrupted
from tuner.study import CONSTRAINT_KEYS, load_records, open_study
from tuner.units import GiB


def make(tmp_path, budget=8, machine=None, **kw):
    machine = machine or FakeMachine()
    space = Space(tags=("toy:q4",), max_layers=33, ctx_ladder=(2048, 4096, 8192, 16384, 32768, 65536, 131072))
    config = StudyConfig(
        model="toy:q4",
        tags=("toy:q4",),
        engine="fake",
        budget=budget,
        storage=f"sqlite:///{tmp_path}/s.db",
        study_name="toy",
        **kw,
    )
    meta = StudyMeta(
        schema_version=SCHEMA_VERSION,
        study_name="toy",
        engine="fake",
        model="toy:q4",
        tags=["toy:q4"],
        block_count={"toy:q4": 32},
        context_length={"toy:q4": 131072},
        ctx_ladder=list(space.ctx_ladder),
        budget=budget,
        vram_limit_bytes=config.vram_limit_bytes,
        min_ctx=config.min_ctx,
        gpu_only=config.gpu_only,
        depth=0.0,
        num_predict=64,
        fingerprint={},
    )
    return machine, space, config, meta


def run(tmp_path, **kw):
    machine, space, config, meta = make(tmp_path, **kw)
    events = []
    meta, records = run_study(
        config, FakeBackend(machine), FakeProbe(machine), meta, space, on_trial=events.append
    )
    return machine, records, events


def test_budget_counts_finished_trials_and_every_trial_has_every_constraint(tmp_path):
    machine, records, events = run(tmp_path, budget=8, machine=FakeMachine(gpu_bytes=16 * GiB))
    assert sum(r.state == "COMPLETE" for r in records) == 8
    assert [e.done for e in events] == list(range(1, 9))
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path}/s.db")
    for t in study.trials:
        assert set(t.constraints) == set(CONSTRAINT_KEYS)
    assert records[0].baseline and records[0].num_gpu == -1


def test_a_config_that_does_not_fit_is_complete_infeasible_with_the_message(tmp_path):
    _, records, _ = run(tmp_path, budget=10, machine=FakeMachine(gpu_bytes=16 * GiB))
    failed = [r for r in records if r.oom]
    assert failed, "131072 with every layer cannot fit 16 GiB in the fake"
    for r in failed:
        assert r.state == "COMPLETE" and not r.feasible
        assert r.decode_tok_s is None and "out of memory" in r.error
        assert r.constraints["load_failed"] > 0


def test_probes_find_the_largest_context_that_stays_on_the_gpu(tmp_path):
    machine = FakeMachine()  # every layer fits 24 GiB up to some context
    _, records, _ = run(tmp_path, budget=12, machine=machine)
    truth = max(
        c for c in (2048, 4096, 8192, 16384, 32768, 65536, 131072) if machine.need(33, c) <= machine.gpu_bytes
    )
    on_gpu = [r.num_ctx for r in records if r.feasible and r.num_gpu == 33 and (r.gpu_fraction or 0) >= 0.999]
    assert max(on_gpu) == truth


def test_without_a_prediction_bisection_finds_the_largest_num_gpu_that_loads():
    machine = FakeMachine(gpu_bytes=10 * GiB)
    truth = max(n for n in range(34) if machine.need(n, 2048) <= machine.gpu_bytes)
    space = Space(tags=("toy:q4",), max_layers=33, ctx_ladder=(2048, 4096))
    sampler = StructuredSampler(space, None)
    records: list[TrialRecord] = [
        TrialRecord(0, "COMPLETE", "toy:q4", -1, 4096, decode_tok_s=5.0, baseline=True)
    ]
    for i in range(1, 9):
        config = sampler.next_config(Landscape(space, None, records))
        if config is None:  # nothing structured left: TPE takes over
            break
        assert (config.tag, config.num_gpu, config.num_ctx) not in {
            (r.tag, r.num_gpu, r.num_ctx) for r in records
        }
        fits = machine.need(config.num_gpu, config.num_ctx) <= machine.gpu_bytes
        records.append(
            TrialRecord(
                i,
                "COMPLETE",
                config.tag,
                config.num_gpu,
                config.num_ctx,
                decode_tok_s=10.0 if fits else None,
                oom=not fits,
                gpu_fraction=1.0 if fits else None,
            )
        )
    loaded = [r.num_gpu for r in records if r.decode_tok_s and r.num_gpu >= 0]
    assert max(loaded) == truth  # the edge by bisection (a failure without a host-memory message is a GPU's)


def test_vram_limit_and_gpu_only_make_measured_trials_infeasible(tmp_path):
    _, records, _ = run(tmp_path, budget=8, vram_limit_bytes=6 * GiB, gpu_only=True)
    over = [r for r in records if r.decode_tok_s is not None and (r.peak_vram_bytes or 0) > 6 * GiB]
    assert over and all(not r.feasible and "--vram-limit" in r.error for r in over)
    assert all(
        r.feasible
        for r in records
        if r.decode_tok_s is not None and (r.peak_vram_bytes or 0) <= 6 * GiB and not r.cpu_spill
    )


def test_resume_keeps_every_finished_trial_and_adds_up_to_the_new_budget(tmp_path):
    machine, records5, _ = run(tmp_path, budget=5)
    _, records8, _ = run(tmp_path, budget=8, machine=machine)
    assert sum(r.state == "COMPLETE" for r in records8) == 8
    assert [r for r in records8 if r.number < 5] == records5


def test_trials_whose_heartbeat_stopped_are_failed_and_requeued_once_whatever_their_host(tmp_path):
    """Recovery asks no host name or PID: a RUNNING trial whose heartbeat is older than 3 intervals is
    failed by Optuna's heartbeat check and queued again once; one whose heartbeat goes on is left alone."""
    from tuner.config import RetryPolicy
    from tuner.storage import fail_stale

    _, space, config, _ = make(tmp_path, retry=RetryPolicy(heartbeat_s=1))
    study = open_study(config)
    dists = {
        "tag": optuna.distributions.CategoricalDistribution(["toy:q4"]),
        "num_gpu": optuna.distributions.IntDistribution(0, 33),
        "log2_ctx": optuna.distributions.IntDistribution(11, 17),
    }
    storage = study._storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize() warns with a heartbeat
        dead = study.ask(dists)
        alive = study.ask(dists)
    # the same host name and a live PID: neither matters any more
    for trial in (dead, alive):
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat_s": 1})
        storage.record_heartbeat(trial._trial_id)
    time.sleep(config.retry.grace_s + 1.1)  # older than the grace period (SQLite keeps whole seconds)
    storage.record_heartbeat(alive._trial_id)
    fail_stale(study, config.retry.grace_s)
    assert [r.number for r in recover_interrupted(study)] == [dead.number]
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "RUNNING", "WAITING"]
    assert study.get_trials()[2].system_attrs["fixed_params"] == study.get_trials()[0].params
    assert recover_interrupted(study) == []  # not twice


def test_load_records_names_the_unknown_study(tmp_path):
    run(tmp_path, budget=2)
    meta, records = load_records(f"sqlite:///{tmp_path}/s.db", "toy")
    assert meta.study_name == "toy" and len(records) == 2
    with pytest.raises(ConfigError, match="No study 'nope'.*toy"):
        load_records(f"sqlite:///{tmp_path}/s.db", "nope")


def test_the_structured_search_starts_with_all_layers_at_the_smallest_context():
    space = Space(tags=("a", "b"), max_layers=33, ctx_ladder=(2048, 4096))
    sampler = StructuredSampler(space, None)
    records = [TrialRecord(0, "COMPLETE", "a", -1, 4096, decode_tok_s=1.0, baseline=True)]
    assert sampler.next_config(Landscape(space, None, records)) == Config("a", 33, 2048)
    running = {Landscape(space, None, []).key(Config("a", 33, 2048))}  # a worker runs the first
    assert sampler.next_config(Landscape(space, None, records, running)) == Config("b", 33, 2048)
