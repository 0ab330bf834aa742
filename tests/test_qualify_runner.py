"""The plan runner over the in-memory engine: a model that raises something unexpected is recorded with one
line and the night goes on to the next model; the outcomes are stored and a second run skips the done ones."""

from __future__ import annotations

from tests.fakes import FakeBackend, FakeMachine, FakeProbe
from tuner.fingerprint import fingerprint
from tuner.qualify.plan import parse_plan
from tuner.qualify.runner import Engine, PlanRunner, Variants
from tuner.qualify.state import DONE, FAILED, PlanState


class SurpriseBackend(FakeBackend):
    def load(self, model, options):
        if model == "toy:bad":
            raise RuntimeError("a bug in some engine's reply")
        return super().load(model, options)


def test_an_unexpected_error_fails_that_model_only_and_a_rerun_skips_the_done_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNER_DEBUG", raising=False)
    plan = parse_plan(
        {
            "budget_per_model": 2,
            "sampler": "random",  # (the fake engine reports no context for the baseline trial)
            "soak_minutes": 0,
            "remeasure_rounds": 0,
            "num_predict": 8,
            "models": [{"model": "toy:bad"}, {"model": "toy:q4"}],
            "criteria": [{"metric": "decode_tok_s", "min": 1}],
        },
        "p.toml",
    )
    machine = FakeMachine()
    backend = SurpriseBackend(machine, tags=("toy:bad", "toy:q4"))
    probe = FakeProbe(machine)
    engine = Engine(backend, probe, backend.server_info(), fingerprint(probe, backend.server_info()))
    variants = Variants(infos={t: {t: backend.model_info(t)} for t in ("toy:bad", "toy:q4")})
    said: list[str] = []
    storage = f"sqlite:///{tmp_path}/s.db"
    outcomes = PlanRunner(plan, engine, variants, tmp_path, storage, said.append).run()
    assert [o.status for o in outcomes] == [FAILED, DONE]
    assert (
        outcomes[0].error
        == "unexpected RuntimeError: a bug in some engine's reply (TUNER_DEBUG=1 shows where)"
    )
    assert outcomes[1].trials == 2 and outcomes[1].best["tag"] == "toy:q4"
    assert "model 2/2 toy:q4: 2 trials" in "\n".join(said) and "failures so far 1" in "\n".join(said)
    state = PlanState(tmp_path)
    assert state.outcome("toy-q4") == outcomes[1]

    said.clear()
    again = PlanRunner(plan, engine, variants, tmp_path, storage, said.append).run()
    assert again[1] == outcomes[1]
    assert "model 2/2 toy:q4: finished earlier (2 trials), skipped" in said
    assert not any("trial " in line and "[toy-q4]" in line for line in said)


def test_the_summary_masks_every_remembered_secret_and_url_password():
    from tuner.qualify.summary import redacted
    from tuner.redact import remember_secrets_of

    remember_secrets_of("postgresql://tuner:pg-s3cret@db.example/optuna")
    value = {
        "error": ["Cannot reach postgresql://tuner:pg-s3cret@db.example/optuna", {"why": "bad pg-s3cret"}],
        "n": 3,
    }
    out = redacted(value)
    assert "pg-s3cret" not in repr(out) and out["n"] == 3
    assert out["error"][0] == "Cannot reach postgresql://tuner:***@db.example/optuna"
