"""The report: the only writer of reports/ (and, in plots.py and prediction.py, the only user of matplotlib).

    decide / picks / missing_picks / baseline_comparison   what the study decided   tuner.decision (pure)
    trials_frame(records)            the trials as a DataFrame (the rows of trials.csv)      frame.py
    plot_pareto / plot_speed_vs_num_gpu / plot_vram_vs_num_ctx    the figures (Agg)           plots.py
    plot_predicted_vs_measured / summarize                        estimate against measurement prediction.py
    build_report                     the text, as blocks (first screen; details: sections.py) document.py
    render_markdown / render_html                                 blocks to report.md/.html   render.py
    write_report(meta, records, out_dir)                          everything above, on disk   here

Inputs are schema.StudyMeta and schema.TrialRecord (from study.load_records); the server is never needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tuner.decision.picks import (
    PICK_TITLES,
    BaselineComparison,
    Decision,
    Pick,
    baseline_comparison,
    contenders,
    decide,
    missing_picks,
    pareto_front,
    picks,
)
from tuner.decision.quality import fmt_quality
from tuner.decision.trials import (
    finite,
    fmt_gib,
    fmt_interval,
    fmt_tok_s,
    is_feasible,
    is_measured,
    speed_interval,
)
from tuner.errors import ConfigError
from tuner.modelfile import (
    COMMAND_SUFFIX,
    MODELFILE_SUFFIX,
    render_artifact,
    render_preset_file,
    render_preset_section,
)
from tuner.report.document import Artifact, build_report
from tuner.report.frame import trials_frame
from tuner.report.frontplot import plot_pareto
from tuner.report.plots import figure_png, plot_speed_vs_num_gpu, plot_vram_vs_num_ctx
from tuner.report.prediction import plot_predicted_vs_measured
from tuner.report.render import render_html, render_markdown
from tuner.schema import StudyMeta, TrialRecord

__all__ = [
    "BaselineComparison",
    "Decision",
    "Pick",
    "artifact_filename",
    "baseline_comparison",
    "contenders",
    "decide",
    "is_feasible",
    "is_measured",
    "missing_picks",
    "pareto_front",
    "pick_artifact",
    "picks",
    "speed_interval",
    "plot_pareto",
    "plot_speed_vs_num_gpu",
    "plot_vram_vs_num_ctx",
    "figure_png",
    "trials_frame",
    "write_report",
]

PRESET_FILENAME = "llama-server-presets.ini"
# Files this module owns in a report folder; stale ones from an earlier run are removed before writing.
_OWNED_PATTERNS = (
    "best.Modelfile",
    "best.llama-server.sh",
    "pick-*.Modelfile",
    "pick-*.llama-server.sh",
    PRESET_FILENAME,
)


def artifact_stem(pick_name: str) -> str:
    """ "pick-fastest", "pick-largest-ctx-on-gpu", or "best"."""
    return pick_name if pick_name == "best" else "pick-" + pick_name.replace("_", "-")


def artifact_filename(meta: StudyMeta, pick_name: str) -> str:
    """best.Modelfile / pick-leanest.Modelfile for Ollama, best.llama-server.sh ... for llama-server."""
    suffix = COMMAND_SUFFIX if _engine(meta) == "llama-server" else MODELFILE_SUFFIX
    return f"{artifact_stem(pick_name)}.{suffix}"


def _engine(meta: StudyMeta) -> str:
    """The engine whose artifact to write: llama-server's command line, else a Modelfile (test engines
    such as "fake" behave like Ollama)."""
    return "llama-server" if meta.engine == "llama-server" else "ollama"


def pick_artifact(meta: StudyMeta, pick: Pick) -> tuple[str, str]:
    """(file name, text) of the Modelfile or llama-server script for one pick."""
    r = pick.trial
    suffix, text = render_artifact(
        _engine(meta),
        r.tag,
        r.num_gpu,
        r.num_ctx,
        r.flash_attn,
        r.kv_cache_type,
        comment_lines=_comment_lines(meta, pick),
        binary=str((meta.engine_args or {}).get("binary") or "llama-server"),
        extra_args=_extra_args(meta),
    )
    return f"{artifact_stem(pick.name)}.{suffix}", text


def _extra_args(meta: StudyMeta) -> list[str]:
    """Arguments the study passed to every llama-server it started (engine_args["extra_args"])."""
    extra = (meta.engine_args or {}).get("extra_args") or []
    return [str(a) for a in extra] if isinstance(extra, (list, tuple)) else []


def write_report(meta: StudyMeta, records: Sequence[TrialRecord], out_dir: Path) -> dict[str, Path]:
    """Write trials.csv, the plots, report.md, report.html and the picks' artifacts into out_dir.

    Returns {file name: path} for every file written ("trials.csv", "pareto.png", "report.html",
    "pick-fastest.Modelfile", ...), plus the key "best" for the best artifact (best.Modelfile or
    best.llama-server.sh) when some trial is feasible. Works with no feasible trial, a single trial, NaN
    fields and unfinished trials.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for pattern in _OWNED_PATTERNS:
        for stale in out_dir.glob(pattern):
            if stale.is_file():
                stale.unlink()
    records = list(records)
    decision = decide(meta, records)
    chosen = decision.picks
    written: dict[str, Path] = {}

    written["trials.csv"] = out_dir / "trials.csv"
    trials_frame(records).to_csv(written["trials.csv"], index=False)

    images: dict[str, tuple[str, bytes]] = {}
    figures = {
        "pareto": plot_pareto(meta, records, chosen),
        "speed": plot_speed_vs_num_gpu(meta, records),
        "vram": plot_vram_vs_num_ctx(meta, records),
    }
    predicted = plot_predicted_vs_measured(meta, records)
    if predicted is not None:
        figures["predicted"] = predicted
    names = {
        "pareto": "pareto.png",
        "speed": "speed_vs_num_gpu.png",
        "vram": "vram_vs_num_ctx.png",
        "predicted": "predicted_vs_measured.png",
    }
    for key, fig in figures.items():
        png = figure_png(fig)
        path = out_dir / names[key]
        path.write_bytes(png)
        written[names[key]] = path
        images[key] = (names[key], png)

    artifacts: dict[str, Artifact] = {}
    for name in decision.names:
        if name in chosen:
            filename, text = pick_artifact(meta, chosen[name])
            artifacts[name] = Artifact(filename, text)
            written[filename] = _write_text(
                out_dir / filename, text, executable=_engine(meta) == "llama-server"
            )
    best = decision.best
    if best is not None:
        filename, text = pick_artifact(meta, Pick("best", best.trial, best.reason))
        artifacts["best"] = Artifact(filename, text)
        written["best"] = written[filename] = _write_text(
            out_dir / filename, text, executable=_engine(meta) == "llama-server"
        )

    extra: list[str] = []
    if _engine(meta) == "llama-server" and chosen:
        preset = _presets(meta, chosen)
        if preset is not None:
            written[PRESET_FILENAME] = _write_text(out_dir / PRESET_FILENAME, preset)
            extra.append(PRESET_FILENAME)

    blocks = build_report(meta, records, decision, artifacts, images, extra)
    written["report.md"] = _write_text(out_dir / "report.md", render_markdown(blocks))
    title = f"autotune report: {meta.model} ({meta.study_name})"
    written["report.html"] = _write_text(out_dir / "report.html", render_html(blocks, title))
    return written


def _write_text(path: Path, text: str, *, executable: bool = False) -> Path:
    path.write_text(text, encoding="utf-8")
    if executable:
        os.chmod(path, 0o755)
    return path


def _presets(meta: StudyMeta, chosen: dict[str, Pick]) -> str | None:
    """One router-mode preset section per pick; None when a model path cannot be written unquoted."""
    sections = []
    try:
        for name, pick in chosen.items():
            r = pick.trial
            stem = Path(r.tag).stem or "model"
            sections.append(
                render_preset_section(
                    f"{stem}-{name.replace('_', '-')}",
                    r.tag,
                    r.num_gpu,
                    r.num_ctx,
                    r.flash_attn,
                    r.kv_cache_type,
                    comment_lines=[pick.reason],
                )
            )
    except ConfigError:
        return None
    return render_preset_file(sections, [f"autotune presets for {meta.model} (study {meta.study_name})"])


def _comment_lines(meta: StudyMeta, pick: Pick) -> list[str]:
    r = pick.trial
    title = "best setting" if pick.name == "best" else f"pick: {PICK_TITLES[pick.name]}"
    fp = meta.fingerprint or {}
    gpus = [g for g in fp.get("gpus") or [] if isinstance(g, dict)]
    gpu_text = (
        ", ".join(f"{g.get('name', '?')} {fmt_gib(g.get('memory_bytes'))}" for g in gpus) or "no GPU recorded"
    )
    server = fp.get("server") or {}
    interval = speed_interval(r)
    measured = [f"decode {fmt_interval(interval)} tok/s"]
    if interval is not None and interval.known:
        measured[0] += f" (95% interval, {interval.n} runs)"
    if finite(r.prefill_tok_s):
        measured.append(f"prefill {fmt_tok_s(r.prefill_tok_s)} tok/s")
    if finite(r.ttft_s):
        measured.append(f"TTFT {r.ttft_s:.2f} s")
    if finite(r.peak_vram_bytes):
        measured.append(f"peak VRAM {fmt_gib(r.peak_vram_bytes)} ({r.vram_source or 'source unknown'})")
    if finite(r.gpu_fraction):
        measured.append(f"{100 * r.gpu_fraction:.0f}% of the model on the GPU")
    if finite(r.quality_kl):
        measured.append(f"quality loss {fmt_quality(r)} against the most precise tag")
    lines = [
        f"autotune {title} for {meta.model}",
        f"study '{meta.study_name}', trial #{r.number}: {pick.reason}",
        "measured: " + ", ".join(measured),
        f"on {gpu_text}; {server.get('engine', meta.engine)} {server.get('version', '')}".rstrip(),
    ]
    if r.num_gpu < 0:
        lines.append("num_gpu is not set: the engine places the layers itself, as it did when measured")
    else:
        lines.append(f"num_gpu {r.num_gpu} = layers on the GPU; num_ctx {r.num_ctx} = context tokens")
    return lines
