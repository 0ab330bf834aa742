"""Every usable row of ../shared/data/ollama_memory-public.csv meets the goal: total within 5 %, layers within 1.

The figures come from the CSV (validation/logdata.py reads them); the rows that cannot be used are listed
with a reason in logrows.UNUSABLE and in reports/memory-validation.md. A missing CSV fails, it does not skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from validation import logdata as D
from validation import public_logs as V


@pytest.fixture(scope="module")
def rows() -> dict[int, dict[str, str]]:
    if not V.DATA.is_file():
        pytest.fail(
            f"The public memory data is missing: {V.DATA} (expected ../shared/data/ollama_memory-public.csv "
            "next to the repository). These tests need it; restore the shared checkout."
        )
    return V.load_rows()


@pytest.mark.parametrize("row_id", sorted(V.ROWS))
def test_row_meets_the_goal(rows: dict[int, dict[str, str]], row_id: int) -> None:
    checks = [c for c in V.check_row(row_id, rows) if c.in_goal]
    assert checks, f"row {row_id} has nothing in the goal"
    for c in checks:
        assert c.total is not None or c.layers is not None, f"row {row_id} ({c.kind}) compares nothing"
        if c.total_err is not None:
            assert abs(c.total_err) <= D.GOAL_TOTAL, (
                f"row {row_id} ({c.kind}): {c.total.name} printed {c.total.printed_text or c.total.printed}, "  # type: ignore[union-attr]
                f"predicted {c.total.show(c.total.predicted)} ({c.total_err:+.1%})"  # type: ignore[union-attr]
            )
        if c.layer_diff is not None:
            assert abs(c.layer_diff) <= D.GOAL_LAYERS, (
                f"row {row_id} ({c.kind}): layers printed {c.layers.printed}, predicted {c.layers.predicted}"  # type: ignore[union-attr]
            )


def test_every_row_is_checked_or_listed_as_unusable(rows: dict[int, dict[str, str]]) -> None:
    assert not set(V.ROWS) & set(V.UNUSABLE)
    assert set(rows) == set(V.ROWS) | set(V.UNUSABLE)
    assert all(len(reason) > 40 for reason in V.UNUSABLE.values())


def test_the_page_has_the_distribution_the_misses_and_the_unusable_rows(
    rows: dict[int, dict[str, str]],
) -> None:
    report = V.validate()
    text = V.render(report)
    assert "## Error distribution" in text and "| Ollama's printed estimate |" in text
    assert "| actual llama.cpp buffers |" in text and "## Rows that could not be used" in text
    for rid, _ in report.unusable:
        assert f"| {rid} |" in text
    est = V.distribution(report.goal_checks("estimate"))
    act = V.distribution(report.goal_checks("actual"))
    assert est.n >= 15 and act.n >= 6
    assert abs(est.worst_err) <= D.GOAL_TOTAL and abs(act.worst_err) <= D.GOAL_TOTAL


def test_the_estimate_and_the_real_allocation_disagree_where_the_data_says_so(
    rows: dict[int, dict[str, str]],
) -> None:
    # row 3: Ollama's estimate puts 3.4 GiB on the GPU, llama.cpp's last three layers are 20.8 GiB
    actual = next(c for c in V.check_row(3, rows) if c.kind == "actual")
    cuda0 = next(f for f in actual.figures if f.name == "CUDA0 model buffer")
    assert cuda0.as_printed and abs(cuda0.predicted - round(21320.01 * D.MiB)) < 0.01 * D.MiB  # type: ignore[operator]
    # row 19: Ollama reserves a 7.2 GiB graph per GPU, llama.cpp's compute buffers are under 1 GiB each
    est, act = V.check_row(19, rows)
    graph = next(f for f in est.figures if f.name == "memory.graph.partial")
    compute = [f.printed for f in act.figures if f.name.startswith("CUDA") and "compute" in f.name]
    assert isinstance(graph.predicted, int) and graph.predicted > 7 * D.GiB
    assert len(compute) == 4 and all(isinstance(v, int) and v < D.GiB for v in compute)


def test_a_missing_csv_fails_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(V.DataMissing, match="missing"):
        V.load_rows(tmp_path / "ollama_memory-public.csv")
    assert V.main(["--data", str(tmp_path / "none.csv")]) == 1


def test_the_parsers_read_the_log_formats() -> None:
    assert D.size("19.5 GiB") == round(19.5 * D.GiB)
    assert D.size_list("[16.6 15.5 15.7] GiB") == [round(v * D.GiB) for v in (16.6, 15.5, 15.7)]
    assert D.size_list("[0 B 0 B]") == [0, 0]
    assert D.device_sizes("CUDA0 4403.49 MiB; CPU 281.81 MiB; + CUDA0 LoRA 160.00 MiB") == {
        "CUDA0": round(4403.49 * D.MiB),
        "CPU": round(281.81 * D.MiB),
        "CUDA0 LoRA": round(160.0 * D.MiB),
    }
    with pytest.raises(ValueError, match="19.5 GiB"):
        D.size("nothing")
