"""Summarise a GPU run of scripts/gpu/autotune_run.sh: autotune's measurements against llama-bench's.

    python scripts/gpu/summarize.py STUDY.db BENCH.jsonl [BENCH2.jsonl ...] --bandwidth-gbs 3350

For every config of the feasible Pareto front: autotune's decode tok/s (median of its repeats) next to
llama-bench's tg128 for the same -ngl / -fa / KV type; for configs with every layer on the GPU, the
fraction of the memory-bandwidth limit (bandwidth / bytes read per token, the bytes being the model's
weights without the token-embedding table, which is only indexed); and peak VRAM from NVML next to what
llama.cpp's log says it allocated on the device (size_vram). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tuner.report import pareto_front
from tuner.schema import fully_on_gpu
from tuner.study import load_records
from tuner.units import GiB

N_VOCAB, N_EMBD = 128256, 4096  # llama3-8b shape of tuner.ggufgen


def bench_results(paths: list[Path]) -> dict[int, dict[str, float]]:
    """trial number -> {"tg": tok/s, "pp": tok/s, "model_size": bytes, "n_params": n} from llama-bench jsonl."""
    out: dict[int, dict[str, float]] = {}
    for path in paths:
        trial = None
        for line in path.read_text().splitlines():
            if line.startswith("# trial "):
                trial = int(line.split()[2].rstrip(":"))
                continue
            if not line.startswith("{") or trial is None:
                continue
            row = json.loads(line)
            entry = out.setdefault(
                trial, {"model_size": row["model_size"], "n_params": row["model_n_params"]}
            )
            key = "tg" if row["n_gen"] > 0 else "pp"
            entry[key] = row["avg_ts"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study_db")
    ap.add_argument("bench", nargs="+", type=Path)
    ap.add_argument("--study", default="h100-llama3-8b")
    ap.add_argument("--bandwidth-gbs", type=float, default=3350.0, help="H100 SXM5 HBM3: 3.35 TB/s")
    args = ap.parse_args()
    meta, records = load_records(f"sqlite:///{args.study_db}", args.study)
    bench = bench_results(args.bench)
    front = pareto_front(records)
    rows, ratios, fractions = [], [], []
    for r in front:
        b = bench.get(r.number, {})
        tg = b.get("tg")
        ratio = r.decode_tok_s / tg if tg else None
        full = fully_on_gpu(r.gpu_fraction)
        frac = None
        if full and b:
            bytes_per_weight = b["model_size"] / b["n_params"]
            per_token = b["model_size"] - N_VOCAB * N_EMBD * bytes_per_weight
            frac = r.decode_tok_s / (args.bandwidth_gbs * 1e9 / per_token)
            fractions.append(frac)
        if ratio:
            ratios.append(ratio)
        rows.append(
            f"| {r.number} | {Path(r.tag).name.removeprefix('llama3-8b-').removesuffix('.gguf')} | "
            f"{'auto' if r.num_gpu < 0 else r.num_gpu} | {r.num_ctx} | {r.flash_attn or '-'} | {r.kv_cache_type or '-'} | "
            f"{r.decode_tok_s:.1f} | {r.decode_cv * 100 if r.decode_cv is not None else float('nan'):.1f}% | "
            f"{tg:.1f} | {ratio:.3f} | "
            if tg
            else f"| {r.number} | {r.tag} | ... no llama-bench result | | | | | | | |"
        )
        if tg:
            rows[-1] += (
                f"{frac * 100:.0f}% | " if frac is not None else "partial offload | "
            ) + f"{(r.peak_vram_bytes or 0) / GiB:.2f} | {(r.size_vram_bytes or 0) / GiB:.2f} |"
    print(
        f"{meta.model}: {sum(r.state == 'COMPLETE' for r in records)} trials, {len(front)} on the feasible Pareto front\n"
    )
    print(
        "| trial | quant | num_gpu | num_ctx | flash attn | KV | autotune decode tok/s | CV | llama-bench tg128 tok/s | ratio | of bandwidth limit | NVML peak GiB | llama.cpp device buffers GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if ratios:
        print(
            f"\nautotune / llama-bench decode: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f} over {len(ratios)} configs"
        )
    if fractions:
        print(
            f"fraction of the {args.bandwidth_gbs:.0f} GB/s limit with every layer on the GPU: median {statistics.median(fractions) * 100:.0f}%, range {min(fractions) * 100:.0f}-{max(fractions) * 100:.0f}%"
        )


if __name__ == "__main__":
    main()
