"""The fidelity arithmetic (tuner.fidelity): top-k KL, top-1 agreement, first divergence, spreads."""

from __future__ import annotations

import math
import random

import pytest

from tuner.fidelity import (
    Spread,
    TagQuality,
    TokenStep,
    choose_reference,
    kl_top_k,
    precision_rank,
    reference_quality,
    score_prompt,
    summarize,
)


def step(probs: dict[str, float], token: str | None = None) -> TokenStep:
    top = tuple(sorted(((t, math.log(p)) for t, p in probs.items()), key=lambda kv: -kv[1]))
    chosen = token or top[0][0]
    return TokenStep(chosen, dict(top)[chosen], top)


def full_kl(p: dict[str, float], q: dict[str, float]) -> float:
    return sum(pv * math.log(pv / q[t]) for t, pv in p.items() if pv > 0)


def test_identical_distributions_lose_nothing() -> None:
    s = step({"a": 0.6, "b": 0.3, "c": 0.05})
    assert kl_top_k(s, s) == pytest.approx(0.0, abs=1e-12)


def test_never_above_the_full_vocabulary_kl() -> None:
    """The top-k partition is coarser than the vocabulary: its KL is a lower bound (data processing)."""
    rng = random.Random(3)
    for _ in range(200):
        vocab = [f"t{i}" for i in range(12)]
        p = [math.exp(rng.gauss(0, 2)) for _ in vocab]
        q = [v * math.exp(rng.gauss(0, 0.5)) for v in p]
        P = {t: v / sum(p) for t, v in zip(vocab, p)}
        Q = {t: v / sum(q) for t, v in zip(vocab, q)}
        top_p = dict(sorted(P.items(), key=lambda kv: -kv[1])[:5])
        top_q = dict(sorted(Q.items(), key=lambda kv: -kv[1])[:5])
        bound = kl_top_k(step(top_p), step(top_q))
        assert 0.0 <= bound <= full_kl(P, Q) + 1e-9


def test_masked_logprobs_and_missing_tokens_stay_finite() -> None:
    """llama-server reports -3.4e38 for masked tokens; a token absent from the candidate's top-k."""
    ref = TokenStep("a", 0.0, (("a", 0.0), ("b", -3.4e38)))
    cand = TokenStep("b", -0.1, (("b", -0.1), ("c", -3.4e38)))
    kl = kl_top_k(ref, cand)
    assert math.isfinite(kl) and kl > 1.0


def test_greedy_prefix_stops_at_the_first_divergence_and_counts_it() -> None:
    ref = [step({"x": 0.9, "y": 0.1}), step({"y": 0.8, "x": 0.2}), step({"x": 0.7, "y": 0.3})]
    cand = [step({"x": 0.8, "y": 0.2}), step({"x": 0.6, "y": 0.4}), step({"x": 0.7, "y": 0.3})]
    s = score_prompt("p", "chat", ref, cand, teacher_forced=False)
    assert s.first_divergence == 1 and s.positions == 2 and s.top1_agreement == 0.5
    forced = score_prompt("p", "chat", ref, cand, teacher_forced=True)
    assert forced.positions == 3 and forced.first_divergence == 1
    same = score_prompt("p", "chat", ref, ref, teacher_forced=False)
    assert same.first_divergence == 3 and same.mean_kl == pytest.approx(0.0, abs=1e-12)


def test_pooled_spread_weights_prompts_by_positions() -> None:
    s = Spread.pooled([0.1, 0.3], [3, 1])
    assert s is not None and s.mean == pytest.approx((0.3 + 0.3) / 4) and s.low < s.mean < s.high
    one = Spread.pooled([0.2], [5])
    assert one is not None and one.low == one.high == 0.2 and one.n == 1
    clipped = Spread.pooled([0.0, 0.5, 0.0], [1, 1, 1], low=0.0)
    assert clipped is not None and clipped.low == 0.0


def test_summary_round_trips_through_the_stored_dict() -> None:
    ref = [step({"x": 0.9, "y": 0.1})] * 4
    cand = [step({"x": 0.7, "y": 0.3})] * 4
    scores = [score_prompt(f"p{i}", "code", ref, cand, teacher_forced=True) for i in range(3)]
    q = summarize(
        "m:q4", None, "m:f16", scores, method="teacher-forced", prompt_set="v1", top_k=20, num_predict=4
    )
    assert q.measured and q.loss is not None and q.loss > 0 and q.positions == 12
    assert TagQuality.from_dict(q.to_dict()) == q
    assert reference_quality("m:f16", None, "v1").loss == 0.0


def test_nothing_compared_is_not_measured_never_zero() -> None:
    q = summarize("m:q4", None, "m:f16", [], method="greedy-prefix", prompt_set="v1", top_k=20, num_predict=4)
    assert not q.measured and q.loss is None and q.why_not


def test_the_reference_is_the_most_precise_tag() -> None:
    assert precision_rank("F16") > precision_rank("Q8_0") > precision_rank("Q6_K") > precision_rank("Q4_K_M")
    assert (
        precision_rank("Q4_K_M") > precision_rank("Q4_0") > precision_rank("Q2_K") > precision_rank("bogus")
    )
    assert precision_rank("llama3.1:8b-instruct-q8_0") == precision_rank("Q8_0")
    assert choose_reference({"a:q4": "Q4_K_M", "a:q8": "Q8_0", "a:fp16": "F16"}) == "a:fp16"
    assert choose_reference({"a:q4": "Q4_K_M", "a:q8": "Q8_0"}) == "a:q8"
