"""What llama.cpp (Ollama's runner, or llama-server) allocates on each device for a layer count and split.

* Layers: llama.cpp offloads the LAST `num_gpu` offloadable layers (the output layer counts as the last one)
  and cuts them into contiguous runs in proportion to the tensor split (llama-model.cpp load_tensors).
  token_embd stays on the CPU (input); a tied output layer is duplicated onto its device.
* KV: per layer on that layer's device, cells = num_ctx * parallel padded to 256 (flash attention) or 32,
  times (key_length + value_length) x head_count_kv elements of the cache type (f16 2 B; q8_0 34 B and q4_0
  18 B per 32). Sliding-window layers hold only window * parallel + ubatch cells; MLA files hold the
  compressed latent (head_count_kv 1, 576 + 512); Ollama's pre-MLA deepseek2 file the full 128 x (192 + 128).
  Recurrent layers hold a fixed f32 state per sequence.
* Compute buffer per device that holds layers: without flash attention the KQ matrix
  (4 B x cells x ubatch x heads) dominates (with parallel slots and llama.cpp's non-unified cache, the
  default of llama-server and of the llama.cpp Ollama vendors from 0.12, each sequence attends to its own
  stream: cells of ONE slot, so the buffer does not grow with the slots; real 0.32.15, tiny model at
  num_ctx 2048: 8.51 MiB at 1 and 2 slots, 17.02 MiB at 4 and 8, where the automatic batch doubles; real
  0.12.10 without flash attention: 22.51 MiB at 1, 2 and 4 slots); with it, a small working set; the logits (4 B x ubatch x vocab)
  where the output layer is. With layers left on the CPU, prompt batches are run on the first GPU and the
  weights are copied there (op offload), so CUDA0 also reserves room for the largest CPU-resident matrix
  (for deepseek2 that is a whole expert tensor, which Ollama's estimate does not count).
* Each GPU the runner opens also pays a CUDA context (~320 MiB): the "overhead" of the estimate.
* A vision tower in the model file (Ollama engine: gemma3, mistral3) is run by the same scheduler, which
  reserves one graph for the worst of a text batch and an image batch: pass `vision_compute` (the image graph,
  e.g. ollama.vision_graph) and the projector's device reserves the larger of the two (public log, issue row 41:
  gemma3:27b reserved 1.1 GiB where its text graph needs ~0.6 GiB).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tuner.estimate.ggml import kv_bytes
from tuner.estimate.spec import ModelSpec
from tuner.units import MiB

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


def kv_cells(s: ModelSpec, layer: int, ctx_total: int, ubatch: int, parallel: int, flash_attn: bool) -> int:
    pad = 256 if flash_attn else 32
    cells = -(-ctx_total // pad) * pad
    if s.is_sliding(layer):
        cells = min(cells, -(-(s.sliding_window * parallel + ubatch) // pad) * pad)
    return cells


def kv_layer_bytes(s: ModelSpec, layer: int, cells: int, kv_type: str = "f16", parallel: int = 1) -> int:
    heads = s.head_count_kv[layer]
    if heads == 0:
        return s.ssm_state_bytes * parallel
    return kv_bytes(kv_type, cells * s.key_length * heads) + kv_bytes(kv_type, cells * s.value_length * heads)


def _attention_bytes(s: ModelSpec, cells: int, ubatch: int, flash_attn: bool) -> int:
    if flash_attn:
        return 2 * cells * ubatch + 4 * ubatch * s.head_count * (s.key_length + 2 * s.value_length)
    return 4 * cells * ubatch * s.head_count


def _ffn_bytes(s: ModelSpec, ubatch: int) -> int:
    ff = s.feed_forward_length
    if s.is_moe:
        ff = max(ff, s.expert_ff_length * (s.expert_used_count + s.expert_shared_count))
    return 4 * ubatch * (ff + s.embedding_length)


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
    s: ModelSpec,
    *,
    n_devices: int,
    num_gpu: int,
    split: list[float],
    ctx_total: int,
    ubatch: int,
    parallel: int,
    flash_attn: bool,
    kv_type: str = "f16",
    vision_compute: int = 0,
    unified_kv: bool = True,
) -> Allocation:
    """Per-device bytes when the runner opens `n_devices` GPUs and offloads `num_gpu` layers.

    `vision_compute`: the image graph of a vision tower in the same file (0 = text only); the device holding
    the projector reserves max(text graph, image graph).
    `unified_kv` False (llama-server's default, Era C): the attention graph spans one slot's cells.
    """
    blocks = s.block_count
    devices = layer_devices(blocks, num_gpu if n_devices else 0, split if n_devices else [])
    n = n_devices
    weights = [0] * n
    kv = [0] * n
    cells_max = [0] * n
    cpu_w = s.token_embd_bytes + s.other_bytes
    cpu_kv = 0
    cpu_cells = 0
    cpu_matrix = 0
    slot_ctx = ctx_total if unified_kv else -(-ctx_total // max(1, parallel))
    for il in range(blocks):
        cells = kv_cells(s, il, ctx_total, ubatch, parallel, flash_attn)
        size = kv_layer_bytes(s, il, cells, kv_type, parallel)
        seen = cells if unified_kv else kv_cells(s, il, slot_ctx, ubatch, 1, flash_attn)  # attention span
        d = devices[il]
        if d == CPU:
            cpu_w += s.layer_bytes[il]
            cpu_kv += size
            cpu_cells = max(cpu_cells, seen)
            cpu_matrix = max(cpu_matrix, s.layer_max_matrix_bytes[il])
        else:
            weights[d] += s.layer_bytes[il]
            kv[d] += size
            cells_max[d] = max(cells_max[d], seen)
    out_dev = devices[blocks]
    out_extra = s.output_bytes - (s.token_embd_bytes if s.tied_output else 0)  # what CPU adds for output
    if out_dev == CPU:
        cpu_w += out_extra + s.projector_bytes
        cpu_matrix = max(cpu_matrix, s.output_bytes - 4 * s.embedding_length)
    else:
        weights[out_dev] += s.output_bytes + s.projector_bytes
    ffn = _ffn_bytes(s, ubatch)
    logits = 4 * ubatch * s.vocab_size
    gpu = []
    for d in range(n):
        compute = 0
        if cells_max[d] or d == out_dev:
            attn = _attention_bytes(s, cells_max[d], ubatch, flash_attn) if cells_max[d] else 0
            compute = max(attn + ffn, logits if d == out_dev else 0) + 32 * MiB
            if d == 0 and cpu_matrix and ubatch >= 32:
                compute += (
                    cpu_matrix  # op offload: CPU weights are copied to the first GPU for prompt batches
                )
        if d == out_dev and vision_compute and s.projector_bytes:
            compute = max(compute, vision_compute + 32 * MiB)
        gpu.append(DeviceUse(weights[d], kv[d], compute, CUDA_CONTEXT_BYTES))
    cpu_compute = 0
    if cpu_cells or out_dev == CPU:
        # The CPU graph keeps the attention mask (f16 with flash attention, else the f32 KQ matrix), the FFN
        # activations and the logits live together: real Era C CPU buffers of the tiny test model are
        # 8.51 MiB at 2048 tokens (ubatch 512) and 29 MiB at 8192 (ubatch 1024), whatever the quantization.
        attn = (
            (2 * cpu_cells * ubatch if flash_attn else 4 * cpu_cells * ubatch * s.head_count)
            if cpu_cells
            else 0
        )
        cpu_compute = attn + ffn + (logits if out_dev == CPU else 0) + MiB // 2
        if out_dev == CPU and vision_compute and s.projector_bytes:
            cpu_compute = max(cpu_compute, vision_compute + MiB // 2)
    return Allocation(tuple(devices), tuple(gpu), DeviceUse(cpu_w, cpu_kv, cpu_compute, 0))
