"""The walkthrough notebook runs as shipped against the committed example study, is stored with its outputs,
and runs against any other study named by AUTOTUNE_STORAGE / AUTOTUNE_STUDY."""

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
EXAMPLE = ROOT / "reports" / "examples" / "h100-llama3-8b"


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


def execute(nb, cwd: Path = NOTEBOOK.parent):
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def outputs_of(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def printed(nb) -> list[str]:
    """What the notebook printed (stdout), cell by cell: the text its stored outputs must still show."""
    return [
        "".join(
            o.get("text", "")
            for o in c.get("outputs", [])
            if o.output_type == "stream" and o.name == "stdout"
        )
        for c in nb.cells
        if c.cell_type == "code"
    ]


def test_notebook_is_stored_with_its_outputs_and_points_at_the_example_study():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(
        c.execution_count is not None and c.outputs for c in code[1:]
    )  # the settings cell prints nothing
    assert not [o for o in outputs_of(nb) if o.output_type == "error"]
    first = "".join(code[0].source)
    assert "AUTOTUNE_STORAGE" in first and "AUTOTUNE_STUDY" in first and "STORAGE =" in first
    assert "../reports/examples/h100-llama3-8b/study.db" in first and (EXAMPLE / "study.db").is_file()
    assert any("tuner.study import load_records" in "".join(c.source) for c in code)
    text = json.dumps(printed(nb))
    assert "llama-server: 33 trials of a budget of 32" in text and "within noise" in text


def test_notebook_runs_as_shipped_and_its_stored_outputs_are_what_it_prints(monkeypatch):
    for name in ("AUTOTUNE_STORAGE", "AUTOTUNE_STUDY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    fresh = execute(nbformat.read(NOTEBOOK, as_version=4))
    assert not [o for o in outputs_of(fresh) if o.output_type == "error"]
    assert printed(fresh) == printed(stored), "re-run the notebook and save it with its outputs"
    assert sum("image/png" in o.get("data", {}) for o in outputs_of(fresh)) == 3


def test_notebook_runs_against_a_study(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, "walkthrough", tmp_path / "report")
    monkeypatch.setenv("AUTOTUNE_STORAGE", storage)
    monkeypatch.setenv("AUTOTUNE_STUDY", "walkthrough")
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = execute(nbformat.read(NOTEBOOK, as_version=4))
    outputs = outputs_of(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("text", "") for o in outputs] + [o.get("data", {}) for o in outputs])
    assert "llama3.1:8b on ollama: 8 trials" in text
    assert "FROM llama3.1:8b" in text and "PARAMETER num_ctx" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert "engine's own placement" in text and "95% interval" in text
