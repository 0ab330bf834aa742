"""The simulator's token model: divergence from the F16 tag follows llama.cpp's published mean KLD per
quantization type (tuner.sim.logprobs), with a hidden per-model factor; greedy and repeatable."""

from __future__ import annotations

import math
import statistics

import pytest

from tuner.backend.ollama import OllamaBackend
from tuner.quality.run import QualitySettings, measure_quality
from tuner.sim import SimServer
from tuner.sim import logprobs as lp

VOCAB = lp.vocabulary(["the", "quick", "brown", "fox"])


def _full_kl(p: lp.Step, q: lp.Step) -> float:
    P, Q = dict(p.top), dict(q.top)
    return sum(math.exp(v) * (v - Q[t]) for t, v in P.items())


@pytest.mark.parametrize("ftype", ["Q8_0", "Q4_K_M", "Q4_0"])
def test_expected_kl_is_the_published_figure(ftype: str) -> None:
    kld = lp.published_kld(ftype)
    kls = []
    for n in range(300):
        context = [f"c{n}", "prompt"]
        ref = lp.generate(context, 1, VOCAB, 0.0, "m:fp16", top_k=len(VOCAB))
        cand = lp.generate(context, 1, VOCAB, kld, f"m:{ftype}", top_k=len(VOCAB))
        kls.append(_full_kl(ref[0], cand[0]))
    assert statistics.fmean(kls) == pytest.approx(kld, rel=0.2)


def test_published_figures_order_the_types_and_fill_gaps_by_precision() -> None:
    assert lp.published_kld("F16") == 0.0
    assert lp.published_kld("Q8_0") < lp.published_kld("Q4_K_M") < lp.published_kld("Q4_0")
    assert lp.published_kld("Q3_K_S") == lp.published_kld("Q3_K_M")  # not in the table: the nearest type
    assert lp.tag_kld("Q4_K_M", "a:q4") != lp.tag_kld("Q4_K_M", "b:q4")  # a hidden factor per model


def test_greedy_and_repeatable() -> None:
    a = lp.generate(["x"], 8, VOCAB, 0.03, "m:q4", top_k=5)
    assert a == lp.generate(["x"], 8, VOCAB, 0.03, "m:q4", top_k=5)
    assert all(s.token == s.top[0][0] and s.logprob == s.top[0][1] for s in a)


def test_served_logprobs_rank_the_catalog_tags_near_the_published_figures() -> None:
    with SimServer("1xRTX4090", version="0.24.0", noise=0) as sim:
        backend = OllamaBackend(sim.url)
        tags = [f"llama3.1:8b-instruct-{q}" for q in ("q4_K_M", "q8_0", "fp16")]
        quants = {t: backend.model_info(t).quantization for t in tags}
        result = measure_quality(backend, [(t, None) for t in tags], quants, QualitySettings())
        again = measure_quality(backend, [(t, None) for t in tags], quants, QualitySettings())
        backend.close()
    q4, q8, f16 = (result[f"{t}|kv=default"] for t in tags)
    assert f16.is_reference and q8.loss is not None and q4.loss is not None
    assert q8.loss < q4.loss
    # greedy prefix over 8 prompts: within a factor 2 of the published figure times the hidden factor
    assert q4.loss == pytest.approx(lp.tag_kld("Q4_K_M", tags[0]), rel=0.5)
    assert q8.loss == pytest.approx(lp.tag_kld("Q8_0", tags[1]), rel=0.5)
    assert again == result


def test_era_a_serves_no_logprobs() -> None:
    with SimServer("1xRTX4090", version="0.12.10") as sim:
        backend = OllamaBackend(sim.url)
        tags = ["llama3.1:8b-instruct-q4_K_M", "llama3.1:8b-instruct-fp16"]
        result = measure_quality(backend, [(t, None) for t in tags], {t: t for t in tags})
        reply = backend._client.generate(
            model=tags[0], prompt="hi", logprobs=True, options={"num_predict": 3}
        )
        backend.close()
    assert not any(q.measured for q in result.values())
    assert reply.logprobs is None
