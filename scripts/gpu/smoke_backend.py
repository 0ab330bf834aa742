"""Drive LlamaServerBackend on a real GPU: full and partial offload, automatic placement, and a context
that cannot fit (OutOfMemory). Prints one line per case and compares the log's device buffers with the
peak GPU memory NVML saw (tuner.probe). Run by build_and_smoke.sh on the device; prints a table last.

    python3 scripts/gpu/smoke_backend.py MODEL.gguf [MODEL2.gguf ...] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from tuner.backend.base import AUTO, EngineOptions
from tuner.backend.llamaserver import LlamaServerBackend
from tuner.errors import BackendError, OutOfMemory, ProbeError
from tuner.probe import NullProbe, NvmlProbe, PeakSampler
from tuner.units import GiB

PROMPT = (
    "The quick brown fox jumps over the lazy dog while the tuner measures tokens per second. " * 6
).strip()


def case(backend, probe, model, options, repeats=3, num_predict=128):
    sampler = PeakSampler(probe, interval_s=0.02)
    sampler.start()
    row = {
        "model": Path(model).name,
        "ngl": options.num_gpu,
        "ctx": options.num_ctx,
        "fa": options.flash_attn or "-",
        "kv": options.kv_cache_type or "-",
    }
    try:
        row["load_s"] = backend.load(model, options)
        sampler.mark()
        res = backend.residency(model)
        gens = [
            backend.generate(model, PROMPT, options, num_predict=num_predict, seed=i) for i in range(repeats)
        ]
        sampler.mark()
        peak = sampler.stop()
        row.update(
            decode=statistics.median(g.decode_tok_s for g in gens),
            decode_all=[round(g.decode_tok_s, 1) for g in gens],
            prefill=statistics.median(g.prefill_tok_s for g in gens),
            ttft=statistics.median(g.ttft_s for g in gens),
            prompt_n=gens[0].prompt_tokens,
            eval_n=gens[0].eval_tokens,
            layers=f"{res.layers_offloaded}" if res else "?",
            size_gib=res.size_bytes / GiB if res else None,
            vram_gib=res.size_vram_bytes / GiB if res else None,
            nvml_gib=peak.total_bytes / GiB,
            ctx_loaded=res.context_length if res else None,
        )
        sizes = backend.buffer_sizes()
        row["buffers"] = (
            {f"{n}/{k}": round(v / 2**20, 1) for (n, k), v in sizes.buffers.items()} if sizes else {}
        )
        row["argv"] = " ".join(backend.command_line or [])
    except OutOfMemory as exc:
        sampler.stop()
        row["oom"] = exc.server_message
    except BackendError as exc:
        sampler.stop()
        row["error"] = str(exc).splitlines()[0]
    finally:
        t = time.monotonic()
        backend.unload_all()
        row["unload_s"] = time.monotonic() - t
        row["pid_after"] = backend.pid
    print(row, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--log-dir", default="/tmp/smoke-logs")
    parser.add_argument(
        "--oom-ctx", type=int, default=2_000_000, help="a context that cannot fit (8B: 244 GiB KV)"
    )
    args = parser.parse_args()
    backend = LlamaServerBackend(log_dir=args.log_dir, startup_timeout_s=180)
    try:
        probe = NvmlProbe()
    except ProbeError as exc:  # a CPU-only dry run of this script
        print(f"no NVML ({exc}); GPU peaks read 0", flush=True)
        probe = NullProbe()
    print(backend.server_info(), probe.gpus(), flush=True)
    first = args.models[0]
    info = backend.model_info(first)
    print(
        info.name,
        info.architecture,
        info.block_count,
        info.context_length,
        info.quantization,
        info.parameter_size,
    )
    rows = []
    for model in args.models:
        rows.append(case(backend, probe, model, EngineOptions(num_gpu=99, num_ctx=4096)))
    rows.append(case(backend, probe, first, EngineOptions(num_gpu=16, num_ctx=4096), repeats=2))
    rows.append(case(backend, probe, first, EngineOptions(num_gpu=AUTO, num_ctx=4096), repeats=1))
    rows.append(case(backend, probe, first, EngineOptions(num_gpu=99, num_ctx=32768), repeats=1))
    rows.append(
        case(
            backend,
            probe,
            first,
            EngineOptions(num_gpu=99, num_ctx=32768, flash_attn="on", kv_cache_type="q8_0"),
            1,
        )
    )
    t = time.monotonic()
    rows.append(case(backend, probe, first, EngineOptions(num_gpu=99, num_ctx=args.oom_ctx), repeats=1))
    print(f"impossible context answered in {time.monotonic() - t:.1f} s", flush=True)
    backend.close()
    print()
    print(
        "| model | ngl | ctx | fa | kv | load s | decode tok/s | prefill tok/s | ttft s | layers | log size GiB | log vram GiB | NVML peak GiB | result |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:

        def f(key, fmt="{:.2f}", r=r):
            v = r.get(key)
            return fmt.format(v) if isinstance(v, (int, float)) else (str(v) if v is not None else "")

        result = (
            "OOM: " + r["oom"].split("': ")[-1][:100]
            if "oom" in r
            else ("error: " + r["error"][:90] if "error" in r else "ok")
        )
        print(
            f"| {r['model']} | {r['ngl']} | {r['ctx']} | {r['fa']} | {r['kv']} | {f('load_s')} | {f('decode', '{:.1f}')} "
            f"| {f('prefill', '{:.0f}')} | {f('ttft', '{:.3f}')} | {f('layers')} | {f('size_gib')} | {f('vram_gib')} "
            f"| {f('nvml_gib')} | {result} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
