"""The simulator answers concurrent requests as Ollama's scheduler does: OLLAMA_NUM_PARALLEL slots, waiting
on a busy runner, OLLAMA_MAX_QUEUE for requests pending a load (503 beyond it), batched decoding."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tuner.sim import SimServer
from tuner.sim.slots import QUEUE_FULL_MESSAGE, Admission, QueueFull, SlotBoard

MODEL = "llama3.1:8b"


def test_board_waits_for_the_first_free_slot() -> None:
    board = SlotBoard(num_parallel=2)
    a = board.admit("m", 0.0)
    board.occupy("m", 5.0)
    b = board.admit("m", 0.0)
    board.occupy("m", 3.0)
    c = board.admit("m", 0.0)  # both slots busy: waits for the one that frees at 3.0
    assert (a.start_at, b.start_at, c.start_at) == (0.0, 0.0, 3.0)
    assert (a.sharing, b.sharing, c.sharing) == (1, 2, 2)
    assert board.peak_busy == 2


def test_requests_pending_a_load_beyond_max_queue_are_refused() -> None:
    board = SlotBoard(num_parallel=1, max_queue=2)
    board.loading("m", 0.0, 10.0)
    assert board.admit("m", 1.0).start_at == 10.0
    board.admit("m", 1.0)
    with pytest.raises(QueueFull, match="maximum pending requests exceeded"):
        board.admit("m", 1.0)
    assert board.rejected == 1
    assert board.admit("m", 11.0).start_at >= 11.0  # loaded: waiting is on the slots, not the queue


def test_batched_decoding_is_slower_per_stream_but_faster_in_all() -> None:
    one, four = Admission(0.0, 1).slowdown(), Admission(0.0, 4).slowdown()
    assert one == 1.0 and four > 1.0 and 4 / four > 1.0


def generate(url: str, prompt: str) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": 8}}
    return httpx.post(url + "/api/generate", json=body, timeout=30).json()


def test_a_third_request_on_two_slots_waits_and_the_second_shares_the_batch() -> None:
    now = [1000.0]
    with SimServer(gpus="1xRTX4090", num_parallel=2, noise=0, clock=lambda: now[0], concurrent=True) as sim:
        generate(sim.url, "warm up")  # loads
        now[0] += 100.0  # the warm-up is over; the clock then stands still: the three arrive together
        first, second, third = (generate(sim.url, f"question {i}") for i in range(3))
    assert second["eval_duration"] > first["eval_duration"]  # two streams in the batch
    slot_wait = third["total_duration"] - third["load_duration"] - third["prompt_eval_duration"]
    assert slot_wait > third["eval_duration"]  # it waited for a slot before decoding
    assert sim.state()["slots"]["peak_busy"] == 2


def test_requests_beyond_the_queue_during_a_load_get_503() -> None:
    with SimServer(gpus="1xRTX4090", max_queue=1, clock=lambda: 1000.0, concurrent=True) as sim:
        replies = [
            httpx.post(
                sim.url + "/api/generate",
                json={"model": MODEL, "prompt": f"q{i}", "stream": False, "options": {"num_predict": 4}},
                timeout=30,
            )
            for i in range(3)
        ]
        slots = sim.state()["slots"]
    # the first loads the model; the second waits in the queue (1 entry); the third finds it full
    assert [r.status_code for r in replies] == [200, 200, 503]
    assert replies[2].json() == {"error": QUEUE_FULL_MESSAGE}
    assert slots["rejected"] == 1 and slots["max_queue"] == 1


def test_concurrent_streams_never_use_more_slots_than_num_parallel() -> None:
    with SimServer(gpus="1xRTX4090", num_parallel=2, noise=0, realtime=True) as sim:
        generate(sim.url, "warm up")
        threads = [threading.Thread(target=generate, args=(sim.url, f"q{i}")) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        slots = sim.state()["slots"]
    assert slots["peak_busy"] == 2 and slots["rejected"] == 0


def test_back_to_back_requests_on_a_non_realtime_server_are_each_served_alone() -> None:
    with SimServer(gpus="1xRTX4090", num_parallel=1, noise=0) as sim:
        replies = [generate(sim.url, "same question") for _ in range(3)]
        slots = sim.state()["slots"]
    assert len({r["eval_duration"] for r in replies}) == 1  # no batch sharing, no slot wait
    assert slots["peak_busy"] == 0
