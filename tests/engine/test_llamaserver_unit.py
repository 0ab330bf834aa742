"""The parts of the llama-server backend and its tooling that need no engine: log parsing, GGUF
metadata, binary discovery, the test-model generator and the build cache's bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner import installs
from tuner.backend.base import EngineOptions
from tuner.backend.llamaserver import (
    LlamaServerBackend,
    find_binary,
    parse_log,
    quantization_name,
    read_model_info,
)
from tuner.errors import BackendError, BackendTimeout, ConfigError, ModelNotFound, OutOfMemory
from tuner.ggufgen import SHAPES, ensure_model, model_filename, tensor_shapes, vocabulary
from tuner.units import MiB

# Lines as llama.cpp b0c1e570 prints them (src/llama-model.cpp, llama-kv-cache.cpp, llama-context.cpp).
PARTIAL_OFFLOAD_LOG = """\
load_tensors: loading model tensors, this can take a while... (load_mode = mmap)
load_tensors: offloading output layer to GPU
load_tensors: offloading 15 repeating layers to GPU
load_tensors: offloaded 16/33 layers to GPU
load_tensors:   CPU_Mapped model buffer size =  2216.53 MiB
load_tensors:        CUDA0 model buffer size =  2187.00 MiB
llama_context: n_ctx_seq             = 4096
llama_context:  CUDA_Host  output buffer size =     0.49 MiB
llama_kv_cache:        CUDA0 KV buffer size =   256.00 MiB
llama_kv_cache:          CPU KV buffer size =   256.00 MiB
llama_context:        CUDA0 compute buffer size =   560.00 MiB
llama_context:    CUDA_Host compute buffer size =    16.01 MiB
"""


def test_parse_log_splits_host_and_device_buffers() -> None:
    sizes = parse_log(PARTIAL_OFFLOAD_LOG)
    assert sizes.layers_offloaded == 16 and sizes.layers_total == 33
    assert sizes.context_length == 4096
    assert sizes.total("KV") == 512 * MiB
    assert sizes.total("KV", device=True) == 256 * MiB
    assert sizes.size_vram_bytes == round((2187.00 + 256 + 560) * MiB)
    assert sizes.size_bytes == round((2216.53 + 2187.00 + 0.49 + 512 + 560 + 16.01) * MiB)


def test_parse_log_keeps_only_the_last_load_and_counts_cpu_builds_as_zero_layers() -> None:
    cpu_log = (
        PARTIAL_OFFLOAD_LOG
        + "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)\n"
        + "load_tensors:   CPU_Mapped model buffer size =    13.50 MiB\n"
        + "llama_kv_cache:        CPU KV buffer size =     8.00 MiB\n"
    )
    sizes = parse_log(cpu_log)
    assert sizes.size_vram_bytes == 0
    assert sizes.size_bytes == round(21.5 * MiB)
    assert sizes.layers_offloaded in (0, 16)  # the offload line of the earlier load is not a buffer
    assert parse_log("").size_bytes == 0 and parse_log("").layers_offloaded is None


def test_quantization_names() -> None:
    assert quantization_name(1) == "F16"
    assert quantization_name(7) == "Q8_0"
    assert quantization_name(15) == "Q4_K_M"
    assert quantization_name(0) == "F32"
    assert quantization_name(None) == "unknown"


def test_model_info_from_generated_gguf(tmp_path: Path) -> None:
    path = ensure_model(tmp_path, "tiny", "Q8_0")
    info = read_model_info(str(path))
    shape = SHAPES["tiny"]
    assert info.architecture == "llama" and info.family == "llama"
    assert info.block_count == shape.n_layer and info.max_layers == shape.n_layer + 1
    assert info.context_length == shape.n_ctx_train
    assert info.quantization == "Q8_0"
    assert info.size_bytes == path.stat().st_size
    assert info.parameter_size.endswith("M")
    assert info.model_info["llama.attention.head_count_kv"] == shape.n_head_kv
    assert "tokenizer.ggml.tokens" not in info.model_info  # the vocabulary is left out


def test_model_info_of_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        read_model_info(str(tmp_path / "nope.gguf"))


def test_ensure_model_reuses_the_cached_file(tmp_path: Path) -> None:
    first = ensure_model(tmp_path, "tiny", "F16")
    stamp = first.stat().st_mtime_ns
    assert ensure_model(tmp_path, "tiny", "F16").stat().st_mtime_ns == stamp
    assert first.name == model_filename("tiny", "F16")
    assert list(tmp_path.glob("*.tmp-*")) == []


def test_llama3_8b_shapes_match_the_real_model() -> None:
    spec = SHAPES["llama3-8b"]
    n_params = sum(int(__import__("math").prod(shp)) for _, shp, _ in tensor_shapes(spec))
    assert 8.0e9 < n_params < 8.1e9  # Llama-3-8B has 8.03 B parameters
    tokens, scores, types = vocabulary(spec.n_vocab)
    assert len(tokens) == len(scores) == len(types) == 128256 and len(set(tokens)) == 128256


def test_missing_binary_is_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not an executable"):
        LlamaServerBackend(tmp_path / "llama-server")
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="python -m tuner.engines build llama-server"):
        find_binary()


def test_binary_from_env_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "llama-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'version: 0.5.0-dev (build 0, commit 0c1e570)'; echo 'built with cc'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("LLAMA_SERVER", str(fake))
    assert find_binary() == fake
    backend = LlamaServerBackend(log_dir=tmp_path / "logs")
    assert backend.server_info().version == "0.5.0-dev (build 0, commit 0c1e570)"
    backend.close()

    monkeypatch.delenv("LLAMA_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "cache"))
    root = installs.install_dir("llama.cpp", installs.llama_cpp_version(), "cpu")
    (root / "bin").mkdir(parents=True)
    cached = root / "bin" / "llama-server"
    cached.write_bytes(fake.read_bytes())
    cached.chmod(0o755)
    assert installs.find_llama_cpp() is None  # no marker yet: an unfinished install does not count
    (root / installs.MARKER).write_text(
        json.dumps({"product": "llama.cpp", "variant": "cpu", "tools": ["llama-server"]})
    )
    assert find_binary() == cached


def test_server_argv_maps_engine_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho '-fit, --fit [on|off]'; echo '--ui, --webui, --no-ui, --no-webui'\n")
    fake.chmod(0o755)
    backend = LlamaServerBackend(fake, log_dir=tmp_path / "logs", extra_args=("--threads", "2"))
    argv = backend.server_argv(
        "m.gguf", EngineOptions(num_gpu=12, num_ctx=8192, flash_attn="on", kv_cache_type="q8_0"), 5
    )
    joined = " ".join(argv)
    assert "-m m.gguf" in joined and "--port 5" in joined and "-c 8192" in joined and "-np 1" in joined
    assert "-ngl 12 --fit off" in joined
    assert "--flash-attn on" in joined and "--cache-type-k q8_0 --cache-type-v q8_0" in joined
    assert "--no-webui" in joined and "--cache-ram" not in joined  # only flags this build lists
    assert argv[-2:] == ["--threads", "2"]
    auto = backend.server_argv("m.gguf", EngineOptions(num_gpu=-1, num_ctx=2048), 5)
    assert "-ngl" not in auto and "--fit" not in auto  # AUTO leaves placement to llama.cpp
    backend.close()


def _fake_server(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "llama-server"
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = "--help" ]; then echo "-fit, --fit [on|off]"; exit 0; fi\n{body}\n'
    )
    fake.chmod(0o755)
    return fake


def test_server_killed_by_sigkill_is_out_of_memory(tmp_path: Path) -> None:
    model = ensure_model(tmp_path, "tiny", "Q8_0")
    backend = LlamaServerBackend(
        _fake_server(tmp_path, "echo loading; kill -9 $$"), log_dir=tmp_path / "logs"
    )
    with pytest.raises(OutOfMemory, match="SIGKILL") as err:
        backend.load(str(model), EngineOptions(num_gpu=0, num_ctx=512))
    assert "loading" in err.value.log_tail and backend.pid is None
    backend.close()


def test_server_that_exits_is_backend_error_with_its_last_error_line(tmp_path: Path) -> None:
    model = ensure_model(tmp_path, "tiny", "Q8_0")
    body = (
        "echo '0.00.001.000 I srv  hello'; echo '0.00.002.000 E srv  load_model: unknown cache type'; exit 1"
    )
    backend = LlamaServerBackend(_fake_server(tmp_path, body), log_dir=tmp_path / "logs")
    with pytest.raises(BackendError) as err:
        backend.load(str(model), EngineOptions(num_gpu=0, num_ctx=512))
    assert not isinstance(err.value, OutOfMemory)
    assert (
        "exited (code 1)" in str(err.value)
        and "load_model: unknown cache type" in str(err.value).splitlines()[0]
    )
    backend.close()


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    model = ensure_model(tmp_path, "tiny", "Q8_0")
    backend = LlamaServerBackend(
        _fake_server(tmp_path, "exec sleep 30"), log_dir=tmp_path / "logs", startup_timeout_s=0.5
    )
    with pytest.raises(BackendTimeout, match="did not load"):
        backend.load(str(model), EngineOptions(num_gpu=0, num_ctx=512))
    assert backend.pid is None
    backend.close()
