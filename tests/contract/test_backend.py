"""autotune's own Ollama seam (tuner.backend.ollama.OllamaBackend) on every backend: what a study calls,
in the order a trial calls it, and the errors it must turn into one-line messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.conftest import Target
from tuner.backend.base import AUTO, EngineOptions
from tuner.backend.ollama import OllamaBackend, resolve_tags
from tuner.errors import ModelNotFound, OutOfMemory


@pytest.fixture
def backend(target: Target, client) -> Iterator[OllamaBackend]:  # client: starts and ends unloaded
    b = OllamaBackend(target.url)
    yield b
    b.close()


def test_server_and_model_info(target: Target, backend: OllamaBackend) -> None:
    server = backend.server_info()
    assert (server.engine, server.version) == ("ollama", target.version)
    info = backend.model_info(target.tags["q4_K_M"])
    assert (info.architecture, info.block_count, info.max_layers, info.context_length) == (
        "llama",
        8,
        9,
        32768,
    )
    assert info.quantization == "Q4_K_M" and info.size_bytes > 1_000_000
    assert len(info.tensors) == 75  # the estimator's input: the tensor list the official client drops


def test_a_trial_load_residency_generate_unload(target: Target, backend: OllamaBackend) -> None:
    name = target.tags["q8_0"]
    options = EngineOptions(num_gpu=AUTO, num_ctx=2048)
    assert backend.load(name, options) > 0
    res = backend.residency(name)
    assert res is not None and res.size_bytes > 0 and res.size_vram_bytes == 0 and res.context_length == 2048
    assert res.gpu_fraction == 0.0
    gen = backend.generate(name, "[run 1] measure this", options, num_predict=16)
    assert gen.eval_tokens == 16 and gen.prompt_tokens > 0
    assert gen.decode_tok_s > 0 and gen.prefill_tok_s > 0 and 0 < gen.ttft_s <= gen.total_s
    assert gen.text
    backend.unload_all()
    assert backend.residency(name) is None


def test_quant_list_expands_to_the_local_tags(target: Target, backend: OllamaBackend) -> None:
    tags = resolve_tags(backend, "tiny-llama", quants=["q4_K_M", "q8_0", "fp16"], tags=[], pull=False)
    assert tags == [target.tags["q4_K_M"], target.tags["q8_0"], target.tags["f16"]]


def test_missing_model_and_memory_refusal_are_typed_errors(
    target: Target, backend: OllamaBackend, long_context_model: str
) -> None:
    with pytest.raises(ModelNotFound, match="ollama pull no-such-model:7b"):
        backend.model_info("no-such-model:7b")
    with pytest.raises(OutOfMemory):
        backend.load(long_context_model, EngineOptions(num_gpu=AUTO, num_ctx=1 << 23))
    assert backend.residency(long_context_model) is None
