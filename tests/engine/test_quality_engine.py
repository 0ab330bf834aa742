"""The quality measure on llama.cpp's llama-server: teacher-forced (the reference's token ids are fed to each
tag, so every reference position is compared), on tiny random-weight models in f16, q8_0 and q4_0. It ranks
them f16 < q8_0 < q4_0 in loss and repeats within its stated spread. Random weights say nothing about a real
model's quality."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.backend.llamaserver import LlamaServerBackend
from tuner.fidelity import TagQuality
from tuner.quality.run import QualitySettings, measure_quality

pytestmark = pytest.mark.engine
SETTINGS = QualitySettings(num_predict=12)


def _measure(backend: LlamaServerBackend, quants: dict[str, Path]) -> dict[str, TagQuality]:
    tags = {str(path): q for q, path in quants.items()}
    result = measure_quality(backend, [(t, None) for t in tags], tags, SETTINGS)
    return {tags[q.tag]: q for q in result.values()}


def test_ranks_f16_q8_0_q4_0_and_repeats_within_its_spread(
    llama_backend: LlamaServerBackend, quality_quants: dict[str, Path]
) -> None:
    first = _measure(llama_backend, quality_quants)
    assert first["f16"].is_reference
    q8, q4 = first["q8_0"], first["q4_0"]
    assert q8.method == q4.method == "teacher-forced"
    assert q8.positions == q4.positions == SETTINGS.num_predict * 8  # every reference position compared
    assert q8.kl is not None and q4.kl is not None
    assert 0 < q8.kl.mean < q4.kl.mean
    assert q8.kl.high < q4.kl.mean, "q4_0 loses more than q8_0 beyond q8_0's spread"
    second = _measure(llama_backend, quality_quants)
    for quant in ("q8_0", "q4_0"):
        a, b = first[quant].kl, second[quant].kl
        assert a is not None and b is not None
        assert abs(a.mean - b.mean) <= max(a.half_width, 1e-9), (quant, a, b)


def test_a_kv_cache_type_is_its_own_variant(
    llama_backend: LlamaServerBackend, quality_quants: dict[str, Path]
) -> None:
    """With --tune-kv-cache each (tag, KV cache type) is measured against the reference's f16 cache."""
    ref, q8 = str(quality_quants["f16"]), str(quality_quants["q8_0"])
    tags = {ref: "f16", q8: "q8_0"}
    result = measure_quality(llama_backend, [(ref, None), (ref, "q4_0"), (q8, None)], tags, SETTINGS)
    assert result[f"{ref}|kv=default"].is_reference
    kv = result[f"{ref}|kv=q4_0"]
    assert kv.measured and kv.kl is not None and kv.kl.mean > 0


def test_a_llama_server_study_reports_each_files_quality(
    llama_server_binary: Path, quality_quants: dict[str, Path], tmp_path: Path
) -> None:
    from tuner.cli import main
    from tuner.study import load_records

    paths = [str(quality_quants[q]) for q in ("f16", "q4_0")]
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                *paths,
                "--engine",
                "llama-server",
                "--llama-server",
                str(llama_server_binary),
                "--budget",
                "3",
                "--max-ctx",
                "4096",
                "--quality-tokens",
                "8",
                "--remeasure-rounds",
                "0",
                "--study",
                "q",
                "--storage",
                f"sqlite:///{tmp_path}/s.db",
                "--out",
                str(tmp_path / "r"),
            ]
        )
    assert exit_info.value.code in (0, None)
    meta, records = load_records(f"sqlite:///{tmp_path}/s.db", "q")
    assert meta.quantization[paths[0]] == "F16" and meta.quality["reference"] == paths[0]
    assert all(r.quality_kl is not None for r in records if r.tag == paths[1])
    report = (tmp_path / "r" / "report.md").read_text()
    assert "### Quality of each tag" in report and "teacher-forced" in report
