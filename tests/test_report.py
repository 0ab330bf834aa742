"""The report layer on fabricated studies: the picks are the right trials, and every file is written."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pandas as pd
import pytest

from tuner.modelfile import parse_modelfile
from tuner.report import (
    baseline_comparison,
    missing_picks,
    pareto_front,
    picks,
    trials_frame,
    write_report,
)
from tuner.schema import CSV_COLUMNS, SCHEMA_VERSION, StudyMeta, TrialRecord
from tuner.units import GiB

Q4, Q8 = "qwen2.5:14b-instruct-q4_K_M", "qwen2.5:14b-instruct-q8_0"
LAYERS = 48  # block_count; 49 offloadable with the output layer
GPU_BYTES = 16 * GiB


def make_meta(**overrides) -> StudyMeta:
    meta = StudyMeta(
        schema_version=SCHEMA_VERSION,
        study_name="qwen14b-test",
        engine="ollama",
        model="qwen2.5:14b",
        tags=[Q4, Q8],
        block_count={Q4: LAYERS, Q8: LAYERS},
        context_length={Q4: 32768, Q8: 32768},
        ctx_ladder=[4096, 8192, 16384, 32768],
        budget=30,
        vram_limit_bytes=None,
        min_ctx=None,
        gpu_only=False,
        depth=0.5,
        num_predict=128,
        fingerprint={
            "gpus": [{"name": "NVIDIA GeForce RTX 4080", "memory_bytes": GPU_BYTES, "driver": "550.54"}],
            "server": {"engine": "ollama", "version": "0.12.10", "host": "http://127.0.0.1:11434"},
            "host": {"cpu": "AMD Ryzen 9 7950X", "ram_bytes": 64 * GiB, "os": "Linux 6.8"},
            "tool": {"name": "autotune", "version": "0.1.0", "python": "3.12.3"},
            "vram_source": "simulator",
            "vram_note": "",
        },
    )
    return replace(meta, **overrides)


def trial(number: int, tag: str, num_gpu: int, num_ctx: int, **fields) -> TrialRecord:
    """A trial as the simulator would measure it: speed falls off a cliff once layers spill to the CPU."""
    weights = (8.4 if tag == Q4 else 14.7) * GiB
    layers = LAYERS + 1 if num_gpu < 0 else num_gpu
    fraction = min(layers, LAYERS + 1) / (LAYERS + 1)
    kv = num_ctx * 192 * 1024  # bytes per token
    vram = int(weights * fraction + kv * fraction + 0.6 * GiB)
    gpu_speed = (42.0 if tag == Q4 else 27.0) * (1 - 0.04 * math.log2(num_ctx / 4096))
    cpu_speed = 4.0 if tag == Q4 else 2.5
    decode = 1 / ((1 - fraction) / cpu_speed + fraction / gpu_speed)
    base = {
        "state": "COMPLETE",
        "decode_tok_s": decode,
        "decode_cv": 0.02,
        "prefill_tok_s": decode * 30,
        "ttft_s": 0.2 + (1 - fraction),
        "load_s": 3.0,
        "peak_vram_bytes": vram,
        "peak_vram_per_gpu": [vram],
        "vram_source": "simulator",
        "size_bytes": int(weights + kv + 0.6 * GiB),
        "size_vram_bytes": vram,
        "gpu_fraction": fraction,
        "cpu_spill": fraction < 1,
        "context_length_loaded": num_ctx,
        "repeats": 3,
        "feasible": True,
        "constraints": {"vram_overflow": vram - GPU_BYTES},
    }
    if vram > GPU_BYTES:  # out of memory: no measurement at all
        base.update(
            decode_tok_s=None,
            decode_cv=None,
            prefill_tok_s=None,
            ttft_s=None,
            peak_vram_bytes=None,
            peak_vram_per_gpu=[],
            size_vram_bytes=None,
            gpu_fraction=None,
            cpu_spill=None,
            context_length_loaded=None,
            repeats=0,
            feasible=False,
            oom=True,
            error=f"model requires more memory ({vram / GiB:.1f} GiB) than is available: cudaMalloc failed: out of memory",
        )
    base.update(fields)
    return TrialRecord(number=number, tag=tag, num_gpu=num_gpu, num_ctx=num_ctx, **base)


def normal_study() -> list[TrialRecord]:
    settings = [
        (Q4, 30, 8192),
        (Q4, 49, 8192),
        (Q4, 49, 4096),
        (Q4, 49, 16384),
        (Q4, 49, 32768),  # fits? 8.4 + 6 + .6 = 15 GiB: yes
        (Q4, 40, 32768),
        (Q4, 20, 4096),
        (Q8, 49, 4096),  # 14.7 + .75 + .6 > 16: OOM
        (Q8, 40, 4096),
        (Q8, 30, 8192),
        (Q8, 49, 32768),  # OOM
        (Q4, 45, 16384),
    ]
    records = [trial(0, Q4, -1, 8192, baseline=True, cpu_spill=True, gpu_fraction=0.82, decode_tok_s=14.0)]
    records += [trial(i + 1, *s) for i, s in enumerate(settings)]
    records.append(
        replace(trial(len(records), Q8, 45, 16384), state="RUNNING", decode_tok_s=None, feasible=False)
    )
    records.append(
        replace(
            trial(len(records), Q4, 10, 4096),
            state="FAIL",
            decode_tok_s=None,
            feasible=False,
            error="ReadTimeout talking to the server",
        )
    )
    return records


def by_number(records, number) -> TrialRecord:
    return next(r for r in records if r.number == number)


# ---------------------------------------------------------------------------------------------------------
# Picks
# ---------------------------------------------------------------------------------------------------------


def test_fastest_leanest_balanced_and_largest_ctx_are_the_right_trials():
    # Q4 fully on the GPU: 42.0 / 40.3 / 38.6 / 37.0 tok/s at 4096..32768, each +-5% (cv 2%, 3 runs).
    records = normal_study()
    chosen = picks(make_meta(), records)
    # 4096, 8192 and 16384 are within noise of each other: the tie goes to the larger context.
    assert (chosen["fastest"].trial.num_gpu, chosen["fastest"].trial.num_ctx) == (49, 16384)
    # 32768 is 12% slower than the fastest: past the 10% tolerance.
    largest = chosen["largest_ctx_on_gpu"].trial
    assert (largest.tag, largest.num_gpu, largest.num_ctx) == (Q4, 49, 16384)
    # The least VRAM of the configs fully on the GPU (spilled ones use less, but are not on the GPU).
    assert (chosen["leanest"].trial.num_gpu, chosen["leanest"].trial.num_ctx) == (49, 4096)
    # Fully on the GPU, at least the baseline's context (8192), within 10%: the least VRAM.
    assert (chosen["balanced"].trial.num_gpu, chosen["balanced"].trial.num_ctx) == (49, 8192)
    assert all(p.reason and "\n" not in p.reason for p in chosen.values())
    assert missing_picks(make_meta(), records) == {}


def test_equal_vram_or_context_goes_to_the_faster_trial():
    a = trial(1, Q4, 20, 4096, peak_vram_bytes=5 * GiB, decode_tok_s=10.0)
    b = trial(2, Q4, 21, 4096, peak_vram_bytes=5 * GiB, decode_tok_s=11.0)
    c = trial(3, Q4, 49, 8192, decode_tok_s=40.0, cpu_spill=False, gpu_fraction=1.0)
    d = trial(4, Q4, 49, 8192, decode_tok_s=41.0, cpu_spill=False, gpu_fraction=1.0)
    chosen = picks(make_meta(), [a, b, c, d])
    assert chosen["leanest"].trial.number == 4  # a and b spill to the CPU
    assert chosen["largest_ctx_on_gpu"].trial.number == 4


def test_a_tie_never_costs_context_and_your_context_stays_when_you_are_tied():
    fast = trial(1, Q4, 49, 4096, decode_tok_s=42.0, decode_samples=[41.0, 42.0, 43.0])
    roomy = trial(2, Q4, 49, 16384, decode_tok_s=41.5, decode_samples=[40.5, 41.5, 42.5])
    assert picks(make_meta(), [fast, roomy])["fastest"].trial.number == 2
    base = trial(0, Q4, -1, 8192, baseline=True, decode_tok_s=41.8, decode_samples=[40.8, 41.8, 42.8])
    decision_records = [base, fast, roomy]
    comparison = baseline_comparison(decision_records)
    assert comparison.within_noise and "within noise" in comparison.summary
    assert picks(make_meta(), decision_records)["fastest"].trial.num_ctx == 8192
    clearly = trial(3, Q4, 49, 4096, decode_tok_s=60.0, decode_samples=[59.5, 60.0, 60.5])
    assert picks(make_meta(), [*decision_records, clearly])["fastest"].trial.number == 3


def test_a_cpu_only_config_is_never_picked_while_a_gpu_config_is_feasible():
    cpu = trial(1, Q4, 0, 4096, peak_vram_bytes=0, gpu_fraction=0.0, decode_tok_s=3.0)
    gpu = trial(2, Q4, 30, 4096, decode_tok_s=8.0)
    chosen = picks(make_meta(), [cpu, gpu])
    assert {p.trial.number for p in chosen.values()} == {2}
    assert picks(make_meta(), [cpu])["fastest"].trial.number == 1  # nothing else loads
    assert picks(make_meta(allow_cpu_only=True), [cpu, gpu])["fastest"].trial.number == 2


def test_pareto_front_is_non_dominated_and_sorted_by_vram():
    records = normal_study()
    front = pareto_front(records)
    assert front == sorted(front, key=lambda r: r.peak_vram_bytes)
    feasible = [r for r in records if r.state == "COMPLETE" and r.feasible and r.peak_vram_bytes]
    for r in feasible:
        dominated = any(
            o.decode_tok_s >= r.decode_tok_s
            and o.peak_vram_bytes <= r.peak_vram_bytes
            and (o.decode_tok_s > r.decode_tok_s or o.peak_vram_bytes < r.peak_vram_bytes)
            for o in feasible
        )
        assert (r in front) != dominated
    assert all(r.state == "COMPLETE" and r.feasible for r in front)


def test_no_feasible_trial_gives_no_picks_and_says_why():
    records = [trial(i, Q8, 49, 32768) for i in range(3)]  # all OOM
    assert picks(make_meta(), records) == {}
    why = missing_picks(make_meta(), records)
    assert set(why) == {"fastest", "leanest", "balanced", "largest_ctx_on_gpu"}
    assert "loaded" in why["fastest"]
    assert pareto_front(records) == []


def test_everything_spilled_leaves_largest_ctx_on_gpu_missing():
    records = [trial(1, Q4, 20, 4096), trial(2, Q4, 30, 8192)]
    assert "largest_ctx_on_gpu" not in picks(make_meta(), records)
    assert "spilled" in missing_picks(make_meta(), records)["largest_ctx_on_gpu"]


def test_unfinished_and_nan_trials_are_excluded_from_picks():
    records = [
        trial(1, Q4, 49, 4096, state="RUNNING"),
        trial(2, Q4, 49, 8192, state="FAIL"),
        trial(3, Q4, 30, 4096, decode_tok_s=float("nan")),
        trial(4, Q4, 20, 4096, peak_vram_bytes=None),
    ]
    chosen = picks(make_meta(), records)
    assert chosen["fastest"].trial.number == 4
    assert "leanest" not in chosen and "balanced" not in chosen


def test_constraint_violations_are_not_picked():
    records = normal_study()
    fastest = picks(make_meta(), records)["fastest"].trial
    records = [
        replace(r, feasible=False, error="num_ctx 16384 < min_ctx 32768") if r.num_ctx < 32768 else r
        for r in records
    ]
    assert picks(make_meta(), records)["fastest"].trial.num_ctx == 32768
    assert fastest.num_ctx == 16384


# ---------------------------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------------------------


def test_baseline_comparison_is_a_ratio_and_mentions_the_spill():
    records = normal_study()
    comparison = baseline_comparison(records)
    assert comparison.baseline.number == 0
    assert comparison.speedup == pytest.approx(comparison.best.decode_tok_s / 14.0)
    assert "spills to the CPU" in comparison.summary and not comparison.within_noise


def test_baseline_that_did_not_load_is_reported_with_its_message():
    records = normal_study()
    records[0] = trial(0, Q8, -1, 32768, baseline=True)  # OOM
    comparison = baseline_comparison(records)
    assert comparison.speedup is None
    assert "did not load" in comparison.summary and "out of memory" in comparison.summary


def test_no_baseline_trial():
    assert "No baseline" in baseline_comparison(normal_study()[1:]).summary


# ---------------------------------------------------------------------------------------------------------
# The frame and the files
# ---------------------------------------------------------------------------------------------------------


def test_trials_frame_has_the_csv_columns_first():
    frame = trials_frame(normal_study())
    assert list(frame.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert "constraint_vram_overflow" in frame.columns and "peak_vram_per_gpu" in frame.columns
    assert list(frame["number"]) == sorted(frame["number"])
    assert list(trials_frame([]).columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS


def test_a_trial_that_did_not_load_has_no_speed_in_the_frame():
    oom = trial(1, Q8, 49, 32768, decode_tok_s=0.0)  # a placeholder 0 must not survive
    frame = trials_frame([oom])
    assert pd.isna(frame.loc[0, "decode_tok_s"])


@pytest.fixture(scope="module")
def normal_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(make_meta(), normal_study(), out)


def test_write_report_writes_every_file(normal_report):
    out, written = normal_report
    for name in (
        "trials.csv",
        "pareto.png",
        "speed_vs_num_gpu.png",
        "vram_vs_num_ctx.png",
        "report.md",
        "report.html",
        "best.Modelfile",
        "pick-fastest.Modelfile",
        "pick-leanest.Modelfile",
        "pick-balanced.Modelfile",
        "pick-largest-ctx-on-gpu.Modelfile",
    ):
        assert (out / name).is_file(), name
    assert all(path.parent == out and path.is_file() for path in written.values())
    assert all(key in ("best", path.name) for key, path in written.items())
    assert written["best"].name == "best.Modelfile" and "report.html" in written
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_has_the_columns(normal_report):
    out, _ = normal_report
    frame = pd.read_csv(out / "trials.csv")
    assert list(frame.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert len(frame) == len(normal_study())


def test_modelfiles_parse_and_match_their_trial(normal_report):
    out, _ = normal_report
    chosen = picks(make_meta(), normal_study())
    best = parse_modelfile((out / "best.Modelfile").read_text())
    fastest = chosen["fastest"].trial
    assert best["from"] == fastest.tag
    assert best["parameters"] == {"num_gpu": fastest.num_gpu, "num_ctx": fastest.num_ctx}
    for name, pick in chosen.items():
        parsed = parse_modelfile((out / f"pick-{name.replace('_', '-')}.Modelfile").read_text())
        assert parsed["parameters"]["num_ctx"] == pick.trial.num_ctx


def test_html_is_self_contained(normal_report):
    out, _ = normal_report
    page = (out / "report.html").read_text()
    # No external resource: every src/href is a data URI or an in-page anchor, no @import or url(http...).
    for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page):
        assert ref.startswith(("data:", "#")), ref
    assert not re.search(r"url\(\s*['\"]?https?:", page) and "@import" not in page
    assert "<script" not in page and "<link" not in page
    assert page.count('src="data:image/png;base64,') == 3


def test_report_contents(normal_report):
    out, _ = normal_report
    md = (out / "report.md").read_text()
    for text in (
        "qwen2.5:14b",
        "qwen14b-test",
        "budget 30",
        "NVIDIA GeForce RTX 4080",
        "550.54",
        "0.12.10",
        "AMD Ryzen 9 7950X",
        "autotune 0.1.0 (Python 3.12.3)",
        "Pareto front",
        "ollama create",
        "--apply",
        "FROM qwen2.5:14b-instruct-q4_K_M",
        "ReadTimeout",
        "RUNNING",
        "spills to the CPU",
        "95% interval",
        "How sure",
    ):
        assert text in md, text
    # Trials that did not load say so, with the server's message, and never show 0 tok/s.
    assert "did not load (out of memory)" in md and "cudaMalloc failed" in md
    assert not re.search(r"\|\s*0\.0\s*\|", md)


def test_size_vram_fallback_is_explained(tmp_path, normal_report):
    records = [replace(r, vram_source="size_vram") for r in normal_study()]
    meta = make_meta()
    reason = "the server at 'http://gpu-box:11434' is on another host, so NVML here cannot see its GPUs"
    meta = replace(meta, fingerprint={**meta.fingerprint, "vram_source": "none", "vram_note": reason})
    write_report(meta, records, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "`size_vram`, not from NVML" in md and "is on another host" in md
    assert "not from NVML" not in (normal_report[0] / "report.md").read_text()


def test_report_without_any_feasible_trial(tmp_path):
    records = [trial(i, Q8, 49, c) for i, c in enumerate((16384, 32768))]
    written = write_report(make_meta(), records, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "No feasible setting was found" in md and "out of memory" in md
    assert "best" not in written and not list(tmp_path.glob("*.Modelfile"))
    assert (tmp_path / "report.html").is_file() and (tmp_path / "pareto.png").is_file()


def test_stale_artifacts_from_an_earlier_run_are_removed(tmp_path):
    write_report(make_meta(), normal_study(), tmp_path)
    assert (tmp_path / "best.Modelfile").exists()
    write_report(make_meta(), [trial(1, Q8, 49, 32768)], tmp_path)
    assert not (tmp_path / "best.Modelfile").exists() and not list(tmp_path.glob("pick-*"))


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([], id="empty"),
        pytest.param([trial(0, Q4, 49, 8192)], id="single"),
        pytest.param([trial(0, Q4, 49, 8192, state="RUNNING", decode_tok_s=None)], id="only-running"),
        pytest.param(
            [trial(i, f"tag{i}:latest", 49 - i, 4096 * (1 + i % 3)) for i in range(14)], id="many-tags"
        ),
        pytest.param(
            [
                trial(
                    1,
                    Q4,
                    30,
                    8192,
                    gpu_fraction=float("nan"),
                    cpu_spill=None,
                    ttft_s=float("nan"),
                    prefill_tok_s=float("nan"),
                    decode_cv=float("nan"),
                )
            ],
            id="nan-fields",
        ),
    ],
)
def test_write_report_is_robust(tmp_path, records):
    written = write_report(make_meta(), records, tmp_path)
    assert {"trials.csv", "pareto.png", "report.md", "report.html"} <= set(written)
    assert not re.search(r"\bnan\b", (tmp_path / "report.md").read_text(), re.IGNORECASE)


def test_llama_server_report_writes_commands_and_presets(tmp_path):
    path = "/models/Qwen 14B/qwen2.5-14b-instruct-q4_k_m.gguf"
    meta = make_meta(
        engine="llama-server",
        tags=[path],
        block_count={path: LAYERS},
        context_length={path: 32768},
        engine_args={"binary": "/opt/llama.cpp/bin/llama-server"},
    )
    records = [
        replace(r, tag=path, flash_attn="on", kv_cache_type="q8_0") for r in normal_study() if r.tag == Q4
    ]
    written = write_report(meta, records, tmp_path)
    script = (tmp_path / "best.llama-server.sh").read_text()
    assert "'/models/Qwen 14B/qwen2.5-14b-instruct-q4_k_m.gguf'" in script
    assert "/opt/llama.cpp/bin/llama-server" in script and "--flash-attn on" in script
    assert (
        "llama-server-presets.ini" in written
        and "[qwen2.5-14b-instruct-q4_k_m-fastest]" in written["llama-server-presets.ini"].read_text()
    )
    assert not list(tmp_path.glob("*.Modelfile"))
    assert "best.llama-server.sh" in (tmp_path / "report.md").read_text()
