"""The benchmark's Markdown: per strategy over all runs, then per scenario. Pure text from scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from tuner.bench.run import RunScore
from tuner.bench.truth import ScenarioTruth

SUMMARY_COLUMNS = (
    "strategy", "runs", "HV ratio median", "HV ratio worst", "trials to 99% best (median)", "reached 99%",
    "sim. time per study (median)", "failed-load share of sim. time", "failed loads per study (mean)",
    "real ms per trial (mean)",
)  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """One strategy's runs, aggregated (over whatever runs it is given)."""

    runs: int
    errors: int
    hv_median: float | None
    hv_worst: float | None
    to_99_median: float
    reached: int
    sim_s_median: float
    failed_share: float
    failed_loads_mean: float
    ms_per_trial: float
    budget: int


def summarize(scores: Sequence[RunScore]) -> Summary:
    ok = [s for s in scores if not s.error]
    hv = [s.hv_ratio for s in ok if s.hv_ratio is not None]
    sim_total = sum(s.sim_s for s in ok)
    trials = sum(s.trials for s in ok)
    return Summary(
        runs=len(scores),
        errors=len(scores) - len(ok),
        hv_median=median(hv) if hv else None,
        hv_worst=min(hv) if hv else None,
        to_99_median=median([float(s.trials_to_99) for s in ok]) if ok else float("nan"),
        reached=sum(1 for s in ok if s.reached),
        sim_s_median=median([s.sim_s for s in ok]) if ok else float("nan"),
        failed_share=sum(s.failed_load_s for s in ok) / sim_total if sim_total else 0.0,
        failed_loads_mean=sum(s.failed_loads for s in ok) / len(ok) if ok else float("nan"),
        ms_per_trial=1000 * sum(s.study_s for s in ok) / trials if trials else float("nan"),
        budget=max((s.budget for s in scores), default=0),
    )


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _trials(value: float, budget: int) -> str:
    if value != value:  # NaN: no run finished
        return "n/a"
    return "never" if value > budget else f"{value:g}"


def _minutes(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds / 60:.1f} min"


def summary_row(strategy: str, s: Summary) -> list[str]:
    runs = f"{s.runs}" + (f" ({s.errors} failed)" if s.errors else "")
    return [
        strategy, runs, _ratio(s.hv_median), _ratio(s.hv_worst), _trials(s.to_99_median, s.budget),
        f"{s.reached}/{s.runs - s.errors}", _minutes(s.sim_s_median), f"{100 * s.failed_share:.1f}%",
        f"{s.failed_loads_mean:.1f}", f"{s.ms_per_trial:.0f}",
    ]  # fmt: skip


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scenario_rows(truths: Sequence[ScenarioTruth]) -> list[list[str]]:
    rows = []
    for t in truths:
        s = t.scenario
        rows.append([
            s.name, s.gpus, ", ".join(t.space.tags), s.constraints_text() or "-", s.ollama_version,
            str(len(t.points)), str(t.n_feasible), str(len(t.front)), f"{t.best_decode_tok_s:.1f}",
        ])  # fmt: skip
    return rows


def render(
    truths: Sequence[ScenarioTruth],
    scores: Sequence[RunScore],
    strategies: Sequence[str],
    skipped: dict[str, str],
    header_lines: Sequence[str] = (),
) -> str:
    """The whole report: header, per-strategy summary, scenarios, per-scenario matrices, errors."""
    ran = [s for s in strategies if s not in skipped]
    by: dict[tuple[str, str], list[RunScore]] = defaultdict(list)
    for sc in scores:
        by[(sc.scenario, sc.strategy)].append(sc)
    out = ["# Search benchmark", "", *header_lines, ""]
    out += ["## All scenarios x seeds, per strategy", ""]
    rows = [summary_row(st, summarize([sc for sc in scores if sc.strategy == st])) for st in ran]
    out += [markdown_table(SUMMARY_COLUMNS, rows), ""]
    for st, why in skipped.items():
        out.append(f"- `{st}` skipped: {why}.")
    out += ["", "## Scenarios (the noise-free truth)", ""]
    out += [markdown_table(
        ("scenario", "GPUs", "tags", "constraints", "Ollama", "configs", "feasible", "true front", "best tok/s"),
        scenario_rows(truths),
    ), ""]  # fmt: skip
    names = [t.scenario.name for t in truths]
    matrices = (
        ("HV ratio per scenario: median (worst)",
         lambda s: f"{_ratio(s.hv_median)} ({_ratio(s.hv_worst)})"),
        ("Trials to 99% of the best feasible decode tok/s: median (runs that reached it)",
         lambda s: f"{_trials(s.to_99_median, s.budget)} ({s.reached}/{s.runs - s.errors})"),
        ("Simulated time per study: median; failed loads per study: mean",
         lambda s: f"{_minutes(s.sim_s_median)}; {s.failed_loads_mean:.1f} FL"),
    )  # fmt: skip
    for title, cell in matrices:
        rows = [[name, *(cell(summarize(by.get((name, st), []))) for st in ran)] for name in names]
        out += [f"## {title}", "", markdown_table(("scenario", *ran), rows), ""]
    errors = [sc for sc in scores if sc.error]
    if errors:
        out += ["## Runs that failed", ""]
        out += [f"- {sc.scenario} / {sc.strategy} / seed {sc.seed}: {sc.error}" for sc in errors[:20]]
        if len(errors) > 20:
            out.append(f"- ... and {len(errors) - 20} more")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
