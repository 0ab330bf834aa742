"""The walkthrough notebook runs top to bottom against a study stored the way study.py stores it.

The study is fabricated here with Optuna directly, in study.py's storage format (study user attribute
"autotune_meta", each trial's user attribute "record"); the notebook reads it with tuner.study.load_records.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import nbformat
import optuna
from nbclient import NotebookClient
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.schema import SCHEMA_VERSION, StudyMeta, TrialRecord

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "study_walkthrough.ipynb"
GIB = 1024**3
TAG = "llama3.1:8b-instruct-q4_K_M"


def make_study(storage: str, name: str) -> None:
    meta = StudyMeta(
        schema_version=SCHEMA_VERSION,
        study_name=name,
        engine="ollama",
        model="llama3.1:8b",
        tags=[TAG],
        block_count={TAG: 32},
        context_length={TAG: 131072},
        ctx_ladder=[4096, 16384, 65536],
        budget=12,
        vram_limit_bytes=None,
        min_ctx=None,
        gpu_only=False,
        depth=0.5,
        num_predict=64,
        fingerprint={
            "gpus": [{"name": "NVIDIA GeForce RTX 3060", "memory_bytes": 12 * GIB, "driver": "550.54"}],
            "server": {"engine": "ollama", "version": "0.12.10", "host": "http://127.0.0.1:11434"},
            "host": {"cpu": "Intel i7-12700", "ram_bytes": 32 * GIB, "os": "Linux"},
            "tool": {"name": "autotune", "version": "0.1.0", "python": "3.12.3"},
            "vram_source": "simulator",
            "vram_note": "",
        },
    )
    records = [
        TrialRecord(
            0,
            "COMPLETE",
            TAG,
            -1,
            4096,
            decode_tok_s=30.0,
            peak_vram_bytes=int(5.6 * GIB),
            gpu_fraction=1.0,
            cpu_spill=False,
            feasible=True,
            baseline=True,
            vram_source="simulator",
        )
    ]
    for number, (num_gpu, num_ctx) in enumerate(
        [(33, 4096), (33, 16384), (20, 16384), (33, 65536), (10, 4096), (20, 65536)], start=1
    ):
        share = num_gpu / 33
        vram = int((4.7 * share + num_ctx * 131072 / GIB * share + 0.5) * GIB)
        if vram > 12 * GIB:
            records.append(
                TrialRecord(
                    number,
                    "COMPLETE",
                    TAG,
                    num_gpu,
                    num_ctx,
                    feasible=False,
                    oom=True,
                    error="cudaMalloc failed: out of memory",
                    vram_source="simulator",
                )
            )
            continue
        speed = 1 / ((1 - share) / 4.0 + share / 60.0)
        records.append(
            TrialRecord(
                number,
                "COMPLETE",
                TAG,
                num_gpu,
                num_ctx,
                decode_tok_s=speed,
                peak_vram_bytes=vram,
                gpu_fraction=share,
                cpu_spill=share < 1,
                feasible=True,
                repeats=3,
                vram_source="simulator",
            )
        )
    records.append(TrialRecord(len(records), "RUNNING", TAG, 25, 4096))

    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"])
    study.set_user_attr("autotune_meta", asdict(meta))
    distributions = {
        "tag": CategoricalDistribution([TAG]),
        "num_gpu": IntDistribution(-1, 33),
        "num_ctx": IntDistribution(4096, 65536, log=True),
    }
    for record in records:
        complete = record.state == "COMPLETE"
        study.add_trial(
            create_trial(
                state=TrialState[record.state],
                values=[record.decode_tok_s or 0.0, float(record.peak_vram_bytes or 12 * GIB)]
                if complete
                else None,
                params={"tag": record.tag, "num_gpu": record.num_gpu, "num_ctx": record.num_ctx},
                distributions=distributions,
                user_attrs={"record": asdict(record)},
            )
        )


def test_notebook_is_saved_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    first = "".join(code[0]["source"])
    assert "AUTOTUNE_STORAGE" in first and "AUTOTUNE_STUDY" in first and "STORAGE =" in first
    assert any("tuner.study import load_records" in "".join(c["source"]) for c in code)


def test_notebook_runs_against_a_study(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, "walkthrough")
    monkeypatch.setenv("AUTOTUNE_STORAGE", storage)
    monkeypatch.setenv("AUTOTUNE_STUDY", "walkthrough")
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("text", "") for o in outputs] + [o.get("data", {}) for o in outputs])
    assert "llama3.1:8b on ollama: 8 trials" in text
    assert "FROM llama3.1:8b-instruct-q4_K_M" in text and "PARAMETER num_gpu 33" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert "engine's own placement" in text
