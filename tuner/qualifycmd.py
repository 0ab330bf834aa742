"""`autotune qualify PLAN.toml`: run a qualification plan overnight (the click command; the plan, the runs,
the soak and the summary are tuner.qualify)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import click

from tuner.cliutil import say
from tuner.errors import ConfigError
from tuner.redact import remember_secrets_of

_PLAN_MARKS = {"summary.json", "state", "models", "plan.toml", "plan.json", "fleet.json"}


def _plan_dir(out: str | None, name: str) -> Path:
    """reports/<plan> (or --out): a new folder, or one an earlier run of a plan wrote."""
    from tuner.report import REPORTS, safe_name  # noqa: PLC0415

    path = Path(out).expanduser() if out else REPORTS / safe_name(name)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"The report folder '{path}' is a file; pass a folder with --out.")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names and not names & _PLAN_MARKS:
            raise ConfigError(
                f"The report folder '{path}' holds other files ({', '.join(sorted(names)[:3])}); pass an empty "
                "folder with --out, or the folder of an earlier run of this plan."
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the report folder '{path}' ({exc.strerror or exc}).") from exc
    return path


def _refuse(problems: list[str], path: str) -> NoReturn:
    """An invalid plan: one line per problem, then the closing line (ConfigError: exit 2)."""
    for problem in problems:
        say(f"autotune qualify: {path}: {problem}")
    raise ConfigError(
        f"qualify: the plan '{path}' was not run ({len(problems)} problem(s) above); see studies/README.md for "
        "the format."
    )


@click.command("qualify")
@click.argument("plan_file", metavar="PLAN")
@click.option(
    "--compare",
    "compare_to",
    default=None,
    help="An earlier qualification to compare with: its plan, report folder or summary.json.",
)
@click.option(
    "--engine",
    type=click.Choice(["ollama", "llama-server"]),
    default=None,
    help="Overrides the plan's engine.",
)
@click.option("--host", default=None, help="Ollama URL (overrides the plan's host).")
@click.option(
    "--llama-server", "llama_server", default=None, help="llama-server binary (overrides the plan's)."
)
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (overrides the plan's; default sqlite:///studies/autotune.db).",
)
@click.option("--out", default=None, help="Report folder (default: reports/<plan name>).")
@click.option(
    "--check", is_flag=True, help="Check the plan (and the models it names) and stop before anything loads."
)
@click.option(
    "--summary",
    "fleet_summary",
    is_flag=True,
    help="Run nothing: compare every host that ran the plan on --storage (hosts x models x criteria).",
)
def qualify_cmd(
    plan_file: str,
    compare_to: str | None,
    engine: str | None,
    host: str | None,
    llama_server: str | None,
    storage: str | None,
    out: str | None,
    check: bool,
    fleet_summary: bool,
) -> None:
    """Run the qualification PLAN (studies/<name>.toml): per model a study, a soak at its recommended config,
    the criteria judged; the summary lands in reports/<plan>/. Run it again to continue after a stop."""
    from tuner.qualify.plan import PlanError, load_plan  # noqa: PLC0415
    from tuner.qualify.setup import describe_models, open_engine, with_overrides  # noqa: PLC0415

    for url in (host, storage):
        remember_secrets_of(url)
    try:
        plan = with_overrides(load_plan(plan_file), engine, host, llama_server, storage)
    except PlanError as exc:
        _refuse(exc.problems, plan_file)
    remember_secrets_of(plan.host)
    remember_secrets_of(plan.storage)
    if fleet_summary:
        _fleet(plan, out)
        return
    earlier: dict[str, Any] | None = None
    if compare_to:
        from tuner.qualify.compare import find_summary, load_summary  # noqa: PLC0415

        earlier = load_summary(find_summary(compare_to))
    out_dir = _plan_dir(out, plan.name)
    from tuner.storage import close_storage, make_storage  # noqa: PLC0415

    close_storage(
        make_storage(plan.storage)
    )  # a storage that cannot be opened is found before any server is touched
    eng = open_engine(plan)
    try:
        try:
            variants = describe_models(plan, eng)
        except PlanError as exc:
            _refuse(exc.problems, plan_file)
        if check:
            for model, error in variants.errors.items():
                say(f"note: {model}: {error} (the night would record it as failed and go on)")
            say(f"plan '{plan.name}': {len(plan.models)} models, {len(plan.criteria)} criteria: OK")
            return
        _run(plan, eng, variants, out_dir, earlier)
    finally:
        eng.backend.close()
        eng.probe.close()


def _fleet(plan: Any, out: str | None) -> None:
    """--summary: the fleet's view of the plan from its storage (tuner.qualify.fleet); nothing is run."""
    from tuner.qualify import fleet  # noqa: PLC0415

    data = fleet.build(plan, plan.storage)
    for line in fleet.fleet_lines(data):
        say(line)
    paths = fleet.write(data, _plan_dir(out, plan.name))
    click.echo(f"fleet summary: {paths['fleet.html']}")


def _run(plan: Any, eng: Any, variants: Any, out_dir: Path, earlier: dict[str, Any] | None) -> None:
    from tuner.qualify import compare, summary  # noqa: PLC0415
    from tuner.qualify.runner import PlanRunner  # noqa: PLC0415
    from tuner.qualify.state import write_json  # noqa: PLC0415

    write_json(
        out_dir / "plan.json", {"name": plan.name, "path": plan.path, "fingerprint_id": eng.fingerprint_id}
    )
    say(
        f"autotune qualify {plan.name}: {len(plan.models)} models, {plan.budget_per_model} trials each, "
        f"time budget {plan.time_budget_h:g} h, soak {plan.soak_minutes:g} min; {eng.server.engine} "
        f"{eng.server.version}; machine {eng.fingerprint_id}; reports in {out_dir}"
    )

    written: dict[str, Any] = {}

    def write_summary() -> None:
        data = summary.build(plan, eng.fingerprint, eng.fingerprint_id, plan.storage, out_dir, eng.fleet_id)
        diff = compare.compare(earlier, data) if earlier is not None else None
        if diff is not None:
            data["compare"] = diff
        summary.write(data, out_dir, compare.blocks(diff) if diff is not None else ())
        written.update(data)

    runner = PlanRunner(plan, eng, variants, out_dir, plan.storage, say)
    try:
        runner.run(after_each=write_summary)
    finally:
        write_summary()  # after a stop too: the morning finds what finished
        t = written["totals"]
        say(
            f"summary: {t['done']} done, {t['failed']} failed, "
            + (f"{t['interrupted']} interrupted, " if t.get("interrupted") else "")
            + f"{t['not_run']} not run; {t['passed']} of "
            f"{t['models']} passed every criterion"
        )
    if "compare" in written:
        for line in compare.lines(written["compare"]):
            say(line)
    click.echo(f"summary: {out_dir / 'summary.html'}")
