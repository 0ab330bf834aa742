"""A whole budget-6 study on real inference: llama.cpp's llama-server on the CPU, tiny random-weight models.

Checks the results are sane, not fast: tokens/s positive and consistent across repeats, a larger context
costs more memory, and a context far past what memory allows is recorded as infeasible, not a crash.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.engine.conftest import CPU_TEST_ARGS
from tuner.backend.llamaserver import LlamaServerBackend
from tuner.config import MeasureSettings, StudyConfig, ctx_ladder
from tuner.probe import ProcessRssProbe
from tuner.report import write_report
from tuner.runloop import run_study
from tuner.schema import SCHEMA_VERSION, StudyMeta
from tuner.space import Space

pytestmark = pytest.mark.engine


def test_budget_6_study_end_to_end_on_the_cpu(
    llama_server_binary: Path, tiny_models: dict[str, str], tmp_path
):
    backend = LlamaServerBackend(
        llama_server_binary,
        log_dir=tmp_path / "logs",
        extra_args=CPU_TEST_ARGS,
        startup_timeout_s=120,
        memory_limit_bytes=4 * 2**30,  # so a 2M-token context cannot fit
    )
    probe = ProcessRssProbe(lambda: backend.pid)
    tags = (tiny_models["F16"], tiny_models["Q8_0"])
    infos = {t: backend.model_info(t) for t in tags}
    ladder = ctx_ladder(min(i.context_length for i in infos.values()), max_ctx=8192)
    space = Space(tags=tags, max_layers=max(i.max_layers for i in infos.values()), ctx_ladder=tuple(ladder))
    config = StudyConfig(
        model=tags[0],
        tags=tags,
        engine="llama-server",
        budget=6,
        storage=f"sqlite:///{tmp_path}/s.db",
        study_name="engine",
        baseline_ctx=2_000_000,
        measure=MeasureSettings(num_predict=32, max_repeats=5),
    )
    meta = StudyMeta(
        schema_version=SCHEMA_VERSION,
        study_name="engine",
        engine="llama-server",
        model=tags[0],
        tags=list(tags),
        block_count={t: i.block_count for t, i in infos.items()},
        context_length={t: i.context_length for t, i in infos.items()},
        ctx_ladder=ladder,
        budget=6,
        vram_limit_bytes=None,
        min_ctx=None,
        gpu_only=False,
        depth=0.0,
        num_predict=32,
        fingerprint={},
        engine_args={"binary": str(backend.binary)},
    )
    try:
        meta, records = run_study(config, backend, probe, meta, space)
    finally:
        backend.close()
    assert backend.pid is None
    done = [r for r in records if r.state == "COMPLETE"]
    assert len(done) == 6

    baseline = next(r for r in done if r.baseline)
    assert baseline.num_ctx == 2_000_000 and baseline.oom and not baseline.feasible
    assert baseline.decode_tok_s is None and baseline.error  # the server's words, not a 0 tok/s

    measured = [r for r in done if r.decode_tok_s is not None]
    assert len(measured) >= 3
    for r in measured:
        assert r.decode_tok_s > 0 and r.prefill_tok_s > 0 and r.repeats >= 3
        assert r.vram_source == "rss" and r.peak_vram_bytes > 0
        assert r.decode_cv is not None and r.decode_cv >= 0  # its spread is recorded, whatever it is

    by_ctx = {}
    cpu_build = all(r.size_vram_bytes == 0 for r in measured)  # then num_gpu changes nothing
    for r in measured:  # the engine's own buffer accounting: the KV cache grows with the context
        by_ctx.setdefault(r.tag if cpu_build else (r.tag, r.num_gpu), {})[r.num_ctx] = r.size_bytes
    grew = [sorted(v.items()) for v in by_ctx.values() if len(v) > 1]
    assert grew, "the study measured no tag at two contexts"
    for pairs in grew:
        sizes = [s for _, s in pairs]
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]

    paths = write_report(meta, records, tmp_path / "report")
    command = Path(paths["best"]).read_text()
    assert str(backend.binary) in command and " -m " in command and " -c " in command
    assert statistics.median(r.decode_tok_s for r in measured) > 1.0
