"""python -m tuner.sim.calibrate [--csv ../shared/data/throughput-public.csv] [--markdown OUT.md]

Compares the speed model with measured llama.cpp / Ollama numbers: for every row of the throughput table
that maps to a known card and a known model shape, measured vs simulated prompt (pp) and decode (tg)
tokens/s and their ratio, then the median and worst absolute error. Rows that cannot be mapped are listed
with the reason.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tuner.estimate.llamacpp import layer_devices
from tuner.hardware import KNOWN_CARDS, GpuSpec
from tuner.models import arch as A
from tuner.sim import perf
from tuner.sim.catalog import Family, ModelFile, build_file, lookup
from tuner.sim.hardware import HostSpec
from tuner.units import GiB

DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "throughput-public.csv"

SHAPES: dict[str, A.Arch] = {  # calibration-only shapes (config.json numbers)
    "llama2-7b": A.Arch("llama", 32, 4096, 4096, 11008, 32, 32, 32000),
    "llama2-13b": A.Arch("llama", 40, 4096, 5120, 13824, 40, 40, 32000),
    "qwen2.5-7b": A.Arch("qwen2", 28, 32768, 3584, 18944, 28, 4, 152064, qkv_bias=True),
    "qwen2.5-14b": A.Arch("qwen2", 48, 32768, 5120, 13824, 40, 8, 152064, qkv_bias=True),
    "qwen3-32b": A.Arch(
        "qwen2", 64, 40960, 5120, 25600, 64, 8, 151936, key_length=128, value_length=128, qk_norm=True
    ),
    "mistral-7b": A.Arch("llama", 32, 32768, 4096, 14336, 32, 8, 32768),
    "mistral-small-24b": A.Arch(
        "llama", 40, 32768, 5120, 32768, 32, 8, 131072, key_length=128, value_length=128
    ),
    "phi-4": A.Arch("llama", 40, 16384, 5120, 17920, 40, 10, 100352),
    "gemma2-9b": A.Arch(
        "gemma2",
        42,
        8192,
        3584,
        14336,
        16,
        8,
        256000,
        key_length=256,
        value_length=256,
        tied_output=True,
        post_norms=True,
    ),
    "gemma2-27b": A.Arch(
        "gemma2",
        46,
        8192,
        4608,
        36864,
        32,
        16,
        256000,
        key_length=128,
        value_length=128,
        tied_output=True,
        post_norms=True,
    ),
    "llama3-70b": A.Arch("llama", 80, 131072, 8192, 28672, 64, 8, 128256),
}

CARD_PATTERNS = [  # (regex on the row's gpu text, card key); first match wins
    (r"RTX 5090", "rtx5090"),
    (r"RTX 4090 D", "rtx4090d"),
    (r"RTX 4090", "rtx4090"),
    (r"RTX 5080", "rtx5080"),
    (r"RTX 6000 Ada", "rtx6000ada"),
    (r"RTX 3090 Ti", "rtx3090ti"),
    (r"RTX 3090", "rtx3090"),
    (r"RTX 4080 SUPER", "rtx4080super"),
    (r"RTX 4080", "rtx4080"),
    (r"RTX A6000", "rtxa6000"),
    (r"RTX PRO 4000", "rtxpro4000"),
    (r"RTX PRO 6000", "rtxpro6000"),
    (r"V100", "v10032gb"),
    (r"\bA30\b", "a30"),
    (r"Quadro RTX 6000", "quadrortx6000"),
    (r"5060 Ti", "rtx5060ti16gb"),
    (r"GB10|DGX Spark", "gb10"),
    (r"M40", "m40"),
    (r"4070 Ti SUPER", "rtx4070tisuper"),
    (r"4070 Ti", "rtx4070ti"),
    (r"RTX 4070", "rtx4070"),
    (r"RTX 3060", "rtx306012gb"),
    (r"A100 80GB PCIe", "a10080gbpcie"),
    (r"2080 Ti", "rtx2080ti"),
    (r"RTX 2080", "rtx2080"),
]
HOSTS = [  # (regex on the gpu text, host memory bandwidth GB/s)
    (r"8ch DDR4-3200", 204.8),
    (r"quad-channel DDR4", 94.0),
    (r"dual-channel DDR5", 83.0),
]


@dataclass(frozen=True)
class Case:
    row: int
    label: str
    card: GpuSpec
    mf: ModelFile
    gpu_layers: int  # offloadable layers on the GPU
    host: HostSpec
    pp: float | None
    tg: float | None
    depth: int
    note: str = ""


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _shape_file(key: str, ftype: str) -> ModelFile:
    fam = Family(
        "cal", key, SHAPES[key], "", SHAPES[key].name, "", {}, (), "", key, ("gpt2", "default", 1, 2)
    )
    return build_file(fam, ftype, f"{key}-{ftype.lower()}")


def _scaled(mf: ModelFile, target_bytes: float) -> ModelFile:
    k = target_bytes / mf.file_bytes
    return replace(
        mf,
        layer_bytes=tuple(int(b * k) for b in mf.layer_bytes),
        layer_active_bytes=tuple(int(b * k) for b in mf.layer_active_bytes),
        output_bytes=int(mf.output_bytes * k),
        token_embd_bytes=int(mf.token_embd_bytes * k),
    )


def _model(row: dict[str, str]) -> tuple[ModelFile | None, str]:
    model, quant = row["model"], row["quant"].upper()
    ftype = "Q4_K_M" if "Q4_K_M" in quant or "Q4" == quant.split()[0:1] else quant.split()[0] if quant else ""
    if "MoE" in model or "A3B" in model or "gpt-oss" in model:
        return None, "MoE model: the table gives no per-token active bytes for it"
    if "qwen3-vl" in model:
        return None, "vision-language architecture not modelled"
    if "IQ2_M" in quant:
        mf = lookup("llama3.3:70b")
        assert mf is not None
        return _scaled(
            mf, float(row["model_size_GiB"]) * GiB
        ), "IQ2_M file: 70B shape scaled to the row's size"
    if "DEFAULT Q4" in quant:
        ftype = "Q4_0" if "gemma2" in model else "Q4_K_M"
    if ftype not in ("Q4_0", "Q8_0", "F16", "Q4_K_M"):
        return None, f"quantization {row['quant']!r} not modelled"
    if re.search(r"Llama 2 7B|LLaMA 7B|CodeLlama 7B", model):
        return _shape_file("llama2-7b", ftype), ""
    table = [
        (r"Llama 2 13B", "llama2-13b"),
        (r"Qwen2\.5 7B", "qwen2.5-7b"),
        (r"Qwen2\.5-14B|qwen2\.5:14b", "qwen2.5-14b"),
        (r"Qwen3 32B", "qwen3-32b"),
        (r"Mistral-7B", "mistral-7b"),
        (r"Mistral Small 3", "mistral-small-24b"),
        (r"phi-4", "phi-4"),
        (r"Gemma 2 9B", "gemma2-9b"),
        (r"gemma2:27b", "gemma2-27b"),
    ]
    for pattern, key in table:
        if re.search(pattern, model):
            return _shape_file(key, ftype), ""
    catalog = [
        (r"Llama 3\.3 70B", "llama3.3:70b"),
        (r"Qwen 2\.5 32B", "deepseek-r1:32b"),
        (r"Gemma-3-12B", "gemma3:12b"),
    ]
    for pattern, tag in catalog:
        if re.search(pattern, model) and ftype == "Q4_K_M":
            return lookup(tag), ""
    return None, "model shape not in the simulator's tables"


def map_row(i: int, row: dict[str, str]) -> tuple[Case | None, str]:
    gpu_text, notes = row["gpu"], row["notes"]
    if "Vulkan" in row["engine"]:
        return None, "Vulkan backend (the simulator models CUDA)"
    if "-sm row" in notes:
        return None, "row split (-sm row) across 4 GPUs; the simulator models layer split"
    if "nkvo" in notes:
        return None, "KV cache kept in host memory (-nkvo); not modelled"
    if "300 W" in gpu_text:
        return None, "power-limited to 300 W; the simulator has no power model"
    key = next((k for pattern, k in CARD_PATTERNS if re.search(pattern, gpu_text)), None)
    if key is None:
        return None, f"card {gpu_text!r} not in the simulator's table"
    mf, note = _model(row)
    if mf is None:
        return None, note
    blocks = mf.arch.block_count
    on_gpu = row["layers_on_gpu"]
    match = re.match(r"\s*(\d+)\b", on_gpu)
    layers = blocks + 1
    if match and "all" not in on_gpu and int(match.group(1)) <= blocks:
        layers = int(match.group(1))
    bw = next((b for pattern, b in HOSTS if re.search(pattern, gpu_text)), 80.0)
    ollama = "ollama" in notes.lower() or "llmfit" in notes
    depth = 100 if ollama else 64
    label = f"{gpu_text.replace('NVIDIA ', '')[:34]} | {row['model'][:30]} {row['quant'][:12]}"
    case = Case(
        i,
        label,
        KNOWN_CARDS[key],
        mf,
        layers,
        HostSpec(bandwidth_gbps=bw),
        _num(row["pp_tok_s"]),
        _num(row["tg_tok_s"]),
        depth,
        note,
    )
    return case, ""


def simulate(case: Case) -> tuple[float, float]:
    blocks = case.mf.arch.block_count
    devices = layer_devices(blocks, case.gpu_layers, [1.0])
    layout = perf.Layout(tuple(0 if d >= 0 else -1 for d in devices), False, (0,))
    pp = 512 / perf.prefill_seconds(case.mf, layout, [case.card], case.host, 512, 0, 512)
    tg = 1 / perf.decode_seconds_per_token(case.mf, layout, [case.card], case.host, case.depth)
    return pp, tg


def run(csv_path: Path) -> str:
    with csv_path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = [
        "| row | GPU / model | GPU layers | pp meas | pp sim | pp ratio | tg meas | tg sim | tg ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pp_err: list[float] = []
    tg_err: list[float] = []
    skipped = []
    for i, row in enumerate(rows, start=2):
        case, reason = map_row(i, row)
        if case is None:
            skipped.append(f"- row {i} ({row['gpu'][:40]}, {row['model'][:40]}): {reason}")
            continue
        pp, tg = simulate(case)
        cells = []
        for meas, sim, errs in ((case.pp, pp, pp_err), (case.tg, tg, tg_err)):
            if meas:
                errs.append(abs(sim / meas - 1))
                cells += [f"{meas:.1f}", f"{sim:.1f}", f"{sim / meas:.2f}"]
            else:
                cells += ["", "", ""]
        total = case.mf.arch.block_count + 1
        label = case.label + (f" ({case.note})" if case.note else "")
        out.append(f"| {i} | {label} | {case.gpu_layers}/{total} | " + " | ".join(cells) + " |")
    out.append("")
    for name, errs in (("prompt (pp)", pp_err), ("decode (tg)", tg_err)):
        if errs:
            out.append(
                f"{name}: {len(errs)} rows, median |sim/measured - 1| = {statistics.median(errs):.1%}, "
                f"worst = {max(errs):.1%}"
            )
    out += ["", f"Skipped {len(skipped)} rows:", *skipped]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuner.sim.calibrate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="throughput table (CSV)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        sys.stderr.write(f"calibrate: no table at '{args.csv}'; pass --csv PATH.\n")
        return 2
    text = run(args.csv)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
