"""python -m tuner.sim.calibrate [--csv ../shared/data/throughput-public.csv] [--markdown OUT.md]

Compares the speed model with measured llama.cpp / Ollama numbers: for every row of the throughput table
that maps to a known card and a known architecture, measured vs simulated prompt (pp) and decode (tg)
tokens/s and their ratio, then the median and worst absolute error. Rows that cannot be mapped are listed
with the reason.

A row is mapped by the facts it states, not by how it spells them:
* the model: its lineage (Llama 2, Llama 3, Qwen2.5, Qwen3, Mistral, Gemma 2/3, phi-4, Mixtral, gpt-oss) and
  stated parameter count pick the architecture whose own parameter count is within 15%; a stated layer count
  (n_layers, the output layer included) must equal that architecture's, and a stated file size must be
  within 8% of the file the quantization gives (else the file is scaled to the row's size and says so);
* the card: its name, checked against the row's stated bandwidth; a power limit ("@300 W") is applied;
* the layer split: taken from the row (N, N/M, all, -1, 99); a row that states none is mapped only when the
  file fits the card with room to spare, and a placement the simulator does not model (--cpu-moe, -sm row,
  -nkvo) leaves the row out.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from tuner.estimate.llamacpp import layer_devices
from tuner.hardware import KNOWN_CARDS, GpuSpec
from tuner.models import arch as A
from tuner.sim import perf
from tuner.sim.catalog import Family, ModelFile, build_file, lookup
from tuner.sim.hardware import HostSpec, power_limited
from tuner.units import GiB

DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "throughput-public.csv"


@dataclass(frozen=True)
class Shape:
    """An architecture the table can be mapped to: a catalog model, or config.json numbers kept here."""

    key: str
    lineage: str
    arch: A.Arch
    catalog: str = ""  # the simulator's tag when the catalog has this architecture


SHAPES: tuple[Shape, ...] = (  # config.json numbers of the models the table names
    Shape("llama2-7b", "llama2", A.Arch("llama", 32, 4096, 4096, 11008, 32, 32, 32000)),
    Shape("llama2-13b", "llama2", A.Arch("llama", 40, 4096, 5120, 13824, 40, 40, 32000)),
    Shape("llama2-70b", "llama2", A.Arch("llama", 80, 4096, 8192, 28672, 64, 8, 32000)),
    Shape("llama3.1-8b", "llama3", A.LLAMA31_8B, "llama3.1:8b"),
    Shape("llama3.3-70b", "llama3", A.LLAMA33_70B, "llama3.3:70b"),
    Shape("qwen2.5-7b", "qwen2.5", A.QWEN25_7B, "qwen2.5:7b"),
    Shape("qwen2.5-14b", "qwen2.5", A.QWEN25_14B, "qwen2.5:14b"),
    Shape("qwen2.5-32b", "qwen2.5", A.QWEN25_32B, "qwen2.5:32b"),
    Shape("qwen2.5-72b", "qwen2.5", A.QWEN25_72B, "qwen2.5:72b"),
    Shape(
        "qwen3-32b",
        "qwen3",
        A.Arch(
            "qwen3", 64, 40960, 5120, 25600, 64, 8, 151936, key_length=128, value_length=128, qk_norm=True
        ),
    ),
    Shape("qwen3-30b-a3b", "qwen3", A.QWEN3_30B_A3B, "qwen3:30b-a3b"),
    Shape("mistral-7b", "mistral", A.Arch("llama", 32, 32768, 4096, 14336, 32, 8, 32768)),
    Shape("mistral-small-24b", "mistral-small", A.MISTRAL_SMALL_24B, "mistral-small:24b"),
    Shape("mixtral-8x7b", "mixtral", A.MIXTRAL_8X7B, "mixtral:8x7b"),
    Shape("phi-4", "phi4", A.PHI4_14B, "phi4:14b"),
    Shape(
        "gemma2-9b",
        "gemma2",
        A.Arch(
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
    ),  # fmt: skip
    Shape(
        "gemma2-27b",
        "gemma2",
        A.Arch(
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
    ),  # fmt: skip
    Shape("gemma3-12b", "gemma3", A.GEMMA3_12B, "gemma3:12b"),
    Shape("gemma3-27b", "gemma3", A.GEMMA3_27B, "gemma3:27b"),
    # openai/gpt-oss-120b: 36 blocks, emb 2880, 64/8 heads of 64, 128 experts of 2880, 4 used, vocab 201088
    Shape(
        "gpt-oss-120b",
        "gpt-oss",
        A.Arch(
            "gptoss",
            36,
            131072,
            2880,
            2880,
            64,
            8,
            201088,
            key_length=64,
            value_length=64,
            expert_count=128,
            expert_used_count=4,
            expert_ff_length=2880,
        ),
    ),  # fmt: skip
)

LINEAGES = (  # (pattern on the lower-cased model text, lineage); first match wins
    (r"qwen3[.-]?5|qwen3[- ]?vl", ""),  # hybrid / vision-language architectures: not modelled
    (r"gpt-oss", "gpt-oss"),
    (r"qwen\s?3", "qwen3"),
    (r"qwen\s?2\.5", "qwen2.5"),
    (r"mixtral", "mixtral"),
    (r"mistral[- ]small", "mistral-small"),
    (r"mistral", "mistral"),
    (r"phi-?4", "phi4"),
    (r"gemma[- ]?3", "gemma3"),
    (r"gemma[- ]?2", "gemma2"),
    (r"llama[- ]?3", "llama3"),
    (r"llama[- ]?2|codellama|\bllama \d+b", "llama2"),  # LLaMA 1 7B/70B have Llama 2's shapes
)
OLLAMA_DEFAULT_QUANT = {"qwen2.5": "Q4_K_M", "gemma2": "Q4_0", "llama3": "Q4_K_M", "qwen3": "Q4_K_M"}
MODELLED_TYPES = ("Q4_0", "Q8_0", "F16", "Q4_K_M")

CARD_PATTERNS = [  # (regex on the row's gpu text, card key); first match wins; the bandwidth is checked
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
    (r"RTX A5000", "rtxa5000"),
    (r"RTX PRO 4000", "rtxpro4000"),
    (r"RTX PRO 6000", "rtxpro6000"),
    (r"V100.*16 ?GB", "v10016gb"),
    (r"V100", "v10032gb"),
    (r"\bA30\b", "a30"),
    (r"\bA40\b", "a40"),
    (r"\bA10\b", "a10"),
    (r"\bL40S\b", "l40s"),
    (r"\bL40\b", "l40"),
    (r"\bL4\b", "l4"),
    (r"\bP40\b", "p40"),
    (r"Quadro RTX 6000", "quadrortx6000"),
    (r"5070 Ti", "rtx5070ti"),
    (r"5060 Ti", "rtx5060ti16gb"),
    (r"GB10|DGX Spark", "gb10"),
    (r"M40", "m40"),
    (r"4070 Ti SUPER", "rtx4070tisuper"),
    (r"4070 Ti", "rtx4070ti"),
    (r"RTX 4070", "rtx4070"),
    (r"4060 Ti", "rtx4060ti16gb"),
    (r"4060 Laptop|4060 Mobile", "rtx4060laptop"),
    (r"RTX 4060", "rtx4060"),
    (r"RTX 3080.*12 ?GB", "rtx308012gb"),
    (r"RTX 3080", "rtx308010gb"),
    (r"RTX 3070", "rtx3070"),
    (r"RTX 3060.*8 ?GB", "rtx30608gb"),
    (r"RTX 3060", "rtx306012gb"),
    (r"A100 80GB PCIe", "a10080gbpcie"),
    (r"2080 Ti", "rtx2080ti"),
    (r"RTX 2080", "rtx2080"),
]
CARD_TDP_W = {"rtxpro6000": 600.0, "rtx5090": 575.0, "rtx4090": 450.0, "rtx3090": 350.0}
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
    shape: str = ""  # the architecture the row was mapped to
    note: str = ""


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _first_int(text: str) -> int | None:
    match = re.match(r"\s*(-?\d+)", text)
    return int(match.group(1)) if match else None


@cache
def _file(key: str, ftype: str) -> ModelFile:
    shape = next(s for s in SHAPES if s.key == key)
    if shape.catalog and ftype == "Q4_K_M":
        mf = lookup(shape.catalog)
        if mf is not None and mf.ftype == ftype:
            return mf
    fam = Family("cal", key, shape.arch, "", shape.arch.name, "", {}, (), "", key, ("gpt2", "default", 1, 2))
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


def stated_params(model: str) -> tuple[float | None, float | None]:
    """(total, active) parameter counts in billions, as the model text states them."""
    text = model.lower()
    experts = re.search(r"(\d+)x(\d+(?:\.\d+)?)b", text)
    total = None
    if not experts:
        match = re.search(r"(\d+(?:\.\d+)?)\s*b\b", text)
        total = float(match.group(1)) if match else None
    active = re.search(r"(\d+(?:\.\d+)?)b active|-a(\d+(?:\.\d+)?)b", text)
    act = float(next(g for g in active.groups() if g)) if active else None
    return total, act


@cache
def _shape_params(key: str) -> float:
    return _file(key, "F16").parameter_count / 1e9


def pick_shape(row: dict[str, str]) -> tuple[Shape | None, str]:
    """The architecture a row states (lineage, parameter count, layer count), or None and why not."""
    text = row["model"].lower()
    lineage = next((name for pattern, name in LINEAGES if re.search(pattern, text)), None)
    if not lineage:
        why = "architecture not modelled" if lineage == "" else "model lineage not recognised"
        return None, f"{why} ({row['model'][:40]!r})"
    total, _ = stated_params(row["model"])
    candidates = [s for s in SHAPES if s.lineage == lineage]
    if lineage == "mixtral":
        total = _shape_params("mixtral-8x7b")
    if total is None:
        return None, f"no parameter count stated for {lineage}"
    near = [s for s in candidates if abs(_shape_params(s.key) / total - 1) <= 0.15]
    if not near:
        return None, f"no {lineage} architecture of about {total:g}B parameters in the tables"
    shape = min(near, key=lambda s: abs(_shape_params(s.key) / total - 1))
    layers = _first_int(row["n_layers"])
    if layers is not None and layers != shape.arch.block_count + 1:
        return (
            None,
            f"the row counts {row['n_layers'][:20]!r} layers, {shape.key} has {shape.arch.block_count + 1}",
        )
    return shape, ""


def pick_file(row: dict[str, str], shape: Shape) -> tuple[ModelFile | None, str]:
    """The file of `shape` at the row's quantization, checked against the stated size."""
    quant = row["quant"].upper()
    size_gib = _num(row["model_size_GiB"])
    token = quant.split()[0] if quant else ""
    note = ""
    if quant.startswith("DEFAULT Q4"):
        token = OLLAMA_DEFAULT_QUANT.get(shape.lineage, "Q4_K_M")
        note = f"Ollama's default {token}"
    elif "UD-" in quant or token.startswith("IQ"):
        if size_gib is None:
            return None, f"quantization {row['quant'][:24]!r} without a file size"
        base = "Q8_0" if token == "Q8_0" else "Q4_K_M"
        return _scaled(
            _file(shape.key, base), size_gib * GiB
        ), f"{token} file: {base} scaled to {size_gib:g} GiB"
    if token not in MODELLED_TYPES:
        return None, f"quantization {row['quant'][:24]!r} not modelled"
    mf = _file(shape.key, token)
    if size_gib and abs(mf.file_bytes / (size_gib * GiB) - 1) > 0.08:
        mf = _scaled(mf, size_gib * GiB)
        note = (note + "; " if note else "") + f"file scaled to the stated {size_gib:g} GiB"
    return mf, note


def pick_card(row: dict[str, str]) -> tuple[GpuSpec | None, str]:
    gpu_text = row["gpu"]
    key = next((k for pattern, k in CARD_PATTERNS if re.search(pattern, gpu_text)), None)
    if key is None:
        return None, f"card {gpu_text[:40]!r} not in the simulator's table"
    card = KNOWN_CARDS[key]
    stated = _num(row["gpu_bw_GBps"])
    if stated and abs(card.bandwidth_gbps / stated - 1) > 0.05:
        return None, f"the row's bandwidth {stated:g} GB/s is not the {card.name}'s {card.bandwidth_gbps:g}"
    watts = re.search(r"@\s*(\d+)\s*W", gpu_text)
    if watts:
        if key not in CARD_TDP_W:
            return None, f"power limit {watts.group(1)} W on a card whose TDP the table lacks"
        card = power_limited(card, float(watts.group(1)), CARD_TDP_W[key])
    return card, ""


def pick_layers(row: dict[str, str], mf: ModelFile, card: GpuSpec) -> tuple[int | None, str]:
    """Offloadable layers on the GPU as the row states them; None when it states none we can use."""
    text, total = row["layers_on_gpu"].strip().lower(), mf.arch.block_count + 1
    if "cpu-moe" in text or "n-cpu-moe" in text:
        return None, "experts kept on the CPU (--cpu-moe); the simulator places whole layers"
    n = _first_int(text)
    if "all" in text or n in (99, -1) or (n is not None and n >= total):
        return total, "assumed all (as the row presumes)" if "presumably" in text else ""
    if n is not None and n >= 0:
        return n, ""
    if not text and mf.file_bytes < 0.85 * card.memory_bytes:
        return total, "split not stated; the file fits the card: all layers"
    return None, "layer split not stated and the file does not fit the card whole"


def map_row(i: int, row: dict[str, str]) -> tuple[Case | None, str]:
    gpu_text, notes = row["gpu"], row["notes"]
    if "Vulkan" in row["engine"]:
        return None, "Vulkan backend (the simulator models CUDA)"
    if "-sm row" in notes:
        return None, "row split (-sm row) across 4 GPUs; the simulator models layer split"
    if "nkvo" in notes:
        return None, "KV cache kept in host memory (-nkvo); not modelled"
    card, why = pick_card(row)
    if card is None:
        return None, why
    shape, why = pick_shape(row)
    if shape is None:
        return None, why
    mf, file_note = pick_file(row, shape)
    if mf is None:
        return None, file_note
    layers, layer_note = pick_layers(row, mf, card)
    if layers is None:
        return None, layer_note
    bw = next((b for pattern, b in HOSTS if re.search(pattern, gpu_text)), 80.0)
    ollama = "ollama" in notes.lower() or "llmfit" in notes
    depth = 100 if ollama else 64
    label = f"{gpu_text.replace('NVIDIA ', '')[:34]} | {row['model'][:30]} {row['quant'][:12]}"
    note = "; ".join(n for n in (file_note, layer_note) if n)
    case = Case(
        i, label, card, mf, layers, HostSpec(bandwidth_gbps=bw), _num(row["pp_tok_s"]), _num(row["tg_tok_s"]),
        depth, shape.key, note,
    )  # fmt: skip
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
        "| row | GPU / model | mapped to | GPU layers | pp meas | pp sim | pp error | tg meas | tg sim | tg error |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
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
                cells += [f"{meas:.1f}", f"{sim:.1f}", f"{sim / meas - 1:+.0%}"]
            else:
                cells += ["", "", ""]
        total = case.mf.arch.block_count + 1
        label = case.label + (f" ({case.note})" if case.note else "")
        out.append(
            f"| {i} | {label} | {case.shape} {case.mf.ftype} | {case.gpu_layers}/{total} | "
            + " | ".join(cells)
            + " |"
        )
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
        prog="python -m tuner.sim.calibrate", description=(__doc__ or "").splitlines()[0]
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
