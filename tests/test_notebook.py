"""The walkthrough notebook runs top to bottom against a study that autotune made on the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import optuna
import pytest
from nbclient import NotebookClient

from tuner.cli import main
from tuner.sim import SimServer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "study_walkthrough.ipynb"


def make_study(storage: str, name: str, out: Path) -> None:
    """A real 8-trial study: the CLI, the official client and the simulator over HTTP."""
    with SimServer(gpus="1xRTX3060-12GB", host_ram="32GiB", seed=7) as sim:
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "llama3.1:8b",
                    "--host",
                    sim.url,
                    "--budget",
                    "8",
                    "--storage",
                    storage,
                    "--study",
                    name,
                    "--out",
                    str(out),
                ]
            )
    assert exit_info.value.code == 0


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
    make_study(storage, "walkthrough", tmp_path / "report")
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
    assert "FROM llama3.1:8b" in text and "PARAMETER num_gpu 33" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert "engine's own placement" in text
