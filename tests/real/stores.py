"""A real Ollama model store holding the tiny test model, imported by the real `ollama create`: shared by the
serving tests (tests/real/test_serving.py, tests/real/test_serve_study.py), one store per release and quant."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TEST_PARAMETERS, require_engine
from tuner.backend.ollamaserve import ManagedOllama


def tiny_store(
    release: str, model: str, gguf: Path, tmp_path_factory: pytest.TempPathFactory, label: str
) -> tuple[str, Path]:
    """(the ollama binary of `release`, a model store holding `model` created from `gguf`)."""
    from tuner.installs import find_ollama  # noqa: PLC0415

    inst = find_ollama(release)
    if inst is None:
        require_engine(f"Ollama {release}", "run 'python -m tuner.engines build ollama'")
        raise AssertionError("unreachable")
    folder = tmp_path_factory.mktemp(f"{label}-{release}")
    (folder / "tiny.gguf").symlink_to(gguf)
    params = "".join(f"PARAMETER {k} {v}\n" for k, v in TEST_PARAMETERS.items())
    with ManagedOllama(
        inst.binary("ollama"), models_dir=folder / "models", log_path=folder / "import.log"
    ) as s:
        s.create(model, f"FROM ./tiny.gguf\n{params}", cwd=folder)
    return str(inst.binary("ollama")), folder / "models"
