"""The speed model: decode is memory-bound, prompt processing compute-bound. Pure functions of a placement.

Decode, per token: for every device, the bytes it must read (the weights of its layers that a token touches,
MoE: dense parts plus expert_used/expert_count of the experts, plus the KV cache filled so far) over its
bandwidth times an efficiency, summed over devices (layer split = one device after another), plus a fixed
per-token cost and a small cost per device hop. An MoE layer also pays its routing (the router matmul, top-k,
gathering the chosen experts' rows: a handful of small kernels), a fixed MOE_LAYER_S per layer, so an MoE's
decode is bound by the bytes of its active experts plus a per-layer floor. A CPU-resident layer reads at host-memory speed, which is why
spilling to the CPU is 5-10x slower.

CPU threads (num_thread; 0 = Ollama's default, the host's physical cores) drive the CPU-resident layers only:
the CPU's read rate is the least of the host's bandwidth and CPU_CORE_BW_GBPS per thread, its compute the
host's FLOPS times threads / physical cores, and a token takes the longer of the two. Threads beyond the
physical cores add nothing and cost OVERSUBSCRIBE_COST each (SMT siblings and time slicing share a core's
caches). Layers on the GPU do not depend on it.

Prompt processing, per micro-batch: 2 x active parameters x tokens of matrix work at the device's TFLOPS
times an efficiency, plus the attention term that grows with the depth already in the cache. Layers left on
the CPU are computed on the first GPU with their weights copied over PCIe (llama.cpp's op offload) when the
batch is at least 32 tokens; without a GPU they run at the CPU's FLOPS.

The efficiencies are calibrated against ../shared/data/throughput-public.csv (python -m tuner.sim.calibrate,
reports/sim-calibration.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.hardware import GpuSpec
from tuner.sim.catalog import ModelFile
from tuner.sim.hardware import HostSpec

GPU_BW_EFFICIENCY = 0.82  # fraction of peak memory bandwidth a decode kernel sustains
# Datacenter HBM parts and older generations sustain less of their peak in llama.cpp's decode kernels
# (fitted on the A100/A30, V100 and M40 rows of the throughput table; Hopper assumed like GA100).
BW_EFFICIENCY_BY_CC = {(8, 0): 0.56, (9, 0): 0.56, (7, 0): 0.62, (5, 2): 0.52}
GPU_FLOPS_EFFICIENCY = 0.46  # fraction of dense FP16 tensor peak in prompt processing
CPU_BW_EFFICIENCY = 0.65
CPU_FLOPS_EFFICIENCY = 0.55
TOKEN_OVERHEAD_S = 0.0007  # fixed cost per generated token (sampling, launch latency)
HOP_OVERHEAD_S = 0.00012  # per device boundary per token (copy of the hidden state)
UBATCH_OVERHEAD_S = 0.002  # fixed cost per prompt micro-batch
# Routing cost per MoE layer per token, fitted on the one MoE row of the throughput table that the simulator
# maps (row 35: gpt-oss 120B on an RTX PRO 6000, 193 tok/s where its active bytes alone would allow 378).
MOE_LAYER_S = 70e-6
# Simulator assumptions (not measurements): one thread of a quantized mat-vec streams about this much host
# memory, so half a desktop's cores do not saturate dual-channel DDR5; each thread over the physical cores
# costs this share of the CPU's throughput (at most OVERSUBSCRIBE_FLOOR of it is lost).
CPU_CORE_BW_GBPS = 5.0
OVERSUBSCRIBE_COST = 0.02
OVERSUBSCRIBE_FLOOR = 0.7


@dataclass(frozen=True)
class Speed:
    decode_tok_s: float
    prefill_tok_s: float


@dataclass(frozen=True)
class Layout:
    """Where each offloadable layer lives: a simulator GPU index, or -1 for the CPU."""

    layer_gpu: tuple[int, ...]  # block_count + 1 entries, the last is the output layer
    flash_attn: bool
    runner_gpus: tuple[
        int, ...
    ] = ()  # GPUs the runner opened, CUDA0 first (prompt batches of CPU layers go there)
    kv_type: str = "f16"  # the cache's element type: q8_0 / q4_0 read fewer bytes per cached token
    threads: int = 0  # num_thread for the CPU-resident layers; 0 = the host's physical cores


def effective_cores(threads: int, physical_cores: int) -> float:
    """Cores' worth of CPU work `threads` threads get: up to the physical cores, then a little less."""
    t = physical_cores if threads <= 0 else threads
    if t <= physical_cores:
        return float(t)
    over = 1.0 - OVERSUBSCRIBE_COST * (t - physical_cores)
    return physical_cores * max(OVERSUBSCRIBE_FLOOR, over)


def cpu_read_gbps(host: HostSpec, threads: int) -> float:
    """The host memory bandwidth the CPU's layers are read at with `threads` threads."""
    cores = effective_cores(threads, host.physical_cores)
    return min(host.bandwidth_gbps * CPU_BW_EFFICIENCY, cores * CPU_CORE_BW_GBPS)


def cpu_flops(host: HostSpec, threads: int) -> float:
    """FLOP/s the CPU sustains with `threads` threads (cpu_tflops is over every physical core)."""
    share = effective_cores(threads, host.physical_cores) / host.physical_cores
    return host.cpu_tflops * 1e12 * CPU_FLOPS_EFFICIENCY * share


# bytes per cached element: ggml's block sizes (q8_0: 34 bytes per 32, q4_0: 18 per 32)
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


# Simulator assumptions (not measurements): without flash attention the attention of a prompt batch
# materialises the KQ matrix, costing NO_FA_PREFILL_ATTENTION x the attention work, and each decoded token
# reads its cache NO_FA_DECODE_KV times over (the KQ scratch round trip).
NO_FA_PREFILL_ATTENTION = 1.6
NO_FA_DECODE_KV = 1.15


def _kv_bytes_per_token(mf: ModelFile, layer: int, kv_type: str = "f16") -> float:
    a = mf.arch
    return (a.head_dim_k + a.head_dim_v) * a.head_count_kv * KV_ELEMENT_BYTES.get(kv_type, 2.0)


def bw_efficiency(gpu: GpuSpec) -> float:
    return BW_EFFICIENCY_BY_CC.get(gpu.compute_capability, GPU_BW_EFFICIENCY)


def decode_seconds_per_token(
    mf: ModelFile, layout: Layout, gpus: list[GpuSpec], host: HostSpec, depth: int
) -> float:
    a = mf.arch
    blocks = a.block_count
    per_device: dict[int, float] = {}
    cpu_work = 0.0  # FLOPs of the CPU-resident layers per token
    for il in range(blocks):
        dev = layout.layer_gpu[il]
        kv_tokens = min(depth, a.sliding_window) if a.is_sliding(il) else depth
        kv_read = _kv_bytes_per_token(mf, il, layout.kv_type) * kv_tokens
        read = mf.layer_active_bytes[il] + kv_read * (1.0 if layout.flash_attn else NO_FA_DECODE_KV)
        per_device[dev] = per_device.get(dev, 0.0) + read
        if dev < 0:
            cpu_work += 2.0 * mf.layer_active_params[il]
    out_dev = layout.layer_gpu[blocks]
    per_device[out_dev] = per_device.get(out_dev, 0.0) + mf.output_bytes
    if out_dev < 0:
        cpu_work += 2.0 * a.embedding_length * a.vocab_size
    seconds = TOKEN_OVERHEAD_S
    for dev, nbytes in per_device.items():
        if dev < 0:
            read_s = nbytes / (cpu_read_gbps(host, layout.threads) * 1e9)
            seconds += max(read_s, cpu_work / cpu_flops(host, layout.threads))
        else:
            seconds += nbytes / (gpus[dev].bandwidth_gbps * 1e9 * bw_efficiency(gpus[dev]))
    hops = sum(1 for i in range(1, blocks + 1) if layout.layer_gpu[i] != layout.layer_gpu[i - 1])
    moe_layers = sum(1 for il in range(blocks) if a.is_moe_layer(il))
    return seconds + hops * HOP_OVERHEAD_S + moe_layers * MOE_LAYER_S


def prefill_seconds(
    mf: ModelFile,
    layout: Layout,
    gpus: list[GpuSpec],
    host: HostSpec,
    tokens: int,
    depth: int,
    ubatch: int = 512,
) -> float:
    """Seconds to process `tokens` new prompt tokens on top of `depth` tokens already in the cache."""
    if tokens <= 0:
        return 0.0
    a = mf.arch
    blocks = a.block_count
    first_gpu = layout.runner_gpus[0] if layout.runner_gpus else -1
    attn_dim = a.head_count * (a.head_dim_k + a.head_dim_v)
    seconds = 0.0
    done = 0
    while done < tokens:
        u = min(ubatch, tokens - done)
        ctx_mid = depth + done + u / 2
        seconds += UBATCH_OVERHEAD_S
        gpu_flops: dict[int, float] = {}
        cpu_work = 0.0
        copy_bytes = 0
        for il in range(blocks):
            dev = layout.layer_gpu[il]
            span = min(ctx_mid, a.sliding_window) if a.is_sliding(il) else ctx_mid
            attn = 2 * u * span * attn_dim * (1.0 if layout.flash_attn else NO_FA_PREFILL_ATTENTION)
            flops = 2 * mf.layer_active_params[il] * u + attn
            nbytes = mf.layer_bytes[il]
            if dev >= 0:
                gpu_flops[dev] = gpu_flops.get(dev, 0.0) + flops
            elif first_gpu >= 0 and u >= 32:
                gpu_flops[first_gpu] = gpu_flops.get(first_gpu, 0.0) + flops
                copy_bytes += nbytes
            else:
                cpu_work += flops
        if done + u >= tokens:  # logits only for the last token of the prompt
            out_dev = layout.layer_gpu[blocks]
            logits = 2.0 * a.embedding_length * a.vocab_size
            if out_dev >= 0:
                gpu_flops[out_dev] = gpu_flops.get(out_dev, 0.0) + logits
            else:
                cpu_work += logits
        for dev, flops in gpu_flops.items():
            seconds += flops / (gpus[dev].tflops * 1e12 * GPU_FLOPS_EFFICIENCY)
        seconds += copy_bytes / (host.pcie_gbps * 1e9)
        seconds += cpu_work / cpu_flops(host, layout.threads)
        done += u
    return seconds


def speed(
    mf: ModelFile,
    layout: Layout,
    gpus: list[GpuSpec],
    host: HostSpec,
    prompt_tokens: int = 512,
    depth_tokens: int = 0,
    ubatch: int = 512,
) -> Speed:
    """Noise-free decode tok/s at `depth_tokens` of context, and prefill tok/s for a prompt of that size."""
    decode = 1.0 / decode_seconds_per_token(mf, layout, gpus, host, depth_tokens)
    prompt = max(1, prompt_tokens)
    prefill = prompt / prefill_seconds(mf, layout, gpus, host, prompt, depth_tokens, ubatch)
    return Speed(decode, prefill)


def load_seconds(mf: ModelFile, gpu_bytes: list[int], gpus_used: int, host: HostSpec, cached: bool) -> float:
    """Reading the file (disk or page cache), copying weights to the GPUs, and opening each GPU."""
    read = mf.file_bytes / ((host.page_cache_gbps if cached else host.disk_gbps) * 1e9)
    copy = sum(gpu_bytes) / (host.pcie_gbps * 1e9)
    return 0.35 + read + copy + 0.25 * gpus_used
