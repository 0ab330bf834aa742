"""One check per usable row of ../shared/data/ollama_memory-public.csv, and why the others cannot be used.

Each row function builds the row's inputs (its model from public_models.py or from its own printed figures),
runs the estimator, and returns `Check`s comparing each figure the server printed with the prediction.

Longer than the ~400 lines a module usually gets, on purpose: it is one function per CSV row, each reading
only its own row and saying in its own words what it inferred and why; splitting the rows over files would
separate each check from its neighbours without making any of them simpler.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tuner.estimate.llamacpp import Allocation, allocate, layer_devices
from tuner.estimate.ollama import graph_size, vision_graph
from tuner.estimate.spec import ModelSpec
from tuner.estimate.versions import human_bytes2
from validation import public_models as P
from validation.logdata import (
    Check,
    Figure,
    GiB,
    MiB,
    _alloc,
    _est,
    _estimate_check,
    _gpu_buffers,
    _mib,
    _render,
    _source,
    device_sizes,
    size,
    size_list,
    split_counts,
)

# --- the rows ----------------------------------------------------------------------------------------------
RowFn = Callable[[dict[str, str]], list[Check]]
ROWS: dict[int, RowFn] = {}


def row(row_id: int) -> Callable[[RowFn], RowFn]:
    def register(fn: RowFn) -> RowFn:
        ROWS[row_id] = fn
        return fn

    return register


@row(1)
def _row1(r: dict[str, str]) -> list[Check]:
    spec = P.catalog("llama3.3:70b", "Q8_0")
    e = _est(spec, size_list(r["vram_available"]), ctx=64000, version="0.5.11")
    return [
        _estimate_check(
            r,
            e,
            "llama3.3:70b Q8_0 (inferred: 80 blocks; KV 320 KiB/token = 80 x 8 x (128+128) x 2 B; printed "
            "weights 87.3 GiB = layers 67.7 GiB + KV 19.5 GiB, the pre-0.6.1 logging; output 1.0 GiB = "
            "8192 x 128256 in Q8_0; graph 8.2 GiB = the llama formula with 64 heads, width 8192)",
            "num_ctx 64000, parallel 1, flash attention on, f16 KV; 4 GPUs free as printed; Ollama 0.5.11 "
            "(from the date; every 0.5.x has the same rules: layers first to last)",
        )
    ]


@row(3)
def _row3(r: dict[str, str]) -> list[Check]:
    spec = P.catalog("deepseek-r1:671b")
    overhead = 16032385536  # OLLAMA_GPU_OVERHEAD, bytes (ctx_notes)
    free = int(23.5 * GiB)  # not printed: "the same 24 GB card" as a row not in this file
    e = _est(spec, [free], ctx=2048, version="0.5.7", overhead=overhead)
    a = _alloc(spec, e, ctx=2048, flash_attn=False)
    span = [
        f / 10
        for f in range(100, 500)
        if _est(spec, [int(f / 10 * GiB)], ctx=2048, version="0.5.7", overhead=overhead).layers == e.layers
    ]
    printed = device_sizes(r["actual_model_buffers"])
    offl = split_counts(r["actual_offloaded_layers"])[0]
    figs = [
        Figure("offloaded layers", offl, a.offloaded, "count"),
        Figure("CUDA0 model buffer", printed["CUDA0"], a.gpu[0].weights, "size", "21320.01 MiB"),
        Figure("CPU_Mapped model buffer", printed["CPU_Mapped"], a.cpu.weights, "size", "364369.62 MiB"),
    ]
    # the run before: OLLAMA_GPU_OVERHEAD=8032385536 -> 'allocating 28426.68 MiB on device 0: cudaMalloc failed'
    failed = re.search(r"allocating (\d+\.\d+) MiB", r["outcome_notes"])
    e2 = _est(spec, [free], ctx=2048, version="0.5.7", overhead=8032385536)
    a2 = _alloc(spec, e2, ctx=2048, flash_attn=False)
    if failed:
        figs.append(
            Figure(
                "CUDA0 allocation that failed (overhead 8032385536)",
                round(float(failed.group(1)) * MiB),
                a2.gpu[0].weights,
                "size",
                failed.group(1) + " MiB",
            )
        )
    return [
        Check(
            3,
            "actual",
            _source(r),
            "deepseek-r1:671b Q4_K_M (named in the issue; simulator catalog file: 61 blocks, MLA-less 128 x "
            "(192+128) KV)",
            f"num_ctx 2048, parallel 1, no flash attention, OLLAMA_GPU_OVERHEAD=16032385536; Ollama 0.5.7 (from the "
            f"date, layers first to last). Free VRAM not printed: 23.5 GiB assumed; the estimate gives "
            f"{e.layers} layers for any free VRAM from {min(span):.1f} to {max(span):.1f} GiB",
            tuple(figs),
            total=figs[1],
            layers=figs[0],
            contrast=(
                f"Ollama's estimate (0.5.x, layers first to last) counted layers 0-2, small dense layers: "
                f"{human_bytes2(e.vram_bytes)} on the GPU. llama.cpp offloads the LAST {e.layers} layers, full MoE "
                f"layers: {_mib(a.gpu[0].weights)} of weights alone on the 24 GB card. With overhead 8032385536 "
                f"the estimate allowed {e2.layers} layers and llama.cpp tried {_mib(a2.gpu[0].weights)}: the "
                "cudaMalloc failure the user saw. autotune predicts the real buffers."
            ),
        )
    ]


@row(7)
def _row7(r: dict[str, str]) -> list[Check]:
    spec = P.catalog("llama3.3:70b")
    e = _est(spec, size_list(r["vram_available"]), ctx=2048, parallel=4, version="0.5.7")
    return [
        _estimate_check(
            r,
            e,
            "llama3.3:70b Q4_K_M (inferred: 81 layers, KV 320 KiB/token, weights 40.7 GiB = layers 38.2 + KV "
            "2.5; output 822.0 MiB = 8192 x 128256 in Q6_K; the 1.1 GiB spread of the allocations = the "
            "Q6_K 'more bits' layers that land on GPU 0)",
            "--ctx-size 8192 --parallel 4 = num_ctx 2048 per slot; no flash attention; 3 GPUs as printed; "
            "Ollama 0.5.7 (from the date)",
        )
    ]


@row(9)
def _row9(r: dict[str, str]) -> list[Check]:
    spec = P.catalog("llama3.1:8b", "Q8_0")
    e = _est(spec, size_list(r["vram_available"]), ctx=80000, version="0.2.8")
    return [
        _estimate_check(
            r,
            e,
            "llama3.1:8b Q8_0 (inferred: 33 layers, KV 128 KiB/token = 32 x 8 x 256 x 2 B, layers 16.7 - 9.8 = "
            "6.9 GiB = an 8B in Q8_0, output 532.3 MiB = 4096 x 128256 in Q8_0; not Gemma 2 as the title says)",
            "num_ctx 80000, parallel 1, flash attention on, f16 KV, 1 GPU 22.7 GiB; Ollama 0.2.8 (from the date)",
        )
    ]


@row(11)
def _row11(r: dict[str, str]) -> list[Check]:
    spec = P.catalog("gemma3:12b")
    e = _est(spec, size_list(r["vram_available"]), ctx=8192, version="0.11.6")
    return [
        _estimate_check(
            r,
            e,
            "gemma3:12b Q4_K_M (inferred from the row: 49 layers, projector 795.9 MiB)",
            "num_ctx 8192, parallel 1, 1 GPU 11.1 GiB; Ollama 0.11.6 (from the date; the old estimator line)",
            (
                "projector.weights: the spec counts mm.mm_input_projection (8.4 MiB) that Ollama's VisionGraphSize "
                "(v.* tensors only) leaves out.",
            ),
        )
    ]


@row(15)
def _row15(r: dict[str, str]) -> list[Check]:
    spec = P.gpt_oss(24, 32)
    e = _est(spec, size_list(r["vram_available"]), ctx=8192, version="0.11.2")
    return [
        _estimate_check(
            r,
            e,
            "gpt-oss:20b MXFP4 (named; model card shapes, see public_models.py)",
            "num_ctx 8192 (ollama ps), parallel 1, flash attention off (the model refused it), so f16 KV "
            "although q4_0 was asked; 1 GPU 15.6 GiB; Ollama 0.11.2 (2025-08-06, before 0.11.3)",
            (
                "graph 2.0 / 4.0 GiB is the first gpt-oss rule: full = 4 x H/Hkv x KV(all layers, full context)/6, "
                "partial = 2 x full (PR #11700 later removed the doubling).",
            ),
        )
    ]


@row(17)
def _row17(r: dict[str, str]) -> list[Check]:
    spec = P.gpt_oss(36, 128)
    requested = int(r["layers_requested"])
    e = _est(spec, size_list(r["vram_available"]), ctx=75000, version="0.11.5", num_gpu=requested)
    est = _estimate_check(
        r,
        e,
        "gpt-oss:120b MXFP4 (named)",
        "num_ctx 75000 (KvSize), parallel 1, flash attention on (the 0.11.5 graph ignores it), num_gpu 38; "
        "3 GPUs as printed, in that order; Ollama 0.11.5",
    )
    printed = tuple(int(v) for v in re.findall(r"(\d+) on GPU", r["actual_offloaded_layers"]))
    devices = layer_devices(spec.block_count, requested, [float(c) for c in e.tensor_split])
    placed = tuple(devices.count(d) for d in range(len(e.tensor_split)))
    act = Check(
        17,
        "actual",
        _source(r),
        "gpt-oss:120b MXFP4",
        "the forced num_gpu 38 in the estimate's tensor split [4 4 9]",
        (Figure("layers per GPU (load request)", printed, placed, "split"),),
        total=None,
        layers=Figure("layers per GPU (load request)", printed, placed, "split"),
        contrast=(
            "The estimate said 17 layers fit; with num_gpu 38 the runner got all 37 (not clamped), cut in "
            "proportion to the estimate's split [4 4 9]: 9/9/19, as predicted. No buffer sizes were printed."
        ),
    )
    return [est, act]


@row(19)
def _row19(r: dict[str, str]) -> list[Check]:
    spec = P.glm45_air_q8_0()
    e = _est(spec, size_list(r["vram_available"]), ctx=20000, version="0.12.0")
    model = (
        "GLM-4.5-Air Q8_0 (inferred: 47 blocks = 46 + the next-token layer, KV 3.6 GiB at 20000 = 47 x 8 x "
        "256 x 2 B per token, graph 7.2 GiB = 96/8 x KV/6, the fallback for an architecture without a "
        "formula, 108.8 GiB of weights = 106B parameters in Q8_0, the 629.0 MiB output = 4096 x 151552 in Q8_0; "
        "the larger allocation of GPU 1 holds blk.46, the next-token layer; shapes from the card)"
    )
    inputs = (
        "num_ctx 20000 (KvSize), parallel 1, flash attention on, f16 KV; 3 GPUs as printed; Ollama 0.12.0"
    )
    est = _estimate_check(r, e, model, inputs)
    a = _alloc(spec, e, ctx=20000, flash_attn=True)
    printed_layers = [int(v) for v in re.findall(r"(\d+)\(", r["actual_offloaded_layers"])]
    compute = device_sizes(r["actual_compute_buffers"])
    gpu_printed = sum(v for k, v in compute.items() if k.startswith("CUDA") and k[4:].isdigit())
    gpu_pred = sum(d.compute for d in a.gpu)
    figs = [
        Figure("offloaded layers", sum(printed_layers), a.offloaded, "count"),
        Figure(
            "layers per GPU (GPULayers)",
            tuple(printed_layers),
            tuple(a.layers_on(i) for i in range(3)),
            "split",
        ),
    ]
    for i in range(3):
        figs.append(
            Figure(
                f"CUDA{i} compute buffer",
                compute[f"CUDA{i}"],
                a.gpu[i].compute,
                "size",
                _mib(compute[f"CUDA{i}"]),
            )
        )
    figs.append(Figure("GPU compute buffers, sum", gpu_printed, gpu_pred, "size", _mib(gpu_printed)))
    figs.append(
        Figure(
            "CUDA_Host compute buffer (host RAM)",
            compute["CUDA_Host"],
            a.cpu.compute,
            "size",
            _mib(compute["CUDA_Host"]),
        )
    )
    act = Check(
        19,
        "actual",
        _source(r),
        model,
        inputs + "; the estimate's 20 layers in its split [6 5 9]",
        tuple(figs),
        total=figs[-2],
        layers=figs[0],
        contrast=(
            f"Ollama reserved a {human_bytes2(e.graph_partial)} graph on each of the 3 GPUs (the fallback "
            f"formula); llama.cpp's compute buffers were {_mib(compute['CUDA0'])} / {_mib(compute['CUDA1'])} / "
            f"{_mib(compute['CUDA2'])} (CUDA0 also holds the op-offload copy of one CPU-resident expert tensor). "
            "autotune predicts the buffers, so it sees ~20 GiB of room Ollama left unused."
        ),
        notes=(
            "Only the compute buffers were printed (the weights and KV lines are not in the excerpt); the "
            "compute lines come ~67 s after this load request in the same comment and are assumed to belong to it.",
            "The host compute buffer is shown but not in the goal: our CPU compute model (logits of the CPU "
            "output layer) overstates the pinned host buffer; it is RAM, not VRAM.",
        ),
    )
    return [est, act]


@row(21)
def _row21(r: dict[str, str]) -> list[Check]:
    e = _est(P.gemma3_27b(), size_list(r["vram_available"]), ctx=2048, version="0.6.0")
    return [
        _estimate_check(
            r,
            e,
            "gemma3:27b Q4_K_M (named by the maintainer; card shapes, 62 blocks)",
            "num_ctx 2048, parallel 1, 1 GPU 14.5 GiB; Ollama 0.6.0 (gemma3's release day)",
            (
                "0.6.0 rules: KV 992.0 MiB is the full 2048 context on all 62 layers (no sliding window yet), the "
                "vision tower is not counted, and memory.weights.total still included the KV (15.3 = 14.3 + 1.0).",
            ),
        )
    ]


@row(23)
def _row23(r: dict[str, str]) -> list[Check]:
    e = _est(P.catalog("gemma3:12b"), size_list(r["vram_available"]), ctx=2048, version="0.6.5")
    return [
        _estimate_check(
            r,
            e,
            "gemma3:12b Q4_K_M (named in the title)",
            "num_ctx 2048: not printed; the 0.6.5 default (num_ctx 2048 until 0.6.7), which the printed KV "
            "608.0 MiB confirms (8 global layers x 2048 + 40 sliding x (1024 + 512) cells x 8 KiB); 1 GPU 11.5 "
            "GiB; Ollama 0.6.5 (title)",
        )
    ]


def _mistral_from_row(r: dict[str, str]) -> ModelSpec:
    """mistral-small3.1 with the card's shapes and the layer/output sizes of Ollama's own file (the log's)."""
    base = P.mistral_small_31()
    per = size(r["est_weights_repeating"]) // base.block_count
    return _with(
        base, layer_bytes=(per,) * base.block_count, output_bytes=size(r["est_weights_nonrepeating"])
    )


def _with(spec: ModelSpec, **changes: object) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)  # type: ignore[arg-type]


_MISTRAL_MODEL = (
    "mistral-small3.1:24b Q4_K_M (named; card shapes and the Pixtral tower, whose v.* tensors give exactly the "
    "printed 769.3 MiB). Layer sizes from the log (12.7 GiB, output 360.0 MiB): Ollama quantized this file "
    "itself and kept the output in Q4_K; llama.cpp's rules would give 12.5 GiB and a 525 MiB Q6_K output"
)


@row(25)
def _row25(r: dict[str, str]) -> list[Check]:
    e = _est(_mistral_from_row(r), size_list(r["vram_available"]), ctx=131072, version="0.6.8")
    return [
        _estimate_check(
            r,
            e,
            _MISTRAL_MODEL,
            "num_ctx 131072 (128K), parallel 1, f16 KV, 2 GPUs 23.3 GiB; Ollama 0.6.8 (from the date)",
            (
                "graph 13.3 GiB = 32/8 x KV 20 GiB / 6: mistral3 has no GraphSize formula (the fallback), and "
                "before 0.7.0 the projector (769.3 MiB + graph 8.8 GiB) had to fit on the first GPU next to it: no "
                "GPU qualified, so 0 layers.",
            ),
        )
    ]


@row(27)
def _row27(r: dict[str, str]) -> list[Check]:
    e = _est(_mistral_from_row(r), size_list(r["vram_available"]), ctx=4096, version="0.6.5")
    return [
        _estimate_check(
            r,
            e,
            _MISTRAL_MODEL,
            "num_ctx 4096: not printed, derived from the printed KV 640.0 MiB (= 40 x 4096 x 4 KiB; the 0.6.5 "
            "default 2048 would print 320.0 MiB), so the KV figure is not an independent check; 1 GPU 9.9 GiB; "
            "Ollama 0.6.5 (from the date)",
        )
    ]


@row(29)
def _row29(r: dict[str, str]) -> list[Check]:
    e = _est(P.qwen25_05b(), size_list(r["vram_available"]), ctx=2048, parallel=4, version="0.5.7")
    return [
        _estimate_check(
            r,
            e,
            "qwen2.5:0.5b Q4_K_M (inferred: 25 layers; KV 96 MiB at 8192 = 24 x 2 x (64+64) x 2 B per token; "
            "output 137.9 MiB = the tied 896 x 151936 embedding in Q8_0 (k-quant fallback, 896 is not a multiple "
            "of 256); graph 298.5 / 405.0 MiB = the qwen2 formula with width 896, 14 heads, vocab 151936)",
            "--ctx-size 8192 --parallel 4 = num_ctx 2048 per slot; 1 GPU 139.2 GiB; Ollama 0.5.7 (from the date)",
        )
    ]


@row(31)
def _row31(r: dict[str, str]) -> list[Check]:
    spec = P.deepseek_v2_lite_q4_k_s()
    offl = split_counts(r["actual_offloaded_layers"])[0]
    a = allocate(
        spec, n_devices=1, num_gpu=offl, split=[1.0], ctx_total=2048, ubatch=512, parallel=1, flash_attn=False
    )
    printed = device_sizes(r["actual_model_buffers"])
    figs = [
        Figure("CUDA0 model buffer", printed["CUDA0"], a.gpu[0].weights, "size", "8764.11 MiB"),
        Figure("CPU model buffer (mmap span)", printed["CPU"], a.cpu.weights, "size", "2381.68 MiB"),
    ]
    return [
        Check(
            31,
            "actual",
            _source(r),
            "deepseek-v2:16b-lite-chat-q4_K_S (named; card shapes, llama.cpp's Q4_K_S rules of 2024)",
            "26 of 28 layers offloaded (printed; an input here: the free VRAM of the RTX 4070 is not in the "
            "row, so the layer count cannot be predicted), num_ctx 2048; Ollama 0.1.40",
            tuple(figs),
            total=figs[0],
            layers=None,
            notes=(
                "The CPU figure is the size of the file range llama.cpp maps for the CPU tensors (token_embd, "
                "layer 0, output and whatever lies between them in the file), not an allocation; not in the "
                "goal.",
            ),
        )
    ]


@row(39)
def _row39(r: dict[str, str]) -> list[Check]:
    spec = P.qwen3_32b_q6_k()
    free = [int(23.3 * GiB), int(23.2 * GiB), int(23.1 * GiB)]
    e = _est(spec, free, ctx=32768, version="0.6.8")
    said = re.search(r"total required ([\d.]+) GiB while actual VRAM use ~([\d.]+) GiB", r["outcome_notes"])
    assert said, "row 39's outcome_notes changed"
    printed_total = round(float(said.group(1)) * GiB)
    actual = round(float(said.group(2)) * GiB)
    model = "qwen3:32b Q6_K (named: Qwen3-32B-Q6_K; card shapes, every matrix Q6_K)"
    inputs = (
        "num_ctx 32768, parallel 1, f16 KV, 3 GPUs with 23.3 / 23.2 / 23.1 GiB free (23.1-23.3 stated); "
        "Ollama 0.6.8 (0.7.0 gives the same)"
    )
    est = Check(
        39,
        "estimate",
        _source(r),
        model,
        inputs,
        (
            Figure(
                "total required (memory.required.full)",
                printed_total,
                e.total_bytes,
                "size",
                said.group(1) + " GiB",
            ),
        ),
        total=Figure(
            "total required (memory.required.full)",
            printed_total,
            e.total_bytes,
            "size",
            said.group(1) + " GiB",
        ),
        layers=None,
        notes=(
            f"qwen3 has no GraphSize formula: graph = 64/8 x KV {human_bytes2(e.kv_bytes)} / 6 = "
            f"{human_bytes2(e.graph_partial)} on each of the 3 GPUs; layers are not printed (ours: {e.layers}).",
        ),
    )
    off = _alloc(spec, e, ctx=32768, flash_attn=False)
    on = _alloc(spec, e, ctx=32768, flash_attn=True)
    vram_off, vram_on = sum(d.total for d in off.gpu), sum(d.total for d in on.gpu)
    act = Check(
        39,
        "actual",
        _source(r),
        model,
        inputs + "; flash attention NOT stated",
        (
            Figure("VRAM in use, flash attention on", actual, vram_on, "size", said.group(2) + " GiB"),
            Figure("VRAM in use, flash attention off", actual, vram_off, "size", said.group(2) + " GiB"),
        ),
        total=Figure("VRAM in use, flash attention on", actual, vram_on, "size", said.group(2) + " GiB"),
        layers=None,
        contrast=(
            f"Ollama required {said.group(1)} GiB (the {human_bytes2(e.graph_partial)} fallback graph counted on "
            f"each of 3 GPUs); the user saw about {said.group(2)} GiB in use. With flash attention llama.cpp holds "
            f"{human_bytes2(vram_on)} (autotune's prediction), without it {human_bytes2(vram_off)} (the KQ matrix "
            "of 32768 x 512 x 64 heads is 4 GiB per GPU)."
        ),
        notes=(
            "'about 36 GiB' is the user's rounded statement and the row does not say whether flash attention was "
            "on, so this is shown, not a test; the flash-attention prediction is the one in the summary.",
        ),
        in_goal=False,
    )
    return [est, act]


@row(41)
def _row41(r: dict[str, str]) -> list[Check]:
    spec = P.gemma3_27b()
    e = _est(spec, size_list(r["vram_available"]), ctx=4096, parallel=2, version="0.9.6", library="rocm")
    model = "gemma3:27b Q4_K_M (named in the log: gemma3, Q4_K_M, 63 layers; card shapes)"
    inputs = "--ctx-size 8192 --parallel 2 = num_ctx 4096 per slot; ROCm iGPU 33.6 GiB; Ollama 0.9.6"
    est = _estimate_check(
        r,
        e,
        model,
        inputs,
        ("projector.weights: the spec counts mm.mm_input_projection (8.4 MiB), Ollama does not.",),
    )
    a = _alloc(spec, e, ctx=4096, parallel=2, flash_attn=False, vision_compute=vision_graph(spec)[1])
    w = device_sizes(r["actual_model_buffers"])
    c = device_sizes(r["actual_compute_buffers"])
    gw, _, gc = _gpu_buffers(a, 0)
    figs = [
        Figure("offloaded layers", 63, a.offloaded, "count"),
        Figure("ROCm0 model weights", w["ROCm0"], gw, "size", "16.2 GiB"),
        Figure("CPU model weights", w["CPU"], a.cpu.weights, "size", "1.1 GiB"),
        Figure("ROCm0 compute graph", c["ROCm0"], gc, "size", "1.1 GiB"),
        Figure("ROCm0 weights + compute", w["ROCm0"] + c["ROCm0"], gw + gc, "size", "17.3 GiB"),
    ]
    act = Check(
        41,
        "actual",
        _source(r),
        model,
        inputs + "; no flash attention (0.9.6 default)",
        tuple(figs),
        total=figs[-1],
        layers=figs[0],
        contrast=(
            f"Ollama's estimate reserved graph {human_bytes2(e.graph_full)} plus projector graph "
            f"{human_bytes2(e.projector_graph)}; the Ollama engine's compute graph was {_render(c['ROCm0'], '1.1 GiB')} "
            "in all: one reservation for the worse of a text batch and an image batch."
        ),
        notes=(
            "The Ollama engine reserves one graph for the worst of a text batch and an image batch: the SigLIP "
            "encoder (4096 patches, 16 heads) dominates, so compute = max(text, vision graph).",
            "KV was not printed; the total compared is weights + compute on the GPU.",
        ),
    )
    return [est, act]


def _buffer_figures(
    r: dict[str, str], a: Allocation, device: str, sum_name: str
) -> tuple[list[Figure], dict[str, int], int]:
    """Offloaded layers and llama.cpp's model / KV / compute buffers on the first GPU (and the CPU's model
    buffer), printed against predicted; also the printed model buffers and the printed GPU sum."""
    w, kv, c = (
        device_sizes(r[k]) for k in ("actual_model_buffers", "actual_kv_buffers", "actual_compute_buffers")
    )
    gw, gkv, gc = _gpu_buffers(a, 0)
    printed = w[device] + kv[device] + c[device]
    figs = [
        Figure("offloaded layers", split_counts(r["actual_offloaded_layers"])[0], a.offloaded, "count"),
        Figure(f"{device} model buffer", w[device], gw, "size", _mib(w[device])),
        Figure("CPU model buffer", w["CPU"], a.cpu.weights, "size", _mib(w["CPU"])),
        Figure(f"{device} KV buffer", kv[device], gkv, "size", _mib(kv[device])),
        Figure(f"{device} compute buffer", c[device], gc, "size", _mib(c[device])),
        Figure(sum_name, printed, gw + gkv + gc, "size", _mib(printed)),
    ]
    return figs, w, printed


@row(43)
def _row43(r: dict[str, str]) -> list[Check]:
    spec = P.granite_8b_code_q4_0()
    e = _est(spec, size_list(r["vram_available"]), ctx=2048, parallel=4, version="0.4.0", library="metal")
    model = (
        "granite-code:8b-instruct-128k Q4_0 (named: general.name; card shapes incl. attention and MLP biases)"
    )
    inputs = (
        "--ctx-size 8192 --parallel 4 = num_ctx 2048 per slot, no flash attention, Metal 21.3 GiB; "
        "Ollama 0.4.0 (from the date and llama.cpp build 3871)"
    )
    est = _estimate_check(r, e, model, inputs, ("Metal: partial graph = full graph, MinimumMemory 512 MiB.",))
    a = _alloc(spec, e, ctx=2048, parallel=4, flash_attn=False)
    figs, _, printed_gpu = _buffer_figures(r, a, "Metal", "Metal buffers, sum")
    contrast = (
        f"Ollama's estimate put {human_bytes2(e.vram_bytes)} on the GPU; the Metal buffers came to "
        f"{_mib(printed_gpu)}: the estimate adds MinimumMemory (512 MiB) and a spare layer. Its full graph "
        "(560.0 MiB) equals the real compute buffer here."
    )
    return [
        est,
        Check(
            43,
            "actual",
            _source(r),
            model,
            inputs,
            tuple(figs),
            total=figs[-1],
            layers=figs[0],
            contrast=contrast,
        ),
    ]


@row(45)
def _row45(r: dict[str, str]) -> list[Check]:
    spec = P.catalog("llama3.1:8b")
    e = _est(spec, size_list(r["vram_available"]), ctx=2048, parallel=4, version="0.5.4")
    model = "llama3.1:8b Q4_K_M (named: Meta Llama 3.1 8B Instruct + a LoRA adapter)"
    inputs = "--ctx-size 8192 --parallel 4 = num_ctx 2048 per slot, no flash attention, 1 GPU 23.3 GiB; Ollama 0.5.4"
    est = _estimate_check(r, e, model, inputs, ("Ollama's estimate does not count the LoRA adapter.",))
    a = _alloc(spec, e, ctx=2048, parallel=4, flash_attn=False)
    figs, w, printed_gpu = _buffer_figures(r, a, "CUDA0", "CUDA0 buffers, sum (without the LoRA)")
    return [
        est,
        Check(
            45,
            "actual",
            _source(r),
            model,
            inputs,
            tuple(figs),
            total=figs[-1],
            layers=figs[0],
            notes=(
                f"The LoRA adapter's {_mib(w['CUDA0 LoRA'])} on CUDA0 is an input autotune would add from "
                "the adapter file; it is left out of both sides.",
            ),
            contrast=(
                f"Ollama's estimate put {human_bytes2(e.vram_bytes)} on the GPU; the CUDA0 buffers came to "
                f"{_mib(printed_gpu)} (+ the LoRA and the CUDA context): MinimumMemory and a spare layer again, "
                f"and a partial graph of {human_bytes2(e.graph_partial)} where the compute buffer is 560.00 MiB."
            ),
        ),
    ]


@row(47)
def _row47(r: dict[str, str]) -> list[Check]:
    spec = P.qwen25_coder_7b()
    avail = size(r["vram_available"])
    free_before = size(re.search(r"free ([\d.]+ GiB)", r["vram_available"]).group(1))  # type: ignore[union-attr]
    e = _est([spec][0], [avail], ctx=32768, version="0.20.2")
    gs = graph_size(spec, 32768, 512, 1, "f16", "0.20.2")
    model = "qwen2.5-coder:7b Q4_K_M (named; card shapes)"
    inputs = (
        "num_ctx 32768 (KvSize), parallel 1, flash attention auto (on: an RTX 3060), f16 KV, available "
        "10.3 GiB of a 12 GiB card; Ollama 0.20.2 (Era B)"
    )
    layout_w = sum(spec.layer_bytes) + spec.output_bytes
    layout_total = layout_w + gs.kv_total + gs.full
    nw, nk, ng, nt = (
        size(r[c])
        for c in (
            "newlayout_model_weights",
            "newlayout_kv_cache",
            "newlayout_compute_graph",
            "newlayout_total_memory",
        )
    )
    efigs = [
        Figure("offloaded layers (estimate)", 29, e.layers, "count"),
        Figure("model weights CUDA0", nw, layout_w, "size", r["newlayout_model_weights"].split()[1] + " GiB"),
        Figure("kv cache CUDA0", nk, gs.kv_total, "size", r["newlayout_kv_cache"].split()[1] + " GiB"),
        Figure("compute graph CUDA0", ng, gs.full, "size", r["newlayout_compute_graph"].split()[1] + " GiB"),
        Figure("total memory", nt, layout_total, "size", r["newlayout_total_memory"]),
    ]
    est = Check(
        47,
        "estimate",
        _source(r),
        model,
        inputs,
        tuple(efigs),
        total=efigs[-1],
        layers=efigs[0],
        notes=(
            "Era B's layout for the llama engine takes per-layer weights, KV and the GraphSize graph, "
            "without Era A's minimum-memory and one-layer reserve.",
        ),
    )
    a = _alloc(spec, e, ctx=32768, flash_attn=True)
    model_buf = device_sizes(r["actual_model_buffers"])
    smi = re.search(r"nvidia-smi afterwards (\d+)MiB / (\d+)MiB", r["outcome_notes"])
    assert smi, "row 47's outcome_notes changed"
    used_after, card = int(smi.group(1)) * MiB, int(smi.group(2)) * MiB
    by_model = used_after - (card - free_before)
    d = a.gpu[0]
    figs = [
        Figure("offloaded layers", split_counts(r["actual_offloaded_layers"])[0], a.offloaded, "count"),
        Figure("CUDA0 model buffer", model_buf["CUDA0"], d.weights, "size", "4168.09 MiB"),
        Figure("CPU_Mapped model buffer", model_buf["CPU_Mapped"], a.cpu.weights, "size", "292.36 MiB"),
        Figure(
            "VRAM used by the runner (nvidia-smi after - used before)",
            by_model,
            d.total,
            "size",
            _mib(by_model),
        ),
    ]
    act = Check(
        47,
        "actual",
        _source(r),
        model,
        inputs,
        tuple(figs),
        total=figs[-1],
        layers=figs[0],
        notes=(
            f"nvidia-smi showed {smi.group(1)} MiB of {smi.group(2)} MiB in use after the load; "
            f"{_mib(card - free_before)} were in use before it (12 GiB - 'free 10.7 GiB', +-51 MiB of rounding). "
            "The prediction includes a 320 MiB CUDA context.",
        ),
        contrast=(
            f"Ollama's Era B layout said {r['newlayout_total_memory']} (its graph {r['newlayout_compute_graph']}); "
            f"the runner took {_mib(by_model)} including its CUDA context: with flash attention its compute "
            f"buffer is ~{_mib(d.compute)} (predicted), not the GraphSize graph."
        ),
    )
    return [est, act]


RULES_SEEN = [
    "ollama.py applies these per release (`ollama.rules_for`); each is what a row needs to be reproduced:",
    "",
    "* Before 0.7.0 layers are assigned first to last and an unplaced tail is charged at the last layer's size "
    "(rows 1, 3, 7, 9, 21-29, 43, 45); from 0.7.0 last to first (rows 11-19, 41).",
    "* Before 0.6.1 `memory.weights.total` is the layers *plus their KV* and `.repeating` = total - output "
    "(rows 1, 7, 9, 21, 29, 43, 45); PR #9703 changed it to layers + output (rows 11, 15-19, 25, 27, 41).",
    "* 0.6.0 does not count gemma3's vision tower at all (row 21: 49 layers fit only without it); PR #9703 (0.6.1) "
    "added VisionGraphSize. Before 0.7.0 the projector and its graph must fit on the first GPU (rows 25, 27: "
    "0 layers), later they ride with the output layer (rows 11, 41).",
    "* gemma3's sliding-window layers get window x parallel + batch cells from 0.6.3 (PR #9987; row 23 at 0.6.5, "
    "rows 11, 41); 0.6.0 charges the full context on all 62 layers (row 21: KV 992.0 MiB).",
    "* Architectures without a GraphSize formula (qwen3, glm4moe, mistral3) take H/Hkv x KV / 6 on every GPU "
    "(rows 19, 25, 27, 39): 7.2, 13.3, 0.4 and 10.7 GiB. mistral3 has no formula in any release.",
    "* gpt-oss: 0.11.2 prints graph full 4 x H/Hkv x KV/6 and partial twice that (row 15: 2.0 / 4.0 GiB), with KV "
    "taken as every layer at the full context; after PR #11700 partial = full = 2 x H/Hkv x KV/6 (row 17: 13.7 GiB).",
    "* Metal: partial graph = full graph and MinimumMemory 512 MiB (row 43); CUDA and ROCm 457 MiB.",
    "* Era B (0.12.11+) prints the layout instead: weights + KV + the GraphSize graph per device, without the "
    "minimum memory and spare layer (row 47).",
    "",
    "Not modelled: Ollama's own quantizer differs from llama.cpp's for its mistral-small3.1 file (output kept in "
    "Q4_K), so rows 25 and 27 take their layer sizes from the log; `mm.*` projector tensors (8-68 MiB) are in "
    "the spec but not in Ollama's projector.weights.",
]

UNUSABLE: dict[int, str] = {
    5: "Only the error's 'model requires more system memory (446.3 GiB)' from an issue title: no num_ctx, "
    "parallel, GPU, free memory or version in the excerpt. That figure is TotalSize - VRAMSize; fitting four "
    "unknowns to one number would test nothing.",
    13: "The model is not named ('model layers=49' fits several models, e.g. gemma3:12b at some num_ctx), num_ctx "
    "is not printed, and the Era B layout of the Ollama engine measures real tensors of that unknown file.",
    33: "The model is not named and num_ctx / parallel are not printed: only KV and compute buffers per device "
    "(pipeline parallelism, 4 copies) remain, with nothing to predict them from.",
    35: "An anomaly, not a placement: 'offloaded 33/33' with 1.02 MiB on CUDA0 (the weights stayed in CPU_Mapped, "
    "15317 MiB). The only consistent figure, the total, is what identified the file as 16-bit, so it cannot test "
    "anything.",
    37: "No log line: '~1.8 GiB -> ~6.7 GiB' are rounded statements in the issue text, with no num_ctx, free VRAM "
    "or layer counts, for a 0.13.4 Ollama-engine vision model (qwen2.5vl) whose measured layout we cannot "
    "reproduce.",
    49: "The GPU and its free VRAM are not stated (so the 20 layers cannot be predicted) and neither is the "
    "quantization; qwen3-coder-next is a hybrid recurrent/attention MoE (qwen3next) whose tensor list we cannot "
    "generate from its card with confidence, on the Ollama engine's measured layout.",
    51: "No layer count, no free VRAM (only '22.5 GB usable'), no version; a custom alias of a Q8 Qwen3-30B-A3B "
    "on the Ollama engine. The split could only be fitted to the printed figures, which would then be circular.",
}
