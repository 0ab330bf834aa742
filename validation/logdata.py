"""The public Ollama memory logs as data: the CSV rows, their printed sizes, and what a check compares.

Used by logrows.py (one check per usable row) and public_logs.py (running them and writing the page).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.estimate.llamacpp import Allocation, allocate
from tuner.estimate.ollama import Estimate, estimate_gpu_layers
from tuner.estimate.spec import ModelSpec
from tuner.estimate.versions import human_bytes2
from tuner.units import GiB, KiB, MiB, TiB

GOAL_TOTAL = 0.05
GOAL_LAYERS = 1
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ollama_memory-public.csv"
UNITS = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}


class DataMissing(FileNotFoundError):
    """The public CSV is not where the repository expects it."""


# --- the CSV ---------------------------------------------------------------------------------------------
def load_rows(path: Path = DATA) -> dict[int, dict[str, str]]:
    if not path.is_file():
        raise DataMissing(
            f"Cannot read the public memory data {str(path)!r}: the file is missing. It lives in the shared "
            "checkout next to this repository (../shared/data/ollama_memory-public.csv); pass --data PATH."
        )
    with path.open(newline="", encoding="utf-8") as fh:
        return {int(r["row_id"]): r for r in csv.DictReader(fh)}


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(TiB|GiB|MiB|KiB|B)\b")
_DEVICE = re.compile(r"([A-Za-z_]+\d*(?: LoRA)?)\s+(\d+(?:\.\d+)?)\s*(GiB|MiB|KiB)\b")


def size(text: str) -> int:
    """The first 'N unit' in `text`, in bytes: '19.5 GiB' -> 20937965568."""
    m = _SIZE.search(text)
    if not m:
        raise ValueError(f"no size in {text!r}: expected a value such as '19.5 GiB'")
    return round(float(m.group(1)) * UNITS[m.group(2)])


def size_list(text: str) -> list[int]:
    """'[21.8 21.8] GiB' or '[0 B 0 B]' -> bytes per entry."""
    m = re.search(r"\[([^\]]*)\]\s*(TiB|GiB|MiB|KiB|B)?", text)
    if not m:
        raise ValueError(f"no [..] list in {text!r}: expected '[22.0 22.0] GiB'")
    body, unit = m.group(1), m.group(2)
    if _SIZE.search(body):
        return [round(float(v) * UNITS[u]) for v, u in _SIZE.findall(body)]
    return [round(float(v) * UNITS[unit or "B"]) for v in body.split()]


def device_sizes(text: str) -> dict[str, int]:
    """'CUDA0 21320.01 MiB; CPU_Mapped 364369.62 MiB' -> {'CUDA0': ..., 'CPU_Mapped': ...}."""
    return {d: round(float(v) * UNITS[u]) for d, v, u in _DEVICE.findall(text)}


def split_counts(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"\d+", text)]


# --- results ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """One compared quantity: bytes ("size"), a count ("count") or a list of counts ("split")."""

    name: str
    printed: int | tuple[int, ...]
    predicted: int | tuple[int, ...]
    kind: str = "size"
    printed_text: str = ""

    @property
    def rel_err(self) -> float | None:
        if self.kind != "size" or not isinstance(self.printed, int) or not isinstance(self.predicted, int):
            return None
        if self.printed == 0:
            return 0.0 if self.predicted == 0 else None
        return (self.predicted - self.printed) / self.printed

    @property
    def diff(self) -> int | None:
        if isinstance(self.printed, int) and isinstance(self.predicted, int) and self.kind == "count":
            return self.predicted - self.printed
        if isinstance(self.printed, tuple) and isinstance(self.predicted, tuple):
            if len(self.printed) != len(self.predicted):
                return None
            return max((abs(a - b) for a, b in zip(self.printed, self.predicted)), default=0)
        return None

    @property
    def as_printed(self) -> bool:
        """The prediction renders exactly as the log printed it."""
        if self.kind == "size" and self.printed_text and isinstance(self.predicted, int):
            return _render(self.predicted, self.printed_text) == _norm(self.printed_text)
        return self.printed == self.predicted

    def show(self, value: int | tuple[int, ...]) -> str:
        if self.kind == "size" and isinstance(value, int):
            return _render(value, self.printed_text) if self.printed_text else human_bytes2(value)
        if isinstance(value, tuple):
            return "[" + " ".join(str(v) for v in value) + "]"
        return str(value)


def _mib(value: int) -> str:
    return f"{value / MiB:.2f} MiB"


def _norm(text: str) -> str:
    m = _SIZE.search(text)
    return f"{m.group(1)} {m.group(2)}" if m else text


def _render(value: int, like: str) -> str:
    """`value` in the precision of `like` ('933.00 MiB' -> two decimals, '7.2 GiB' -> one)."""
    m = _SIZE.search(like)
    if not m:
        return human_bytes2(value)
    decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
    return f"{value / UNITS[m.group(2)]:.{decimals}f} {m.group(2)}"


@dataclass(frozen=True)
class Check:
    row_id: int
    kind: str  # "estimate" (Ollama's printed estimate) | "actual" (the runner's buffers)
    source: str
    model: str
    inputs: str
    figures: tuple[Figure, ...]
    total: Figure | None  # the goal's total
    layers: Figure | None  # the goal's layers (None where the row prints none or they were an input)
    notes: tuple[str, ...] = ()
    in_goal: bool = True  # False: shown, but not a test and not in the distribution (the note says why)
    contrast: str = ""  # where Ollama's estimate and the real allocation disagree, in one sentence

    @property
    def total_err(self) -> float | None:
        return self.total.rel_err if self.total else None

    @property
    def layer_diff(self) -> int | None:
        return self.layers.diff if self.layers else None

    @property
    def ok(self) -> bool:
        total_ok = self.total_err is None or abs(self.total_err) <= GOAL_TOTAL
        layers_ok = self.layer_diff is None or abs(self.layer_diff) <= GOAL_LAYERS
        return total_ok and layers_ok


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    unusable: tuple[tuple[int, str], ...]
    rows_total: int

    def goal_checks(self, kind: str) -> list[Check]:
        return [c for c in self.checks if c.kind == kind and c.in_goal]


# --- helpers the rows share --------------------------------------------------------------------------------
def _est(
    spec: ModelSpec,
    free: Sequence[int],
    *,
    ctx: int,
    parallel: int = 1,
    version: str,
    num_gpu: int = -1,
    kv_type: str = "f16",
    library: str = "cuda",
    overhead: int = 0,
) -> Estimate:
    return estimate_gpu_layers(
        spec,
        list(free),
        num_ctx=ctx,
        num_batch=512,
        num_gpu=num_gpu,
        num_parallel=parallel,
        kv_type=kv_type,
        library=library,
        version=version,
        overhead=overhead,
    )


def _alloc(
    spec: ModelSpec,
    est: Estimate,
    *,
    ctx: int,
    parallel: int = 1,
    flash_attn: bool,
    num_gpu: int | None = None,
    vision_compute: int = 0,
) -> Allocation:
    """What the runner allocates for the estimate's layers (or `num_gpu`) in the estimate's split."""
    split = [float(c) for c in est.tensor_split] if sum(est.tensor_split) else [1.0] * len(est.tensor_split)
    return allocate(
        spec,
        n_devices=len(est.tensor_split),
        num_gpu=est.layers if num_gpu is None else num_gpu,
        split=split,
        ctx_total=ctx * parallel,
        ubatch=min(512, ctx),
        parallel=parallel,
        flash_attn=flash_attn,
        vision_compute=vision_compute,
    )


def _estimate_figures(r: dict[str, str], e: Estimate, *, with_layers: bool = True) -> list[Figure]:
    """Every memory.* figure the row printed, next to the estimate's."""
    out: list[Figure] = []
    if with_layers and r["layers_offload"]:
        out.append(Figure("layers.offload", int(r["layers_offload"]), e.layers, "count"))
    if r["layers_split"] and len(e.tensor_split) > 1:
        out.append(Figure("layers.split", tuple(split_counts(r["layers_split"])), e.tensor_split, "split"))
    pairs = [
        ("memory.required.full", "est_required_full", e.total_bytes),
        ("memory.required.partial", "est_required_partial", e.vram_bytes),
        ("memory.required.kv", "est_required_kv", e.kv_bytes),
        ("memory.weights.total", "est_weights_total", e.weights_bytes),
        ("memory.weights.repeating", "est_weights_repeating", e.weights_repeating),
        ("memory.weights.nonrepeating", "est_weights_nonrepeating", e.weights_nonrepeating),
        ("memory.graph.full", "est_graph_full", e.graph_full),
        ("memory.graph.partial", "est_graph_partial", e.graph_partial),
        ("projector.weights", "est_projector_weights", e.projector_weights),
        ("projector.graph", "est_projector_graph", e.projector_graph),
    ]
    for name, col, predicted in pairs:
        if r[col].strip():
            out.append(Figure(name, size(r[col]), predicted, "size", r[col].split("(")[0].strip()))
    if r["est_required_allocations"].strip():
        for i, (printed, predicted) in enumerate(
            zip(size_list(r["est_required_allocations"]), e.allocations)
        ):
            text = _one_of_list(r["est_required_allocations"], i)
            out.append(Figure(f"memory.required.allocations[{i}]", printed, predicted, "size", text))
    return out


def _one_of_list(text: str, i: int) -> str:
    m = re.search(r"\[([^\]]*)\]\s*(TiB|GiB|MiB|KiB|B)?", text)
    assert m
    body, unit = m.group(1), m.group(2) or "B"
    if _SIZE.search(body):
        v, u = _SIZE.findall(body)[i]
        return f"{v} {u}"
    return f"{body.split()[i]} {unit}"


def _find(figures: Sequence[Figure], name: str) -> Figure | None:
    return next((f for f in figures if f.name == name), None)


def _estimate_check(
    r: dict[str, str],
    e: Estimate,
    model: str,
    inputs: str,
    notes: Sequence[str] = (),
    with_layers: bool = True,
) -> Check:
    figs = _estimate_figures(r, e, with_layers=with_layers)
    return Check(
        row_id=int(r["row_id"]),
        kind="estimate",
        source=_source(r),
        model=model,
        inputs=inputs,
        figures=tuple(figs),
        total=_find(figs, "memory.required.full"),
        layers=_find(figs, "layers.offload"),
        notes=tuple(notes),
    )


def _source(r: dict[str, str]) -> str:
    ref = r["issue_or_pr"] or r["source_ref"]
    if ref.isdigit():
        ref = f"ollama#{ref}"
    elif ref.startswith("PR "):
        ref = "ollama PR #" + ref[3:]
    elif "not resolved" in ref:
        ref = "public file, repository not resolved"
    else:
        ref = ref.split(" (")[0]
    return f"{ref}, {r['date']}"


def _gpu_buffers(a: Allocation, device: int) -> tuple[int, int, int]:
    d = a.gpu[device]
    return d.weights, d.kv, d.compute
