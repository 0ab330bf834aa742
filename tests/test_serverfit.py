"""The estimator's verdict on server settings: slots multiply the KV cache, a quantized KV cache shrinks it,
and a setting predicted not to load is never started."""

from __future__ import annotations

import pytest

from tuner.backend.ollama import OllamaBackend
from tuner.estimate.spec import ModelSpec
from tuner.fitcheck import spec_of
from tuner.hardware import parse_gpus
from tuner.serverenv import ServerSettings
from tuner.serverfit import check_settings
from tuner.sim import SimServer


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    with SimServer(gpus="1xRTX4090") as sim:
        backend = OllamaBackend(sim.url)
        try:
            read = spec_of(backend.model_info("llama3.1:8b"))
        finally:
            backend.close()
    assert read is not None
    return read


def test_slots_multiply_the_kv_cache_until_it_no_longer_loads(spec: ModelSpec) -> None:
    gpus = parse_gpus("1xRTX4090")
    settings = [ServerSettings(num_parallel=n) for n in (1, 2, 4, 8)]
    fits = check_settings(spec, gpus, settings, num_ctx=32768, num_gpu=99, version="0.12.10")
    sizes = [f.vram_bytes for f in fits]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert fits[0].loads and fits[0].fully_on_gpu
    assert not fits[-1].loads and "predicted not to load" in fits[-1].reason()
    auto = check_settings(spec, gpus, settings[-1:], num_ctx=32768, num_gpu=None, version="0.12.10")[0]
    assert auto.loads and not auto.fully_on_gpu  # Ollama's own placement spills instead of failing


def test_a_quantized_kv_cache_with_flash_attention_costs_less(spec: ModelSpec) -> None:
    gpus = parse_gpus("1xRTX4090")
    f16, q8 = check_settings(
        spec,
        gpus,
        [
            ServerSettings(num_parallel=4, flash_attention=True),
            ServerSettings(num_parallel=4, flash_attention=True, kv_cache_type="q8_0"),
        ],
        num_ctx=16384,
        num_gpu=99,
        version="0.12.10",
    )
    assert q8.vram_bytes < f16.vram_bytes
