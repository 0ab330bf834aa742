"""The concurrency ladder's figures, saturation rule and serving pick, on hand-made records (no server)."""

from __future__ import annotations

import threading

import pytest

from tuner.backend.stream import StreamRecord
from tuner.concurrency import (
    LevelResult,
    choose_setting,
    is_saturated,
    ladder_levels,
    percentile,
    run_ladder,
    run_level,
    summarize_level,
)


def rec(sent: float, first: float, done: float, tokens: int) -> StreamRecord:
    return StreamRecord(sent, first, done, tokens, ())


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)


def test_summary_follows_the_aiperf_definitions() -> None:
    records = [
        rec(0.0, 0.5, 2.5, 5),
        rec(0.0, 1.0, 5.0, 9),
        StreamRecord(0.0, None, None, 0, (), "HTTP 503: busy"),
    ]
    lv = summarize_level(3, records)
    assert (lv.requests, lv.ok, lv.errors) == (3, 2, 1)
    assert lv.error_messages == ("HTTP 503: busy",)
    assert lv.wall_s == pytest.approx(5.0)  # first send to last end
    assert lv.output_tokens == 14  # only successful requests count
    assert lv.aggregate_tok_s == pytest.approx(14 / 5.0)
    assert lv.req_s == pytest.approx(2 / 5.0)
    assert lv.ttft_s.p50 == pytest.approx(0.75)
    # ITL = (e2e - TTFT) / (tokens - 1): 2.0/4 = 0.5 and 4.0/8 = 0.5
    assert lv.itl_s.p50 == pytest.approx(0.5) and lv.itl_s.p99 == pytest.approx(0.5)
    assert lv.per_request_tok_s == pytest.approx(2.0)
    assert lv.e2e_s.p90 == pytest.approx(2.5 + 0.9 * 2.5)


def test_single_token_answers_have_no_itl() -> None:
    lv = summarize_level(1, [rec(0.0, 0.2, 0.2, 1)])
    assert lv.itl_s.p50 is None and lv.per_request_tok_s is None and lv.ttft_s.p50 == pytest.approx(0.2)


def level(
    n: int, tok_s: float, e2e: float, errors: int = 0, ttft: float = 0.1, itl: float = 0.01
) -> LevelResult:
    lv = summarize_level(n, [rec(0.0, ttft, e2e, 1 + round((e2e - ttft) / itl))])
    return LevelResult(**{**lv.__dict__, "aggregate_tok_s": tok_s, "errors": errors})


def test_saturation_is_flat_throughput_with_climbing_latency() -> None:
    assert is_saturated(level(4, 380, 0.25), level(8, 400, 0.46))
    assert not is_saturated(level(4, 380, 0.25), level(8, 600, 0.46))  # throughput still grows
    assert not is_saturated(level(4, 380, 0.25), level(8, 390, 0.26))  # latency flat too


def test_levels_double_up_to_the_maximum() -> None:
    assert ladder_levels(1) == [1]
    assert ladder_levels(8) == [1, 2, 4, 8]
    assert ladder_levels(6) == [1, 2, 4, 6]


def test_run_level_sends_each_index_once_from_concurrent_threads() -> None:
    seen: list[int] = []
    names: set[str] = set()
    lock = threading.Lock()

    def send(i: int) -> StreamRecord:
        with lock:
            seen.append(i)
            names.add(threading.current_thread().name)
        return rec(0.0, 0.1, 0.2, 3)

    records = run_level(send, 4, 3, first_index=10)
    assert len(records) == 12 and sorted(seen) == list(range(10, 22)) and len(names) == 4


def fake_server(slots: int):
    """A pretend server on a virtual clock: `slots` streams at once share a fixed aggregate speed."""

    def send_for(n: int):
        def send(i: int) -> StreamRecord:
            share = min(n, slots)
            queue = (n - share) / max(1, share)  # rounds waited for a slot
            per_token = 0.01 * share**0.3
            start = queue * 0.5
            return rec(0.0, start + 0.05, start + 0.05 + 49 * per_token, 50)

        return send

    return send_for


def test_ladder_stops_at_saturation_and_the_pick_meets_the_sla() -> None:
    send_for = fake_server(slots=4)
    current = {"n": 1}

    def send(i: int) -> StreamRecord:
        return send_for(current["n"])(i)

    def on_level(lv: LevelResult) -> None:
        current["n"] = lv.concurrency * 2

    ladder = run_ladder(send, 16, requests_per_stream=1, on_level=on_level)
    assert [lv.concurrency for lv in ladder.levels][:3] == [1, 2, 4]
    assert all(lv.errors == 0 for lv in ladder.levels)
    pick = ladder.pick(None, None)
    assert pick is not None and not pick.saturated
    strict = ladder.pick(0.06, None)  # only levels whose p90 TTFT is under 60 ms: no queueing
    assert strict is not None and strict.ttft_s.p90 is not None and strict.ttft_s.p90 <= 0.06
    assert ladder.pick(0.001, None) is None
    assert ladder.to_json()["levels"][0]["concurrency"] == 1


def test_a_level_of_only_errors_stops_the_ladder_and_is_never_picked() -> None:
    def send(i: int) -> StreamRecord:
        return StreamRecord(0.0, None, None, 0, (), "ConnectError: refused")

    ladder = run_ladder(send, 8)
    assert ladder.stopped == "errors" and len(ladder.levels) == 1
    assert ladder.pick(None, None) is None


def test_the_recommended_setting_is_the_fewest_slots_within_five_percent_of_the_best() -> None:
    assert choose_setting([842.6, 1017.2, 1041.8], [1, 2, 4]) == 1  # 2 slots is within 5 % of 4
    assert choose_setting([842.6, 900.0, 1041.8], [1, 2, 4]) == 2
    assert choose_setting([None, 500.0], [1, 2]) == 1
    assert choose_setting([None, None], [1, 2]) is None
