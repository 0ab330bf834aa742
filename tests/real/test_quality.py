"""The quality measure on real Ollama, once per release built: tiny random-weight models in f16, q8_0 and
q4_0 (the last two made by llama-quantize) differ measurably, the measure ranks them f16 < q8_0 < q4_0 in
loss, and a second measurement lands within the first one's stated spread. Era A (0.12.10) serves no
log-probabilities: quality not measured, with the reason. Random weights say nothing about a real model's
quality; they only show that the measure reads and compares a real engine's numbers correctly."""

from __future__ import annotations

from pathlib import Path

import ollama
import pytest

from tests.conftest import TINY_MODEL, RealOllama, get_real_ollama, ollama_releases
from tuner.backend.ollama import OllamaBackend
from tuner.fidelity import TagQuality
from tuner.quality.run import QualitySettings, measure_quality
from tuner.releases import has_logprobs

pytestmark = pytest.mark.engine
SETTINGS = QualitySettings(num_predict=12)


@pytest.fixture(scope="module", params=ollama_releases())
def real(
    request: pytest.FixtureRequest,
    real_ollama_pool: dict[str, RealOllama],
    real_ollama_base: Path,
    served_models: dict[str, Path],
    quality_quants: dict[str, Path],
) -> RealOllama:
    real = get_real_ollama(request.param, real_ollama_pool, real_ollama_base, served_models)
    name = f"{TINY_MODEL}:q4_0"
    if name not in real.model_files:  # imported through the API, as `ollama create` does
        client = ollama.Client(host=real.url, timeout=300)
        try:
            path = quality_quants["q4_0"]
            client.create(model=name, files={path.name: client.create_blob(path)})
        finally:
            client.close()
        real.model_files[name] = quality_quants["q4_0"]
    return real


def _measure(real: RealOllama) -> dict[str, TagQuality]:
    tags = {f"{TINY_MODEL}:{q}": q for q in ("f16", "q8_0", "q4_0")}
    backend = OllamaBackend(real.url)
    try:
        result = measure_quality(backend, [(t, None) for t in tags], tags, SETTINGS)
    finally:
        backend.close()
    return {tags[q.tag]: q for q in result.values()}


def test_ranks_f16_q8_0_q4_0_and_repeats_within_its_spread(real: RealOllama) -> None:
    first = _measure(real)
    if not has_logprobs(real.version):
        assert not any(q.measured for q in first.values())
        assert all(
            f"Ollama {real.version} serves no token log-probabilities" in q.why_not for q in first.values()
        )
        return
    assert first["f16"].is_reference
    q8, q4 = first["q8_0"], first["q4_0"]
    assert q8.kl is not None and q4.kl is not None
    assert 0 < q8.kl.mean < q4.kl.mean
    assert q8.kl.high < q4.kl.mean, "q4_0 loses more than q8_0 beyond q8_0's spread"
    second = _measure(real)
    for quant in ("q8_0", "q4_0"):
        a, b = first[quant].kl, second[quant].kl
        assert a is not None and b is not None
        assert abs(a.mean - b.mean) <= max(a.half_width, 1e-9), (quant, a, b)
        assert first[quant].top1 == second[quant].top1
