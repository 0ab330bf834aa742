"""The simulator's token model: greedy tokens with top-k log-probabilities whose divergence from the F16 tag
follows llama.cpp's published per-quantization figures (Ollama's `logprobs` / `top_logprobs`, 0.12.11 on).

At every position the "true" next-token logits over a small vocabulary are drawn from the context (the
prompt's tail and the tokens generated so far), so every tag of a model sees the same distribution for the
same context. A tag's logits are the true ones plus Gaussian noise (drawn from the tag and the context) of
the size that makes the expected KL divergence from the true distribution equal to its quantization's
published mean KLD: for small noise of standard deviation s on every logit, E[KL(p || q)] ~= s^2 (1 - sum
p_i^2) / 2, so s = sqrt(2 KLD / (1 - sum p_i^2)). F16 is the reference (no noise), as in the tables.

Source of the figures: llama.cpp, tools/perplexity/README.md, "LLaMA 3 8b Scoreboard" (revision f364eb6f,
CUDA backend, 1x RTX 4090, Wikitext-2, no importance matrix), column "KLD" (mean KL divergence from FP16,
nats per token). Each model gets a hidden factor on them (lognormal, sigma MODEL_SPREAD, seeded by the
tag), since other models and other text give other figures; the measured loss then carries the prompt
set's own spread.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.fidelity import precision_rank

# Mean KLD against FP16, nats per token (llama.cpp tools/perplexity/README.md, LLaMA 3 8b Scoreboard).
PUBLISHED_KLD = {
    "F16": 0.0,  # the reference (the table's 0.000551 for f16 is its 16-bit logit store's rounding)
    "BF16": 0.00002515,  # "LLaMA 3 BF16 vs. FP16 comparison", same README
    "Q8_0": 0.001355,
    "Q6_K": 0.005452,
    "Q5_K_M": 0.010762,
    "Q5_0": 0.022239,
    "Q4_K_M": 0.031273,
    "Q4_K_S": 0.043136,
    "Q4_0": 0.071940,
    "Q3_K_M": 0.101913,
    "Q2_K": 0.445132,
}
MODEL_SPREAD = 0.15  # sigma of the hidden per-model factor on the published figure
VOCAB_SIZE = 48  # the token model's vocabulary: more than Ollama's top_logprobs maximum (20)
LOGIT_SCALE = 2.5  # spread of the true logits: the top token gets about half the mass, as in real text


def published_kld(ftype: str) -> float:
    """The figure for a GGUF file type; a type the table lacks takes the nearest one in precision."""
    name = ftype.upper()
    if name in PUBLISHED_KLD:
        return PUBLISHED_KLD[name]
    rank = precision_rank(name)
    return min(PUBLISHED_KLD.items(), key=lambda kv: abs(precision_rank(kv[0]) - rank))[1]


def tag_kld(ftype: str, tag: str) -> float:
    """This tag's expected KL from the reference: the published figure times the model's hidden factor."""
    factor = math.exp(random.Random(zlib.crc32(("quality:" + tag).encode())).gauss(0.0, MODEL_SPREAD))
    return published_kld(ftype) * factor


def vocabulary(words: Sequence[str]) -> tuple[str, ...]:
    base = list(dict.fromkeys(words))
    extra = [f"w{i}" for i in range(max(0, VOCAB_SIZE - len(base)))]
    return tuple((base + extra)[:VOCAB_SIZE])


@dataclass(frozen=True)
class Step:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def _log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    norm = top + math.log(sum(math.exp(v - top) for v in logits))
    return [v - norm for v in logits]


def generate(
    context: Sequence[str], count: int, vocab: Sequence[str], kld: float, tag: str, top_k: int
) -> list[Step]:
    """`count` greedy steps after `context` from a model whose expected KL from the truth is `kld`."""
    history = list(context[-16:])
    out: list[Step] = []
    for _ in range(count):
        key = zlib.crc32(" ".join(history).encode())
        truth = random.Random(key)
        logits = [truth.gauss(0.0, LOGIT_SCALE) for _ in vocab]
        if kld > 0:
            probs = [math.exp(v) for v in _log_softmax(logits)]
            sigma = math.sqrt(2 * kld / max(1e-6, 1 - sum(p * p for p in probs)))
            noise = random.Random(zlib.crc32(f"{tag}|{key}".encode()))
            logits = [v + noise.gauss(0.0, sigma) for v in logits]
        logp = _log_softmax(logits)
        order = sorted(range(len(vocab)), key=lambda i: -logp[i])
        best = order[0]
        out.append(Step(vocab[best], logp[best], tuple((vocab[i], logp[i]) for i in order[:top_k])))
        history = [*history[1:], vocab[best]] if len(history) >= 16 else [*history, vocab[best]]
    return out
