"""LlamaServerBackend against a real llama-server and the tiny random-weight models (CPU: num_gpu=0).

Needs a llama-server: `python -m tuner.engines build llama-server` (cached), LLAMA_SERVER, or one on PATH.
"""

from __future__ import annotations

import math
import socket

import psutil
import pytest

from tuner.backend.base import Backend, EngineOptions
from tuner.backend.llamaserver import LlamaServerBackend
from tuner.errors import BackendError, ModelNotFound, OutOfMemory

pytestmark = pytest.mark.engine

CPU = EngineOptions(num_gpu=0, num_ctx=2048)
PROMPT = "Measure, don't guess: the fastest num_gpu and num_ctx that fit your machine. " * 3
REPEATS = 7


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def test_backend_protocol(llama_backend: LlamaServerBackend) -> None:
    assert isinstance(llama_backend, Backend)
    info = llama_backend.server_info()
    assert info.engine == "llama-server" and info.version and "\n" not in info.version


@pytest.mark.parametrize("quant", ["F16", "Q8_0"])
def test_load_generate_unload(
    llama_backend: LlamaServerBackend, tiny_models: dict[str, str], quant: str
) -> None:
    model = tiny_models[quant]
    assert llama_backend.model_info(model).quantization == quant
    load_s = llama_backend.load(model, CPU)
    assert 0 < load_s < 60
    pid, port = llama_backend.pid, llama_backend._running.port  # noqa: SLF001 - checked after unload
    assert pid is not None and psutil.Process(pid).memory_info().rss > 0

    res = llama_backend.residency(model)
    assert res is not None
    assert res.size_vram_bytes == 0 and res.size_bytes > 0 and res.layers_offloaded == 0
    assert res.context_length == CPU.num_ctx
    assert llama_backend.residency("another.gguf") is None

    gens = [llama_backend.generate(model, PROMPT, CPU, num_predict=64, seed=i) for i in range(1 + REPEATS)]
    for g in gens:
        assert g.eval_tokens == 64  # ignore_eos: exactly num_predict tokens
        assert g.prompt_tokens >= len(PROMPT)  # byte vocabulary: a token per byte, plus <s>
        assert g.decode_tok_s > 0 and g.prefill_tok_s > 0
        assert 0 < g.ttft_s <= g.total_s and g.eval_s < g.total_s
    # Speeds are data, not assertions: a shared CI core can make any repeat 10x slower than the next.
    assert all(math.isfinite(g.decode_tok_s) for g in gens)

    llama_backend.unload_all()
    assert llama_backend.pid is None and llama_backend.residency(model) is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _port_free(llama_backend.host, port)


def test_larger_context_costs_more_memory(
    llama_backend: LlamaServerBackend, tiny_models: dict[str, str]
) -> None:
    model = tiny_models["Q8_0"]
    kv, size = {}, {}
    for ctx in (1024, 8192):
        llama_backend.load(model, EngineOptions(num_gpu=0, num_ctx=ctx))
        sizes = llama_backend.buffer_sizes()
        res = llama_backend.residency(model)
        assert sizes is not None and res is not None
        kv[ctx], size[ctx] = sizes.total("KV"), res.size_bytes
    assert kv[1024] == 1024 * TINY_KV_BYTES_PER_TOKEN
    assert kv[8192] == 8 * kv[1024]
    assert size[8192] - size[1024] >= kv[8192] - kv[1024]


def test_quantized_kv_cache_is_smaller(
    llama_backend: LlamaServerBackend, tiny_models: dict[str, str]
) -> None:
    model = tiny_models["F16"]
    llama_backend.load(model, EngineOptions(num_gpu=0, num_ctx=4096, flash_attn="on"))
    f16 = llama_backend.buffer_sizes().total("KV")  # type: ignore[union-attr]
    opts = EngineOptions(num_gpu=0, num_ctx=4096, flash_attn="on", kv_cache_type="q8_0")
    llama_backend.load(model, opts)
    q8 = llama_backend.buffer_sizes().total("KV")  # type: ignore[union-attr]
    assert q8 == pytest.approx(f16 * 34 / 64, rel=0.01)  # q8_0: 34 bytes per 32 values
    assert "--cache-type-v" in (llama_backend.command_line or [])
    assert llama_backend.generate(model, PROMPT, opts, num_predict=8).eval_tokens == 8


# f16 K and V of the tiny shape: 8 layers * 2 * (2 KV heads * 64) * 2 bytes = 4 KiB a token
TINY_KV_BYTES_PER_TOKEN = 4096


def test_context_past_a_memory_cap_is_out_of_memory(llama_server_binary, tiny_models, tmp_path) -> None:
    # 2 M tokens need 8 GiB of KV cache; capping the server's address space at 4 GiB (ulimit -v) makes
    # the allocation fail in well under a second whatever the host's memory and overcommit policy.
    backend = LlamaServerBackend(llama_server_binary, log_dir=tmp_path, memory_limit_bytes=4 * 2**30)
    try:
        with pytest.raises(OutOfMemory) as err:
            backend.load(tiny_models["F16"], EngineOptions(num_gpu=0, num_ctx=2**21))
        assert "alloc" in err.value.server_message and "8192.00 MB" in err.value.server_message
        assert "failed to allocate" in err.value.log_tail
        assert backend.pid is None
        backend.load(tiny_models["F16"], CPU)  # the backend is usable afterwards
        assert backend.generate(tiny_models["F16"], PROMPT, CPU, num_predict=4).eval_tokens == 4
    finally:
        backend.close()


def test_context_past_host_memory_is_out_of_memory(llama_backend: LlamaServerBackend, tiny_models) -> None:
    with open("/proc/sys/vm/overcommit_memory") as fh:
        if fh.read().strip() == "1":
            pytest.skip("vm.overcommit_memory=1: a huge allocation would succeed and then be OOM-killed")
    host = psutil.virtual_memory().total + psutil.swap_memory().total
    num_ctx = min(2**30, (4 * host // TINY_KV_BYTES_PER_TOKEN + 255) // 256 * 256)  # KV = 4x RAM + swap
    with pytest.raises(OutOfMemory) as err:
        llama_backend.load(tiny_models["Q8_0"], EngineOptions(num_gpu=0, num_ctx=num_ctx))
    assert "memory" in err.value.server_message or "alloc" in err.value.server_message
    assert llama_backend.pid is None


def test_bad_option_is_a_backend_error_not_oom(llama_backend: LlamaServerBackend, tiny_models) -> None:
    with pytest.raises(BackendError) as err:
        llama_backend.load(tiny_models["F16"], EngineOptions(num_gpu=0, num_ctx=2048, kv_cache_type="bogus"))
    assert not isinstance(err.value, OutOfMemory)
    assert "bogus" in str(err.value)
    assert llama_backend.pid is None


def test_quantized_v_cache_without_flash_attention_names_the_cause(llama_backend, tiny_models) -> None:
    opts = EngineOptions(num_gpu=0, num_ctx=2048, flash_attn="off", kv_cache_type="q8_0")
    with pytest.raises(BackendError, match="quantized V cache requires flash_attn") as err:
        llama_backend.load(tiny_models["F16"], opts)
    assert not isinstance(err.value, OutOfMemory)


def test_missing_model_is_model_not_found(llama_backend: LlamaServerBackend, tmp_path) -> None:
    with pytest.raises(ModelNotFound):
        llama_backend.load(str(tmp_path / "missing.gguf"), CPU)
    with pytest.raises(ModelNotFound):
        llama_backend.model_info(str(tmp_path / "missing.gguf"))


def test_generate_loads_on_demand_and_switches_models(llama_backend, tiny_models) -> None:
    g = llama_backend.generate(tiny_models["Q8_0"], PROMPT, CPU, num_predict=4)
    assert g.eval_tokens == 4
    first_pid = llama_backend.pid
    llama_backend.load(tiny_models["F16"], CPU)  # one model at a time: the Q8_0 server is stopped
    assert llama_backend.pid != first_pid and not psutil.pid_exists(first_pid or -1)
    assert llama_backend.residency(tiny_models["Q8_0"]) is None
    assert llama_backend.residency(tiny_models["F16"]) is not None
