"""The report: the only writer of reports/ (and, in plots.py and prediction.py, the only user of matplotlib).

    decide / picks / missing_picks / baseline_comparison   what the study decided   tuner.decision (pure)
    trials_frame(records)            the trials as a DataFrame (the rows of trials.csv)      frame.py
    plot_pareto / plot_speed_vs_num_gpu / plot_vram_vs_num_ctx    the figures (Agg)           plots.py
    plot_predicted_vs_measured / summarize                        estimate against measurement prediction.py
    ladder_figure / concurrency_section     the serving curves and section (meta.concurrency) concurrency.py
    build_report                     the text, as blocks (first screen; details: sections.py) document.py
                                     (machines.py, trialtables.py; table cells: cells.py)
    render_markdown / render_html                                 blocks to report.md/.html   render.py
    write_report(meta, records, out_dir)                          everything above, on disk   here
    report_dir(out, study_name)                                   --out checked before trial 1 here

Inputs are schema.StudyMeta and schema.TrialRecord (from study.load_records); the server is never needed.
Every file is written whole or not at all: each goes to a temporary file beside it first, and only when all
of them are written are they renamed into place (a full disk leaves the previous report as it was).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tuner.decision.energy import fmt_energy
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
from tuner.errors import ConfigError, OutputError
from tuner.modelfile import (
    COMMAND_SUFFIX,
    MODELFILE_SUFFIX,
    render_artifact,
    render_preset_file,
    render_preset_section,
)
from tuner.report.concurrency import IMAGE as CONCURRENCY_PNG
from tuner.report.concurrency import has_ladder, ladder_figure
from tuner.report.document import Artifact, build_report
from tuner.report.frame import trials_frame
from tuner.report.frontplot import plot_pareto
from tuner.report.plots import figure_png, plot_speed_vs_num_gpu, plot_vram_vs_num_ctx
from tuner.report.prediction import plot_predicted_vs_measured
from tuner.report.render import render_html, render_markdown
from tuner.schema import StudyMeta, TrialRecord, honour_limits

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
    "concurrency.png",
    "concurrency.json",
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
        parameters={"num_batch": r.num_batch, "main_gpu": r.main_gpu, "num_thread": r.num_thread},
    )
    return f"{artifact_stem(pick.name)}.{suffix}", text


def _extra_args(meta: StudyMeta) -> list[str]:
    """Arguments the study passed to every llama-server it started (engine_args["extra_args"])."""
    extra = (meta.engine_args or {}).get("extra_args") or []
    return [str(a) for a in extra] if isinstance(extra, (list, tuple)) else []


REPORTS = Path("reports")
_REPORT_MARKS = ("trials.csv", "report.md", "report.html")  # a folder holding one of these is a report's


def safe_name(name: str) -> str:
    """A study name as a folder name: no separators, no leading dots ('../../x' -> 'x')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "study"


def report_dir(out: str | None, study_name: str) -> Path:
    """The report folder, checked before any trial runs: reports/<study> (the name made safe), or --out,
    which must lie inside reports/ unless it is absolute, must not be a file or a folder of other files,
    and must be writable. ConfigError (one line, exit 2) otherwise."""
    if out is None:
        path = REPORTS / safe_name(study_name)
        flag = f"the report folder '{path}'"
    else:
        path = Path(out).expanduser()
        flag = f"--out '{out}'"
        if not path.is_absolute():
            base = (Path.cwd() / REPORTS).resolve()
            resolved = (Path.cwd() / path).resolve()
            if resolved != base and base not in resolved.parents:
                raise ConfigError(
                    f"{flag} is outside reports/; pass a folder under reports/ (e.g. --out reports/mine) or an "
                    "absolute path."
                )
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} is a file, not a folder; pass a folder for the report.")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names and not names & set(_REPORT_MARKS):
            raise ConfigError(
                f"{flag} already holds other files ({', '.join(sorted(names)[:3])}); pass an empty folder or "
                "the folder of an earlier report."
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".autotune-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} is not writable ({exc.strerror or exc}); pass a writable folder.") from exc
    return path


def write_report(meta: StudyMeta, records: Sequence[TrialRecord], out_dir: Path) -> dict[str, Path]:
    """Write trials.csv, the plots, report.md, report.html and the picks' artifacts into out_dir.

    Returns {file name: path} for every file written ("trials.csv", "pareto.png", "report.html",
    "pick-fastest.Modelfile", ...), plus the key "best" for the best artifact (best.Modelfile or
    best.llama-server.sh) when some trial is feasible. Works with no feasible trial, a single trial, NaN
    fields and unfinished trials. A trial that breaks the study's limits is shown infeasible and never
    recommended (schema.honour_limits). All files are written or none (OutputError, one line).
    """
    out_dir = Path(out_dir)
    files = _Staged(out_dir)
    try:
        written = _compose(meta, records, out_dir, files)
        files.commit()
    except OSError as exc:
        files.discard()
        raise OutputError(
            f"Cannot write the report to '{out_dir}' ({exc.strerror or exc}); the previous report is unchanged. "
            "Free some space or fix the folder's permissions, then run 'autotune report' for this study."
        ) from exc
    return written


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Staged:
    """Files written beside their final names first, renamed into place together by commit()."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.temps: list[tuple[Path, Path]] = []

    def write(self, path: Path, data: bytes, *, executable: bool = False) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.", suffix=".tmp")
        self.temps.append((Path(tmp), path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, (0o777 if executable else 0o666) & ~_umask())  # mkstemp's 0600 would hide the report
        return path

    def commit(self) -> None:
        keep = {final.name for _, final in self.temps}
        for pattern in _OWNED_PATTERNS:  # picks of an earlier run that this one does not make
            for stale in self.folder.glob(pattern):
                if stale.is_file() and stale.name not in keep:
                    stale.unlink()
        for tmp, final in self.temps:
            os.replace(tmp, final)
        self.temps = []

    def discard(self) -> None:
        for tmp, _ in self.temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.temps = []


def _compose(
    meta: StudyMeta, records: Sequence[TrialRecord], out_dir: Path, files: _Staged
) -> dict[str, Path]:
    records = [honour_limits(meta, r) for r in records]
    decision = decide(meta, records)
    chosen = decision.picks
    written: dict[str, Path] = {}

    written["trials.csv"] = files.write(
        out_dir / "trials.csv", trials_frame(records).to_csv(index=False).encode("utf-8")
    )

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
        written[names[key]] = files.write(out_dir / names[key], png)
        images[key] = (names[key], png)
    written.update(_concurrency_files(meta, files, out_dir, images))

    artifacts: dict[str, Artifact] = {}
    for name in decision.names:
        if name in chosen:
            filename, text = pick_artifact(meta, chosen[name])
            artifacts[name] = Artifact(filename, text)
            written[filename] = files.write(
                out_dir / filename, text.encode("utf-8"), executable=_engine(meta) == "llama-server"
            )
    best = decision.best
    if best is not None:
        filename, text = pick_artifact(meta, Pick("best", best.trial, best.reason))
        artifacts["best"] = Artifact(filename, text)
        written["best"] = written[filename] = files.write(
            out_dir / filename, text.encode("utf-8"), executable=_engine(meta) == "llama-server"
        )

    extra: list[str] = []
    if _engine(meta) == "llama-server" and chosen:
        preset = _presets(meta, chosen)
        if preset is not None:
            written[PRESET_FILENAME] = files.write(out_dir / PRESET_FILENAME, preset.encode("utf-8"))
            extra.append(PRESET_FILENAME)

    blocks = build_report(meta, records, decision, artifacts, images, extra)
    written["report.md"] = files.write(out_dir / "report.md", render_markdown(blocks).encode("utf-8"))
    title = f"autotune report: {meta.model} ({meta.study_name})"
    written["report.html"] = files.write(out_dir / "report.html", render_html(blocks, title).encode("utf-8"))
    return written


def _concurrency_files(
    meta: StudyMeta, files: _Staged, out_dir: Path, images: dict[str, tuple[str, bytes]]
) -> dict[str, Path]:
    """concurrency.png and concurrency.json when the study ran a concurrency ladder (the curves go into the
    report as images["concurrency"])."""
    if not has_ladder(meta.concurrency):
        return {}
    png = figure_png(ladder_figure(meta.concurrency))
    images["concurrency"] = (CONCURRENCY_PNG, png)
    text = json.dumps({"schema": 1, **meta.concurrency}, indent=2) + "\n"
    return {
        CONCURRENCY_PNG: files.write(out_dir / CONCURRENCY_PNG, png),
        "concurrency.json": files.write(out_dir / "concurrency.json", text.encode("utf-8")),
    }


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
    if finite(r.energy_j_per_token):
        measured.append(f"energy {fmt_energy(r)}")
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
