"""The benchmark's Markdown: the targets, per strategy over all runs and per memory mode, then per scenario.
Pure text from scores."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import median

from tuner.bench.run import RunScore
from tuner.bench.truth import ScenarioTruth

PLAIN = ("random", "tpe", "tpe-mv", "gp")  # plain Optuna samplers: what `auto` is compared with
SUMMARY_COLUMNS = (
    "strategy", "runs", "best found / true best: median (worst)", "deployable HV: median (worst)",
    "sim. time to 99% of best: median (reached)", "trials to 99% (median)", "sim. time per study (median)",
    "skips per study; share of sim. time", "failed loads per study; share of sim. time",
    "misjudged feasibility per study (judged feasible / judged infeasible)", "trials where a user would deploy",
    "real ms per trial",
)  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """One strategy's runs, aggregated (over whatever runs it is given)."""

    runs: int
    errors: int
    best_median: float | None
    best_worst: float | None
    hv_median: float | None  # over the whole feasible front
    hv_worst: float | None
    deploy_median: float | None  # over the deployable region
    deploy_worst: float | None
    to_99_median: float
    time_to_99_median: float  # inf when most runs never got there
    reached: int
    sim_s_median: float
    sim_s_total: float
    skips_mean: float
    skip_share: float
    failed_trials_mean: float
    failed_share: float
    false_feasible_mean: float
    false_infeasible_mean: float
    deployable_share: float
    ms_per_trial: float
    budget: int


def _median(values: list[float]) -> float | None:
    return median(values) if values else None


def summarize(scores: Sequence[RunScore]) -> Summary:
    ok = [s for s in scores if not s.error]
    n = len(ok)
    sim_total = sum(s.sim_s for s in ok)
    trials = sum(s.trials for s in ok)

    def mean(get: Callable[[RunScore], float]) -> float:
        return sum(get(s) for s in ok) / n if n else math.nan

    best = [s.best_ratio for s in ok if s.best_ratio is not None]
    hv = [s.hv_ratio for s in ok if s.hv_ratio is not None]
    deploy = [s.hv_deploy for s in ok if s.hv_deploy is not None]
    times = [s.time_to_99_s if s.time_to_99_s is not None else math.inf for s in ok]
    return Summary(
        runs=len(scores), errors=len(scores) - n, best_median=_median(best), best_worst=min(best, default=None),
        hv_median=_median(hv), hv_worst=min(hv, default=None), deploy_median=_median(deploy),
        deploy_worst=min(deploy, default=None),
        to_99_median=median([float(s.trials_to_99) for s in ok]) if ok else math.nan,
        time_to_99_median=median(times) if times else math.nan, reached=sum(1 for s in ok if s.reached),
        sim_s_median=median([s.sim_s for s in ok]) if ok else math.nan, sim_s_total=sim_total,
        skips_mean=mean(lambda s: s.skips), skip_share=sum(s.skip_s for s in ok) / sim_total if sim_total else 0.0,
        failed_trials_mean=mean(lambda s: s.failed_trials),
        failed_share=sum(s.failed_load_s for s in ok) / sim_total if sim_total else 0.0,
        false_feasible_mean=mean(lambda s: s.false_feasible), false_infeasible_mean=mean(lambda s: s.false_infeasible),
        deployable_share=sum(s.deployable_trials for s in ok) / trials if trials else math.nan,
        ms_per_trial=1000 * sum(s.study_s for s in ok) / trials if trials else math.nan,
        budget=max((s.budget for s in scores), default=0),
    )  # fmt: skip


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pair(a: float | None, b: float | None) -> str:
    return f"{_ratio(a)} ({_ratio(b)})"


def _trials(value: float, budget: int) -> str:
    if value != value:  # NaN: no run finished
        return "n/a"
    return "never" if value > budget else f"{value:g}"


def _minutes(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    return "never" if math.isinf(seconds) else f"{seconds / 60:.1f} min"


def summary_row(strategy: str, s: Summary) -> list[str]:
    runs = f"{s.runs}" + (f" ({s.errors} failed)" if s.errors else "")
    return [
        strategy, runs, _pair(s.best_median, s.best_worst), _pair(s.deploy_median, s.deploy_worst),
        f"{_minutes(s.time_to_99_median)} ({s.reached}/{s.runs - s.errors})", _trials(s.to_99_median, s.budget),
        _minutes(s.sim_s_median), f"{s.skips_mean:.1f}; {100 * s.skip_share:.1f}%",
        f"{s.failed_trials_mean:.1f}; {100 * s.failed_share:.1f}%",
        f"{s.false_feasible_mean:.2f} / {s.false_infeasible_mean:.2f}", f"{100 * s.deployable_share:.0f}%",
        f"{s.ms_per_trial:.0f}",
    ]  # fmt: skip


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scenario_rows(truths: Sequence[ScenarioTruth]) -> list[list[str]]:
    rows = []
    for t in truths:
        s = t.scenario
        host = (s.host_ram or "64GiB") + (f", {s.host_bandwidth:g} GB/s" if s.host_bandwidth else "")
        rows.append([
            s.name, s.estimator_error or "1", s.gpus, ", ".join(t.space.tags), s.constraints_text() or "-",
            s.ollama_version, host, str(len(t.points)), str(t.n_feasible), str(len(t.deployable_front)),
            f"{t.best_decode_tok_s:.1f}",
        ])  # fmt: skip
    return rows


def targets(scores: Sequence[RunScore], strategies: Sequence[str]) -> list[list[str]]:
    """Issue 13's targets for `auto`, against this run's numbers."""
    auto = summarize([s for s in scores if s.strategy == "auto"])
    plains = {st: summarize([s for s in scores if s.strategy == st]) for st in strategies if st in PLAIN}
    rows = [
        ["auto's best found / true best >= 0.99 in every run", f"worst {_ratio(auto.best_worst)}",
         "met" if (auto.best_worst or 0) >= 0.99 else "NOT met"],
        ["deployable-region HV median >= 0.98", _ratio(auto.deploy_median),
         "met" if (auto.deploy_median or 0) >= 0.98 else "NOT met"],
        ["deployable-region HV worst >= 0.95", _ratio(auto.deploy_worst),
         "met" if (auto.deploy_worst or 0) >= 0.95 else "NOT met"],
    ]  # fmt: skip
    if plains:
        name, best_plain = min(plains.items(), key=lambda kv: kv[1].time_to_99_median)
        factor = best_plain.time_to_99_median / auto.time_to_99_median if auto.time_to_99_median else math.inf
        rows.append([
            "sim. time to 99% of best: >= 2x less than the best plain Optuna sampler",
            f"auto {_minutes(auto.time_to_99_median)}, {name} {_minutes(best_plain.time_to_99_median)}: "
            f"{factor:.1f}x less", "met" if factor >= 2 else "NOT met",
        ])  # fmt: skip
    rows.append([
        "failed-load time <= 5% of simulated time", f"{100 * auto.failed_share:.1f}%",
        "met" if auto.failed_share <= 0.05 else "NOT met",
    ])  # fmt: skip
    return rows


def render(
    truths: Sequence[ScenarioTruth],
    scores: Sequence[RunScore],
    strategies: Sequence[str],
    skipped: dict[str, str],
    header_lines: Sequence[str] = (),
) -> str:
    """The whole report: header, targets, per-strategy summaries, scenarios, per-scenario matrices, errors."""
    ran = [s for s in strategies if s not in skipped]
    by: dict[tuple[str, str], list[RunScore]] = defaultdict(list)
    for sc in scores:
        by[(sc.scenario, sc.strategy)].append(sc)
    out = ["# Search benchmark", "", *header_lines, ""]
    if "auto" in ran:
        out += ["## Targets (issue 13), for auto over every scenario, seed and memory mode", ""]
        out += [markdown_table(("target", "this run", ""), targets(scores, ran)), ""]
    out += ["## All scenarios x memory modes x seeds, per strategy", ""]
    rows = [summary_row(st, summarize([sc for sc in scores if sc.strategy == st])) for st in ran]
    out += [markdown_table(SUMMARY_COLUMNS, rows), ""]
    for st, why in skipped.items():
        out.append(f"- `{st}` skipped: {why}.")
    modes = sorted({sc.mode for sc in scores}, key=lambda m: (m == "foreign", m))
    for mode in modes:
        label = "foreign memory truth" if mode == "foreign" else f"estimator error x{mode}"
        out += ["", f"### {label}", ""]
        rows = [
            summary_row(st, summarize([sc for sc in scores if sc.strategy == st and sc.mode == mode]))
            for st in ran
        ]
        out += [markdown_table(SUMMARY_COLUMNS, rows)]
    out += ["", "## Scenarios (the noise-free truth)", ""]
    out += [markdown_table(
        ("scenario", "memory", "GPUs", "tags", "constraints", "Ollama", "host", "configs", "feasible",
         "deployable front", "best tok/s"),
        scenario_rows(truths),
    ), ""]  # fmt: skip
    names = list(dict.fromkeys(t.scenario.name for t in truths))
    matrices = (
        ("Best found / true best per scenario, all memory modes: median (worst)",
         lambda s: _pair(s.best_median, s.best_worst)),
        ("Deployable-region HV per scenario, all memory modes: median (worst)",
         lambda s: _pair(s.deploy_median, s.deploy_worst)),
        ("Simulated time to 99% of the best decode: median (runs that reached it)",
         lambda s: f"{_minutes(s.time_to_99_median)} ({s.reached}/{s.runs - s.errors})"),
        ("Simulated time per study: median; failed loads and skips per study: mean",
         lambda s: f"{_minutes(s.sim_s_median)}; {s.failed_trials_mean:.1f} FL; {s.skips_mean:.1f} skip"),
    )  # fmt: skip
    for title, cell in matrices:
        rows = [[name, *(cell(summarize(by.get((name, st), []))) for st in ran)] for name in names]
        out += [f"## {title}", "", markdown_table(("scenario", *ran), rows), ""]
    misses = [
        sc for sc in scores if sc.strategy == "auto" and not sc.error
        and ((sc.best_ratio or 0) < 0.99 or (sc.hv_deploy is not None and sc.hv_deploy < 0.95))
    ]  # fmt: skip
    if "auto" in ran:
        out += ["## auto's runs below 0.99 of the best or 0.95 deployable HV", ""]
        out += [
            f"- {sc.scenario} / {sc.mode} / seed {sc.seed}: best {_ratio(sc.best_ratio)}, "
            f"deployable HV {_ratio(sc.hv_deploy)}, {sc.failed_trials} failed loads, {sc.skips} skips"
            for sc in misses
        ] or ["- none"]
        out.append("")
    errors = [sc for sc in scores if sc.error]
    if errors:
        out += ["## Runs that failed", ""]
        out += [f"- {sc.scenario} / {sc.strategy} / seed {sc.seed}: {sc.error}" for sc in errors[:20]]
        if len(errors) > 20:
            out.append(f"- ... and {len(errors) - 20} more")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
