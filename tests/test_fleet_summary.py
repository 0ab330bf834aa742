"""The fleet summary's pure parts: which stored studies belong to which host, and the hosts x models table
(no database: tests/test_fleet_qualify.py runs the whole thing on PostgreSQL)."""

from __future__ import annotations

from tuner.qualify.fleet import fleet_lines, host_studies, table
from tuner.qualify.plan import parse_plan

PLAN = parse_plan(
    {"name": "p", "models": [{"model": "llama3.1:8b"}, {"model": "8b"}], "criteria": []}, "p.toml"
)


def test_each_host_gets_its_own_studies_and_no_longer_key_is_mistaken_for_a_shorter_one() -> None:
    names = [
        "q-p-abcdef12-llama3.1-8b",
        "q-p-abcdef12-8b",
        "q-p-12345678-8b",
        "q-other-abcdef12-8b",  # another plan
        "q-p-nothex!!-8b",  # not a fleet id
        "llama3.1-8b",  # a tune study
    ]
    assert host_studies(PLAN, names) == {
        "abcdef12": {"llama3.1:8b": "q-p-abcdef12-llama3.1-8b", "8b": "q-p-abcdef12-8b"},
        "12345678": {"8b": "q-p-12345678-8b"},
    }


def test_a_host_that_has_not_run_a_model_says_so() -> None:
    fleet = {
        "plan": {"name": "p", "models": ["llama3.1:8b", "8b"]},
        "criteria": [{"id": "c1", "name": "", "text": "decode_tok_s >= 20 tok/s"}],
        "storage": "postgresql://u:***@db/x",
        "hosts": [
            {
                "fleet_id": "abcdef12",
                "host_name": "gpu-a",
                "machine": "1x GPU",
                "passed": 1,
                "models": [
                    {
                        "model": "llama3.1:8b",
                        "status": "done",
                        "trials": 4,
                        "budget": 4,
                        "best": {"decode_tok_s": 41.25},
                        "soak": {"soak_decode_tok_s": 40.0},
                        "verdicts": [{"criterion": "c1", "verdict": "pass", "value": 41.25, "detail": ""}],
                    },
                    {"model": "8b", "study": "", "status": "not run"},
                ],
            }
        ],
    }
    head, rows = table(fleet)
    assert head == ["model", "criterion", "abcdef12 gpu-a"]
    assert rows[:4] == [
        ["llama3.1:8b", "c1", "PASS 41.2"],
        ["llama3.1:8b", "trials", "4/4"],
        ["llama3.1:8b", "recommended tok/s", "41.2"],
        ["llama3.1:8b", "soak tok/s", "40.0"],
    ]
    assert rows[4] == ["8b", "c1", "not run"] and rows[5] == ["8b", "trials", "–"]
    lines = fleet_lines(fleet)
    assert lines[0] == "plan p: 1 host(s) in postgresql://u:***@db/x"
    assert "abcdef12 gpu-a: 1x GPU; 1 of 2 models passed every criterion" in lines[1]
    assert fleet_lines({**fleet, "hosts": []}) == ["no host has run plan 'p' in postgresql://u:***@db/x"]
