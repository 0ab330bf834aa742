"""What Ollama *estimates* (Era A, llm/memory.go estimateGPULayers and fs/ggml GraphSize; Era B reuses it).

This is the prediction Ollama plans its automatic placement and its tensor split with; llamacpp.py holds
what the runner really allocates. Both are pure functions of the model, the free memory per GPU and the
options. The numbers reproduce the `msg=offload` log lines of real servers (see reports/memory-validation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.estimate.ggml import OLLAMA_KV_BYTES
from tuner.estimate.spec import ModelSpec

MiB = 1 << 20

MINIMUM_MEMORY = 457 * MiB  # ml/device.go MinimumMemory() for CUDA and ROCm


@dataclass(frozen=True)
class GraphSize:
    kv: tuple[int, ...]  # per layer, bytes
    partial: int
    full: int

    @property
    def kv_total(self) -> int:
        return sum(self.kv)


def graph_size(
    s: ModelSpec, num_ctx: int, num_batch: int, num_parallel: int, kv_type: str = "f16"
) -> GraphSize:
    """fs/ggml GraphSize: KV per layer and the compute-graph estimates for full and partial offload.

    `kv_type` only counts with flash attention on (Ollama falls back to f16 otherwise): pass "f16" then.
    """
    batch = min(num_ctx, num_batch)
    context = num_ctx * num_parallel
    emb, heads, heads_kv, vocab = s.embedding_length, s.head_count, s.head_count_kv_min, s.vocab_size
    hk, hv = s.key_length, s.value_length
    per = OLLAMA_KV_BYTES[kv_type]
    kv = []
    for i, h in enumerate(s.head_count_kv):
        if h == 0:  # recurrent layer: a fixed state per sequence
            kv.append(s.ssm_state_bytes * num_parallel)
            continue
        cells = context
        if s.is_sliding(i) and s.arch == "gemma3":
            cells = num_parallel * s.sliding_window + batch
        elif s.is_sliding(i) and s.arch == "gptoss":
            cells = num_parallel * 4096 + batch
        kv.append(int(cells * (hk + hv) * h * per))
    arch = "llama" if s.arch in ("llama", "llama4", "mistral3") else "gemma3" if s.arch.startswith("gemma") else s.arch
    if arch == "llama":
        full = max(4 * batch * (1 + 4 * emb + context * (1 + heads)), 4 * batch * (emb + vocab))
        partial = 4 * batch * emb + max(
            4 * batch * (1 + emb + max(context, emb))
            + emb * emb * 9 // 16
            + 4 * context * (batch * heads + hk * heads_kv),
            4 * batch * (emb + vocab) + emb * vocab * 105 // 128,
        )
    elif arch == "gemma3":
        full = max(
            4 * batch * (emb + vocab), 4 * batch * (2 + context + context * heads + 2 * emb + 2 * hk * heads)
        )
        partial = max(
            4 * emb * batch + emb * vocab * 105 // 128 + 4 * vocab * batch,
            4 * batch * (2 * emb + 1 + 2 * hk * heads + context + context * heads)
            + 4 * hk * context * 8
            + emb * hk * heads * 9 // 16,
        )
    elif arch == "qwen2":
        full = max(4 * batch * (emb + vocab), 4 * batch * (1 + 2 * emb + context + context * heads))
        partial = max(
            4 * batch * (emb + vocab) + emb * vocab * 105 // 128,
            4 * (batch * (1 + 2 * emb + context * (1 + heads)) + emb * (1 + context)),
        )
    elif arch == "deepseek2":
        full = max(
            4 * batch * (3 * emb + vocab),
            4 * batch * (3 * emb + 2 + context * (1 + heads_kv) + 2 * hk * heads_kv),
        )
        partial = max(
            4 * batch * (3 * emb + vocab) + emb * vocab * 105 // 128,
            4 * batch * (2 * emb + 1 + 2 * hk * heads_kv + context + context * heads_kv)
            + 4 * hk * context * heads_kv
            + emb * hk * heads_kv * 9 // 16,
        )
    else:  # no formula: (heads / headsKV) * kv / 6
        partial = full = heads // max(heads_kv, 1) * sum(kv) // 6
    return GraphSize(tuple(kv), partial, full)


def vision_graph(s: ModelSpec) -> tuple[int, int]:
    """fs/ggml VisionGraphSize for a projector in the same file: (projector weights, projector graph)."""
    if not s.projector_bytes or not s.vision_patch:
        return s.projector_bytes, 0
    patches = (s.vision_image // s.vision_patch) ** 2
    graph = 4 * (s.vision_image * s.vision_image * 3 + s.vision_embedding * s.vision_patch + patches * patches * 16)
    return s.projector_bytes, graph


@dataclass(frozen=True)
class Estimate:
    """The memory.required.* numbers and the per-GPU layer counts (the tensor split)."""

    layers: int  # layers.offload (output layer included)
    tensor_split: tuple[int, ...]  # layers per GPU, in the order of `gpus`
    allocations: tuple[int, ...]  # memory.required.allocations, per GPU
    vram_bytes: int  # memory.required.partial (VRAMSize)
    total_bytes: int  # memory.required.full (TotalSize)
    kv_bytes: int
    graph_full: int
    graph_partial: int
    weights_bytes: int  # memory.weights.total
    fully_loaded: bool


def estimate_gpu_layers(
    s: ModelSpec,
    free: list[int],
    *,
    num_ctx: int,
    num_batch: int,
    num_gpu: int,
    num_parallel: int,
    ascending: bool = False,
    overhead: int = 0,
    kv_type: str = "f16",
    minimum: int = MINIMUM_MEMORY,
) -> Estimate:
    """estimateGPULayers over GPUs with `free` bytes each (one library). num_gpu < 0 means automatic."""
    blocks = s.block_count
    gs = graph_size(s, num_ctx, num_batch, num_parallel, kv_type)
    graph_partial, graph_full = gs.partial, gs.full
    if len(free) > 1:
        graph_full = graph_partial  # multi-GPU always uses the partial graph size
    graph = max(graph_partial, graph_full)
    proj_weights, proj_graph = vision_graph(s)
    layer_size0 = s.layer_bytes[0] + gs.kv[0]
    output = s.output_bytes

    gpus_with_space: list[int] = []
    alloc = [0] * len(free)
    split = [0] * len(free)
    for i, f in enumerate(free):
        if f < overhead + graph + minimum + 2 * layer_size0:
            continue
        gpus_with_space.append(i)
        alloc[i] += minimum + layer_size0

    overflow = 0
    layer_count = 0
    weights = 0
    order = range(blocks) if ascending else range(blocks - 1, -1, -1)
    layer_size = layer_size0
    for i in order:
        layer_size = s.layer_bytes[i] + gs.kv[i]
        weights += s.layer_bytes[i]
        if 0 <= num_gpu <= layer_count:
            if not ascending:
                overflow += layer_size
            continue
        j = len(gpus_with_space)
        while j > 0:
            g = gpus_with_space[i % j]
            if free[g] > overhead + alloc[g] + graph + layer_size:
                alloc[g] += layer_size
                split[g] += 1
                layer_count += 1
                break
            gpus_with_space.pop(i % j)
            j -= 1
        if not gpus_with_space and not ascending:
            overflow += layer_size
    if ascending and layer_count < blocks:
        overflow += (blocks - layer_count) * layer_size  # the old code charged the last layer's size
    fully = layer_count >= blocks

    last_layer = output + proj_weights + proj_graph
    if last_layer > 0:
        if num_gpu < 0 or layer_count < num_gpu:
            j = len(gpus_with_space)
            while j > 0:
                g = gpus_with_space[layer_count % j]
                if free[g] > overhead + alloc[g] + graph + last_layer:
                    alloc[g] += last_layer
                    split[g] += 1
                    layer_count += 1
                    break
                j -= 1
        if layer_count < blocks + 1:
            fully = False
            overflow += last_layer

    for g in range(len(free)):
        if split[g] > 0:
            alloc[g] += graph_full if fully else graph_partial
    vram = sum(alloc)
    if layer_count == 0:
        # no layer fits: Ollama reports no VRAM (the whole model counts as CPU)
        return Estimate(
            0,
            tuple([0] * len(free)),
            tuple([0] * len(free)),
            0,
            vram + overflow,
            gs.kv_total,
            graph_full,
            graph_partial,
            weights + output,
            False,
        )
    return Estimate(
        layer_count,
        tuple(split),
        tuple(alloc),
        vram,
        vram + overflow,
        gs.kv_total,
        graph_full,
        graph_partial,
        weights + output,
        fully,
    )


def fits(est: Estimate, s: ModelSpec, num_gpu: int) -> bool:
    """predictServerFit: everything on GPU (automatic) or at least num_gpu layers (explicit)."""
    if num_gpu < 0:
        return est.layers > 0 and est.layers >= s.block_count + 1
    return est.layers > 0 and est.layers >= num_gpu


def pick_gpus(
    s: ModelSpec,
    free: list[int],
    *,
    num_ctx: int,
    num_batch: int,
    num_gpu: int,
    num_parallel: int,
    ascending: bool = False,
    single_then_all: bool = False,
    kv_type: str = "f16",
) -> tuple[list[int], Estimate, bool]:
    """pickBestFullFitByLibrary: the fewest GPUs (most free first) that hold the model fully, else all of them.

    Returns (GPU indices into `free`, the estimate on them, whether it was a full fit).
    """
    order = sorted(range(len(free)), key=lambda i: (-free[i], i))
    kw = dict(
        num_ctx=num_ctx,
        num_batch=num_batch,
        num_gpu=num_gpu,
        num_parallel=num_parallel,
        ascending=ascending,
        kv_type=kv_type,
    )
    sizes = [1, len(order)] if single_then_all else list(range(1, len(order) + 1))
    tried: set[tuple[int, ...]] = set()
    for k in sizes:
        if single_then_all and k == 1:
            subsets = [[g] for g in order]
        else:
            subsets = [order[:k]]
        for subset in subsets:
            if tuple(subset) in tried:
                continue
            tried.add(tuple(subset))
            est = estimate_gpu_layers(s, [free[i] for i in subset], **kw)  # type: ignore[arg-type]
            if fits(est, s, num_gpu):
                return subset, est, True
    est = estimate_gpu_layers(s, [free[i] for i in order], **kw)  # type: ignore[arg-type]
    return order, est, False
