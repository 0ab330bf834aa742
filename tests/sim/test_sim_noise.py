from __future__ import annotations

import statistics

import httpx


def _run(make_server, make_client, noise: float, seed: int = 0) -> list[tuple[int, int, int]]:
    client = make_client(make_server(gpus="1xRTX4090", noise=noise, seed=seed))
    out = []
    for _ in range(6):
        r = client.generate("llama3.1:8b", "Same prompt every time", options={"num_predict": 32})
        out.append((r.eval_duration, r.prompt_eval_count, r.load_duration))
    return out


def test_noise_zero_gives_identical_numbers(make_server, make_client) -> None:
    runs = _run(make_server, make_client, 0.0)
    assert len({r[0] for r in runs}) == 1
    assert runs == _run(make_server, make_client, 0.0)


def test_noise_gives_spread_and_the_seed_reproduces_it(make_server, make_client) -> None:
    runs = _run(make_server, make_client, 0.02, seed=3)
    evals = [r[0] for r in runs]
    assert len(set(evals)) == len(evals)
    cv = statistics.stdev(evals) / statistics.mean(evals)
    assert 0.002 < cv < 0.1
    assert runs == _run(make_server, make_client, 0.02, seed=3)
    assert runs != _run(make_server, make_client, 0.02, seed=4)


def test_reset_restarts_the_noise_sequence(make_server, make_client) -> None:
    sim = make_server(gpus="1xRTX4090", noise=0.02, seed=5)
    client = make_client(sim)
    first = [client.generate("llama3.1:8b", "p", options={"num_predict": 8}).eval_duration for _ in range(3)]
    httpx.post(sim.url + "/sim/reset")
    again = [client.generate("llama3.1:8b", "p", options={"num_predict": 8}).eval_duration for _ in range(3)]
    assert first == again
