"""How far a quantized tag's next-token distributions are from the reference tag's: the fidelity measure. Pure.

For each prompt of the shipped set (tuner.quality.prompts) the reference tag (the highest precision the
study has: f32/bf16/f16, else q8_0) decodes greedily at temperature 0 and reports, at every position, its
top-k tokens with their log-probabilities. The candidate tag is read on the same token sequence: exactly
(teacher-forced: the reference's tokens are fed to it, llama-server) or up to its own first greedy
divergence (greedy prefix: both decoded the same tokens so far, Ollama). At each compared position:

    KL       KL(P_ref || Q_cand) over the reference's top-k tokens plus one "every other token" bucket. A
             token missing from the candidate's top-k gets at most the candidate's k-th probability. This is
             the KL of a coarser partition of the vocabulary, so it never exceeds the full-vocabulary KL
             that llama.cpp's perplexity tool reports (data-processing inequality): a lower bound, in nats.
    top-1    whether both put the same token first (llama.cpp's "same top p").

Per prompt: the mean KL over its compared positions, the share of positions with the same top-1, and the
first position where the greedy choices differ (the prompt's length when they never do). The tag's figures
are per compared position (KL, top-1: pooled over the prompts, each prompt weighted by its positions) or per
prompt (first divergence), each with its 95% interval over prompts (the prompts are the independent draws:
tuner.stats' t quantiles, the ratio estimator's variance for the pooled ones). The spread says how much the
prompt set alone moves them; two tags whose KL intervals overlap are not told apart.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.stats import Interval, t_interval, t_quantile

QUALITY_SCHEMA = 1  # bump when a stored quality block changes meaning
RESIDUAL_FLOOR = 1e-9  # the least probability the "every other token" bucket gets (avoids log 0)

# Precision rank of GGUF / Ollama quantization names (higher = closer to the trained weights): picks the
# reference. Bits per weight decide; K-quant suffixes break ties (M over S).
_RANKS = {
    "f32": 100,
    "fp32": 100,
    "bf16": 90,
    "f16": 90,
    "fp16": 90,
    "q8_0": 80,
    "q8_1": 80,
    "q6_k": 60,
    "q5_k_m": 52,
    "q5_1": 51,
    "q5_k_s": 51,
    "q5_0": 50,
    "q4_k_m": 42,
    "q4_1": 41,
    "q4_k_s": 41,
    "iq4_nl": 41,
    "iq4_xs": 40,
    "q4_0": 40,
    "q3_k_l": 33,
    "q3_k_m": 32,
    "q3_k_s": 31,
    "q2_k": 20,
}
HIGH_PRECISION = 80  # rank of q8_0: a reference below it is named as such in the report


def precision_rank(quantization: str) -> int:
    """How precise a quantization name is (0 when unknown): 'F16' 90, 'Q8_0' 80, 'Q4_K_M' 42."""
    q = quantization.strip().lower()
    if q in _RANKS:
        return _RANKS[q]
    for name, rank in sorted(_RANKS.items(), key=lambda kv: -len(kv[0])):
        if re.search(rf"(^|[-_.:]){re.escape(name)}($|[-_.])", q):
            return rank
    return 0


@dataclass(frozen=True)
class TokenStep:
    """One generated position: the chosen token and the engine's top-k alternatives (log-probabilities)."""

    token: str  # the token's text (or its id as text where the engine gives ids)
    logprob: float
    top: tuple[tuple[str, float], ...]  # (token, logprob), most likely first


def kl_top_k(ref: TokenStep, cand: TokenStep) -> float:
    """KL(P_ref || Q_cand) in nats over the reference's top-k tokens plus one bucket for the rest."""
    if not ref.top:
        return math.nan
    cand_lp = dict(cand.top)
    floor = min(cand_lp.values()) if cand_lp else math.log(RESIDUAL_FLOOR)
    p = [math.exp(lp) for _, lp in ref.top]
    q = [max(RESIDUAL_FLOOR, math.exp(cand_lp.get(tok, floor))) for tok, _ in ref.top]
    total_q = sum(q)
    if total_q > 1.0:  # the floor for absent tokens overshot: scale the candidate's part back to 1
        q = [v / total_q * (1 - RESIDUAL_FLOOR) for v in q]
    p_rest = max(RESIDUAL_FLOOR, 1.0 - sum(p))
    q_rest = max(RESIDUAL_FLOOR, 1.0 - sum(q))
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
    kl += p_rest * math.log(p_rest / q_rest)
    return max(0.0, kl)


def top1(step: TokenStep) -> str:
    return step.top[0][0] if step.top else step.token


@dataclass(frozen=True)
class PromptScore:
    """One prompt of the set, compared."""

    prompt: str  # the prompt's id
    kind: str  # chat | code | reasoning | long
    positions: int  # positions compared
    mean_kl: float  # nats per position
    top1_agreement: float  # share of compared positions with the same most likely token
    first_divergence: int  # first position whose greedy token differs; the reference's length if none


def score_prompt(
    prompt: str, kind: str, ref: Sequence[TokenStep], cand: Sequence[TokenStep], *, teacher_forced: bool
) -> PromptScore:
    """Compare one prompt's steps. Teacher-forced: every position the reference has (the candidate was fed
    the reference's tokens). Greedy prefix: positions up to and including the first divergence (the last
    position whose context both share)."""
    n = min(len(ref), len(cand))
    first = next((i for i in range(n) if ref[i].token != cand[i].token), n)
    compared = n if teacher_forced else min(n, first + 1)
    kls = [kl_top_k(ref[i], cand[i]) for i in range(compared)]
    kls = [k for k in kls if math.isfinite(k)]
    same = [top1(ref[i]) == top1(cand[i]) for i in range(compared)]
    return PromptScore(
        prompt=prompt,
        kind=kind,
        positions=len(kls),
        mean_kl=statistics.fmean(kls) if kls else math.nan,
        top1_agreement=sum(same) / len(same) if same else math.nan,
        first_divergence=first,
    )


@dataclass(frozen=True)
class Spread:
    """A mean over prompts with its 95% t-interval (low = high = mean with one prompt)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float], low: float = -math.inf, high: float = math.inf) -> Spread | None:
        """The mean of `values` with its interval, clipped to the quantity's range [low, high]."""
        interval = t_interval(values)
        if interval is None:
            return None
        return cls(interval.mean, max(low, interval.low), min(high, interval.high), interval.n)

    @classmethod
    def pooled(
        cls, values: Sequence[float], weights: Sequence[int], low: float = -math.inf, high: float = math.inf
    ) -> Spread | None:
        """The per-position mean over prompts that compared `weights` positions each (a ratio estimator),
        with the 95% interval of cluster sampling: prompts, not positions, are the independent draws."""
        pairs = [(v, w) for v, w in zip(values, weights) if w > 0 and math.isfinite(v)]
        if not pairs:
            return None
        total = sum(w for _, w in pairs)
        mean = sum(v * w for v, w in pairs) / total
        k = len(pairs)
        if k < 2:
            return cls(mean, mean, mean, k)
        w_bar = total / k
        var = sum((w * (v - mean)) ** 2 for v, w in pairs) / (k * (k - 1)) / w_bar**2
        half = t_quantile(k - 1) * math.sqrt(var)
        return cls(mean, max(low, mean - half), min(high, mean + half), k)

    @property
    def interval(self) -> Interval:
        return Interval(self.mean, self.low, self.high, self.n)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class TagQuality:
    """The fidelity of one (tag, KV cache type) against the reference, or why it was not measured."""

    tag: str
    kv_cache_type: str | None
    reference: str  # the reference tag
    measured: bool
    why_not: str = ""  # one line when not measured
    method: str = ""  # "teacher-forced" | "greedy-prefix" | "reference"
    kl: Spread | None = None  # nats per token
    top1: Spread | None = None  # share of positions
    first_divergence: Spread | None = None  # tokens
    positions: int = 0
    prompts: list[PromptScore] = field(default_factory=list)
    prompt_set: str = ""  # e.g. "v1"
    top_k: int = 0
    num_predict: int = 0

    @property
    def is_reference(self) -> bool:
        return self.method == "reference"

    @property
    def loss(self) -> float | None:
        """Mean KL in nats: the quality loss the constraint and the picks use (None: not measured)."""
        return self.kl.mean if self.measured and self.kl is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TagQuality:
        def spread(value: Any) -> Spread | None:
            return Spread(**value) if isinstance(value, dict) else None

        return cls(
            tag=str(data.get("tag", "")),
            kv_cache_type=data.get("kv_cache_type"),
            reference=str(data.get("reference", "")),
            measured=bool(data.get("measured")),
            why_not=str(data.get("why_not", "")),
            method=str(data.get("method", "")),
            kl=spread(data.get("kl")),
            top1=spread(data.get("top1")),
            first_divergence=spread(data.get("first_divergence")),
            positions=int(data.get("positions", 0)),
            prompts=[PromptScore(**p) for p in data.get("prompts") or [] if isinstance(p, dict)],
            prompt_set=str(data.get("prompt_set", "")),
            top_k=int(data.get("top_k", 0)),
            num_predict=int(data.get("num_predict", 0)),
        )


def summarize(
    tag: str,
    kv_cache_type: str | None,
    reference: str,
    scores: Sequence[PromptScore],
    *,
    method: str,
    prompt_set: str,
    top_k: int,
    num_predict: int,
) -> TagQuality:
    """The tag's figures over the prompts, each with its spread."""
    usable = [s for s in scores if s.positions > 0]
    weights = [s.positions for s in usable]
    if not usable:
        return not_measured(tag, kv_cache_type, reference, "no position could be compared (no logprobs)")
    return TagQuality(
        tag=tag,
        kv_cache_type=kv_cache_type,
        reference=reference,
        measured=True,
        method=method,
        kl=Spread.pooled([s.mean_kl for s in usable], weights, low=0.0),
        top1=Spread.pooled([s.top1_agreement for s in usable], weights, low=0.0, high=1.0),
        first_divergence=Spread.of([float(s.first_divergence) for s in usable], low=0.0),
        positions=sum(s.positions for s in usable),
        prompts=list(scores),
        prompt_set=prompt_set,
        top_k=top_k,
        num_predict=num_predict,
    )


def reference_quality(tag: str, kv_cache_type: str | None, prompt_set: str) -> TagQuality:
    """The reference against itself: no loss by definition."""
    zero, one = Spread(0.0, 0.0, 0.0, 1), Spread(1.0, 1.0, 1.0, 1)
    return TagQuality(
        tag, kv_cache_type, tag, True, method="reference", kl=zero, top1=one, prompt_set=prompt_set
    )


def not_measured(tag: str, kv_cache_type: str | None, reference: str, why: str) -> TagQuality:
    return TagQuality(tag=tag, kv_cache_type=kv_cache_type, reference=reference, measured=False, why_not=why)


def variant_key(tag: str, kv_cache_type: str | None) -> str:
    """How a (tag, KV cache type) is keyed in the stored quality block."""
    return f"{tag}|kv={kv_cache_type or 'default'}"


def choose_reference(quantizations: dict[str, str]) -> str:
    """The most precise tag of {tag: quantization name}; the first listed among equals."""
    return max(
        quantizations, key=lambda tag: (precision_rank(quantizations[tag]), -list(quantizations).index(tag))
    )


def fmt_loss(q: TagQuality | None) -> str:
    """'0.0312 nats (0.0281-0.0343)', 'reference', or 'not measured' (three significant digits)."""
    if q is None or not q.measured or q.kl is None:
        return "not measured"
    if q.is_reference:
        return "reference"
    return f"{q.kl.mean:.3g} nats ({q.kl.low:.3g}-{q.kl.high:.3g})"


def fmt_top1(q: TagQuality | None) -> str:
    if q is None or not q.measured or q.top1 is None:
        return "-"
    return f"{100 * q.top1.mean:.1f}%"
