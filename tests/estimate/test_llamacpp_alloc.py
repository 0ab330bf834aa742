"""What the runner really allocates (llama.cpp's rules)."""

from __future__ import annotations

from tests.estimate.specs import spec
from tuner.estimate.llamacpp import CPU, allocate, kv_cells, kv_layer_bytes, layer_devices
from tuner.units import MiB


def test_last_n_layers_contiguous_in_proportion_to_the_split() -> None:
    devices = layer_devices(61, 51, [7, 7, 7, 6, 6, 6, 6, 6])
    assert devices[:10] == [CPU] * 10 and devices[61] == CPU  # output stays on the CPU (51 < 62)
    assert devices[10:17] == [0] * 7 and devices[17:24] == [1] * 7 and devices[55:61] == [7] * 6
    full = layer_devices(32, 33, [1.0])
    assert full == [0] * 33
    assert layer_devices(32, 999, [1, 1])[32] == 1  # not clamped; output on the last device
    assert layer_devices(32, 0, [1.0]) == [CPU] * 33


def test_kv_cache_per_layer() -> None:
    gemma = spec("gemma3:12b")
    assert kv_cells(gemma, 0, 131072, 512, 1, False) == 1536  # sliding: window + ubatch
    assert kv_cells(gemma, 5, 131072, 512, 1, False) == 131072  # every sixth layer is global
    assert kv_layer_bytes(gemma, 5, 131072) == 1 << 30
    r1 = spec("deepseek-r1:671b-q8_0")
    assert kv_layer_bytes(r1, 10, 2048) == 160 * MiB  # 61 layers -> 9760 MiB, as llama.cpp printed
    llama = spec("llama3.1:8b")
    assert kv_layer_bytes(llama, 0, 4096) == 16 * MiB


def test_compute_buffer_grows_with_context_and_op_offload_lands_on_cuda0() -> None:
    mf = spec("deepseek-r1:32b")
    small = allocate(
        mf, n_devices=1, num_gpu=65, split=[1.0], ctx_total=4096, ubatch=512, parallel=1, flash_attn=False
    )
    big = allocate(
        mf, n_devices=1, num_gpu=65, split=[1.0], ctx_total=32768, ubatch=512, parallel=1, flash_attn=False
    )
    assert big.gpu[0].compute > 4 * small.gpu[0].compute
    assert small.cpu.weights == mf.token_embd_bytes  # the input embedding stays on the CPU
    partial = allocate(
        mf, n_devices=2, num_gpu=40, split=[1, 1], ctx_total=4096, ubatch=512, parallel=1, flash_attn=False
    )
    staging = max(mf.layer_max_matrix_bytes)
    assert partial.gpu[0].compute - partial.gpu[1].compute >= staging - 64 * MiB
    assert partial.offloaded == 40 and partial.layers_on(0) == 20


def test_flash_attention_shrinks_the_compute_buffer() -> None:
    mf = spec("gemma3:12b")
    kw = dict(n_devices=1, num_gpu=49, split=[1.0], ctx_total=131072, ubatch=512, parallel=1)
    assert (
        allocate(mf, flash_attn=True, **kw).gpu[0].compute
        < allocate(mf, flash_attn=False, **kw).gpu[0].compute / 4
    )
