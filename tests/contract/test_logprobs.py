"""Token log-probabilities under contract: `logprobs` / `top_logprobs` (Ollama 0.12.11 on), and the fidelity
measure that reads them (tuner.quality) on every backend: the simulator and each real release."""

from __future__ import annotations

import httpx
import ollama

from tests.contract.conftest import Target
from tuner.backend.ollama import OllamaBackend
from tuner.quality.run import QualitySettings, measure_quality
from tuner.releases import has_logprobs

OPTS = {"num_predict": 6, "temperature": 0, "num_ctx": 2048}


def test_generate_with_logprobs(target: Target, http: httpx.Client, client: ollama.Client) -> None:
    body = {
        "model": target.tags["q8_0"],
        "prompt": "The quick brown fox",
        "raw": True,
        "stream": False,
        "logprobs": True,
        "top_logprobs": 5,
        "options": OPTS,
    }
    reply = http.post("/api/generate", json=body).json()
    if not has_logprobs(target.version):  # Era A ignores both fields
        assert "logprobs" not in reply and reply["eval_count"] == 6
        return
    entries = reply["logprobs"]
    assert len(entries) == reply["eval_count"] == 6
    assert "".join(e["token"] for e in entries) == reply["response"]
    for e in entries:
        assert isinstance(e["token"], str) and e["logprob"] <= 0
        top = e["top_logprobs"]
        assert 1 <= len(top) <= 5
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0]["logprob"] == e["logprob"]  # greedy: the chosen token is the most likely one


def test_streamed_chunks_carry_their_token_logprobs(target: Target, http: httpx.Client, client) -> None:
    if not has_logprobs(target.version):
        return
    body = {"model": target.tags["q8_0"], "prompt": "abc", "raw": True, "logprobs": True, "options": OPTS}
    with http.stream("POST", "/api/generate", json=body) as r:
        lines = [httpx.Response(200, content=line).json() for line in r.iter_lines() if line]
    tokens = [e for line in lines for e in line.get("logprobs") or []]
    assert len(tokens) == 6
    assert "".join(t["token"] for t in tokens) == "".join(line["response"] for line in lines)


def test_top_logprobs_over_20_is_400(target: Target, http: httpx.Client) -> None:
    if not has_logprobs(target.version):
        return
    body = {"model": target.tags["q8_0"], "prompt": "abc", "logprobs": True, "top_logprobs": 21}
    r = http.post("/api/generate", json=body)
    assert r.status_code == 400 and r.json() == {"error": "top_logprobs must be between 0 and 20"}


def test_the_quality_measure_ranks_the_quantizations(target: Target, client: ollama.Client) -> None:
    """f16 is the reference; q8_0 loses less than q4_K_M. Era A: not measured, one line why."""
    backend = OllamaBackend(target.url)
    tags = {target.tags[q]: q for q in ("f16", "q8_0", "q4_K_M")}
    try:
        result = measure_quality(backend, [(t, None) for t in tags], tags, QualitySettings(num_predict=8))
    finally:
        backend.close()
    by_quant = {tags[q.tag]: q for q in result.values()}
    if not has_logprobs(target.version):
        assert not any(q.measured for q in result.values())
        assert all("0.12.11" in q.why_not for q in result.values())
        return
    assert by_quant["f16"].is_reference
    assert 0 <= by_quant["q8_0"].loss < by_quant["q4_K_M"].loss  # type: ignore[operator]
    assert by_quant["q8_0"].method == "greedy-prefix" and by_quant["q8_0"].positions > 0
