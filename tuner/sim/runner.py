"""What the runner (llama.cpp) *really* allocates on each device for a given layer count and split.

* Layers: llama.cpp offloads the LAST `num_gpu` offloadable layers (the output layer counts as the last one)
  and cuts them into contiguous runs in proportion to the tensor split (llama-model.cpp load_tensors).
  token_embd stays on the CPU (input); a tied output layer is duplicated onto its device.
* KV: per layer on that layer's device, f16, cells = num_ctx * parallel padded to 256 (flash attention) or 32;
  gemma3 sliding layers hold only window * parallel + ubatch cells; deepseek2 (Ollama's pre-MLA GGUF) holds
  the full 128 heads x (192 + 128).
* Compute buffer per device that holds layers: without flash attention the KQ matrix
  (4 B x cells x ubatch x heads) dominates; with it, a small working set; the logits (4 B x ubatch x vocab)
  where the output layer is. With layers left on the CPU, prompt batches are run on the first GPU and the
  weights are copied there (op offload), so CUDA0 also reserves room for the largest CPU-resident matrix
  (for deepseek2 that is a whole expert tensor, which Ollama's estimate does not count).
* Each GPU the runner opens also pays a CUDA context (~320 MiB).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tuner.sim.catalog import ModelFile
from tuner.sim.hardware import MiB

CUDA_CONTEXT_BYTES = 320 * MiB
CPU = -1


@dataclass(frozen=True)
class DeviceUse:
    weights: int = 0
    kv: int = 0
    compute: int = 0
    context: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.context


def layer_devices(block_count: int, num_gpu: int, split: list[float]) -> list[int]:
    """Device (index into `split`, or CPU) of each of the block_count + 1 offloadable layers."""
    n_dev = len(split)
    out = [CPU] * (block_count + 1)
    if n_dev == 0 or num_gpu <= 0 or sum(split) <= 0:
        return out
    total = float(sum(split))
    cum: list[float] = []
    acc = 0.0
    for s in split:
        acc += s
        cum.append(acc / total)
    start = max(block_count - num_gpu, 0)
    act = min(num_gpu, block_count + 1)
    for il in range(block_count + 1):
        if il < start or il - start >= act:
            continue
        dev = bisect.bisect_right(cum, (il - start) / act)
        out[il] = min(dev, n_dev - 1)
    return out


def kv_cells(mf: ModelFile, layer: int, ctx_total: int, ubatch: int, parallel: int, flash_attn: bool) -> int:
    pad = 256 if flash_attn else 32
    cells = -(-ctx_total // pad) * pad
    a = mf.arch
    if a.is_sliding(layer):
        cells = min(cells, -(-(a.sliding_window * parallel + ubatch) // pad) * pad)
    return cells


def kv_layer_bytes(mf: ModelFile, layer: int, cells: int) -> int:
    a = mf.arch
    return cells * (a.head_dim_k + a.head_dim_v) * a.head_count_kv * 2


def _attention_bytes(mf: ModelFile, cells: int, ubatch: int, flash_attn: bool) -> int:
    a = mf.arch
    if flash_attn:
        return 2 * cells * ubatch + 4 * ubatch * a.head_count * (a.head_dim_k + 2 * a.head_dim_v)
    return 4 * cells * ubatch * a.head_count


def _ffn_bytes(mf: ModelFile, ubatch: int) -> int:
    a = mf.arch
    ff = a.feed_forward_length
    if a.is_moe:
        ff = max(ff, a.expert_ff_length * (a.expert_used_count + a.expert_shared_count))
    return 4 * ubatch * (ff + a.embedding_length)


@dataclass(frozen=True)
class Allocation:
    devices: tuple[int, ...]  # per offloadable layer: runner device index or CPU
    gpu: tuple[DeviceUse, ...]  # per runner device
    cpu: DeviceUse

    @property
    def offloaded(self) -> int:
        return sum(1 for d in self.devices if d != CPU)

    def layers_on(self, device: int) -> int:
        return sum(1 for d in self.devices if d == device)


def allocate(
    mf: ModelFile,
    *,
    n_devices: int,
    num_gpu: int,
    split: list[float],
    ctx_total: int,
    ubatch: int,
    parallel: int,
    flash_attn: bool,
) -> Allocation:
    """True per-device bytes when the runner opens `n_devices` GPUs and offloads `num_gpu` layers."""
    a = mf.arch
    blocks = a.block_count
    devices = layer_devices(blocks, num_gpu if n_devices else 0, split if n_devices else [])
    n = n_devices
    weights = [0] * n
    kv = [0] * n
    cells_max = [0] * n
    cpu_w = mf.token_embd_bytes + mf.other_bytes
    cpu_kv = 0
    cpu_cells = 0
    cpu_matrix = 0
    for il in range(blocks):
        cells = kv_cells(mf, il, ctx_total, ubatch, parallel, flash_attn)
        size = kv_layer_bytes(mf, il, cells)
        d = devices[il]
        if d == CPU:
            cpu_w += mf.layer_bytes[il]
            cpu_kv += size
            cpu_cells = max(cpu_cells, cells)
            cpu_matrix = max(cpu_matrix, mf.layer_max_matrix_bytes[il])
        else:
            weights[d] += mf.layer_bytes[il]
            kv[d] += size
            cells_max[d] = max(cells_max[d], cells)
    out_dev = devices[blocks]
    out_extra = mf.output_bytes - (mf.token_embd_bytes if a.tied_output else 0)  # what CPU adds for output
    if out_dev == CPU:
        cpu_w += out_extra + mf.vision_bytes
        cpu_matrix = max(cpu_matrix, mf.output_bytes - 4 * a.embedding_length)
    else:
        weights[out_dev] += mf.output_bytes + mf.vision_bytes
    ffn = _ffn_bytes(mf, ubatch)
    logits = 4 * ubatch * a.vocab_size
    gpu = []
    for d in range(n):
        compute = 0
        if cells_max[d] or d == out_dev:
            attn = _attention_bytes(mf, cells_max[d], ubatch, flash_attn) if cells_max[d] else 0
            compute = max(attn + ffn, logits if d == out_dev else 0) + 32 * MiB
            if d == 0 and cpu_matrix and ubatch >= 32:
                compute += (
                    cpu_matrix  # op offload: CPU weights are copied to the first GPU for prompt batches
                )
        gpu.append(DeviceUse(weights[d], kv[d], compute, CUDA_CONTEXT_BYTES))
    cpu_compute = 0
    if cpu_cells or out_dev == CPU:
        attn = _attention_bytes(mf, cpu_cells, ubatch, flash_attn) if cpu_cells else 0
        cpu_compute = max(attn + ffn, logits if out_dev == CPU else 0) + 16 * MiB
    return Allocation(tuple(devices), tuple(gpu), DeviceUse(cpu_w, cpu_kv, cpu_compute, 0))
