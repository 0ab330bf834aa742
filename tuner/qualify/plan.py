"""A qualification plan (studies/<name>.toml, read with tomllib): what to run overnight and how to judge it.

load_plan() reads and checks the file on its own (unknown keys, wrong types, values out of range, criteria
naming an unknown metric or asking what the plan never measures); check_against_models() checks it again
once the engine has described each model (a criterion's context above what the model or the plan can
reach). Both collect every problem and raise one PlanError listing them, one line each, before anything
is loaded. studies/README.md documents every key.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.config import bytes_of, slug
from tuner.errors import ConfigError
from tuner.qualify.metrics import METRICS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_STORAGE = "sqlite:///studies/autotune.db"


class PlanError(ConfigError):
    """A plan that cannot run: every problem, one line each (the CLI prints them and exits 2)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class Criterion:
    id: str  # "c1", "c2", ... in plan order
    metric: str
    min: float | None = None
    max: float | None = None
    num_ctx_at_least: int | None = None  # trial metrics: only trials with num_ctx >= this count
    fully_on_gpu: bool = False  # trial metrics: only trials with no part of the model on the CPU
    models: tuple[str, ...] = ()  # () = every model of the plan
    name: str = ""

    def conditions(self) -> str:
        """Which trials count, in words ('' for all): 'at num_ctx >= 32768 and fully on the GPU'."""
        where = [f"at num_ctx >= {self.num_ctx_at_least}"] if self.num_ctx_at_least else []
        return " and ".join(where + (["fully on the GPU"] if self.fully_on_gpu else []))

    def text(self) -> str:
        bound = f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"
        label = f"{self.metric} {bound} {METRICS[self.metric].unit}".strip()
        return f"{label} {self.conditions()}".strip()

    def applies_to(self, model: str) -> bool:
        return not self.models or model in self.models


@dataclass(frozen=True)
class ModelEntry:
    model: str  # an Ollama tag, or a GGUF path with engine = "llama-server"
    tags: tuple[str, ...] = ()  # Ollama: the tags of the model to compare (default: the model itself)
    budget: int | None = None  # trials; None: the plan's budget_per_model

    @property
    def key(self) -> str:
        return slug(Path(self.model).stem if self.model.endswith(".gguf") else self.model)


@dataclass(frozen=True)
class Plan:
    name: str
    path: str
    models: tuple[ModelEntry, ...]
    criteria: tuple[Criterion, ...] = ()
    engine: str = "ollama"
    host: str | None = None
    llama_server: str | None = None
    storage: str = DEFAULT_STORAGE
    budget_per_model: int = 20
    time_budget_h: float = 8.0
    soak_minutes: float = 30.0
    heat_soak_minutes: float = 5.0
    depth_steps: int = 4
    num_predict: int = 64
    soak_num_predict: int = 128
    drift_pct_per_h: float = 5.0  # a decode trend beyond this (and beyond noise) is flagged
    collapse_fraction: float = 0.7  # SM clock below this share of its soak median: collapsed
    hot_c: float = 83.0  # at or above this a clock drop is thermal, not a collapse
    sampler: str = "auto"
    seed: int = 0
    quality: bool = False
    remeasure_rounds: int = 1
    heartbeat_s: int = 30  # a running trial's heartbeat; one silent for 3 is taken over (a killed run's)
    min_ctx: int | None = None
    max_ctx: int | None = None
    gpu_only: bool = False
    vram_limit_bytes: int | None = None

    def budget_of(self, entry: ModelEntry) -> int:
        return entry.budget or self.budget_per_model


# key: (type(s), check, what a good value looks like)
_NUM = (int, float)
_TOP: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), 'name = "rig-a"'),
    "engine": ((str,), 'engine = "ollama" or "llama-server"'),
    "host": ((str,), 'host = "http://127.0.0.1:11434"'),
    "llama_server": ((str,), 'llama_server = "/opt/llama.cpp/build/bin/llama-server"'),
    "storage": ((str,), 'storage = "sqlite:///studies/autotune.db"'),
    "budget_per_model": ((int,), "budget_per_model = 30"),
    "time_budget_h": (_NUM, "time_budget_h = 8"),
    "soak_minutes": (_NUM, "soak_minutes = 30"),
    "heat_soak_minutes": (_NUM, "heat_soak_minutes = 5"),
    "depth_steps": ((int,), "depth_steps = 4"),
    "num_predict": ((int,), "num_predict = 64"),
    "soak_num_predict": ((int,), "soak_num_predict = 128"),
    "drift_pct_per_h": (_NUM, "drift_pct_per_h = 5"),
    "collapse_fraction": (_NUM, "collapse_fraction = 0.7"),
    "hot_c": (_NUM, "hot_c = 83"),
    "sampler": ((str,), 'sampler = "auto"'),
    "seed": ((int,), "seed = 0"),
    "quality": ((bool,), "quality = false"),
    "remeasure_rounds": ((int,), "remeasure_rounds = 1"),
    "heartbeat_s": ((int,), "heartbeat_s = 30"),
    "constraints": ((dict,), "[constraints]"),
    "models": ((list,), '[[models]] model = "llama3.1:8b"'),
    "criteria": ((list,), '[[criteria]] metric = "decode_tok_s"'),
}
_CONSTRAINTS: dict[str, tuple[tuple[type, ...], str]] = {
    "min_ctx": ((int,), "min_ctx = 32768"),
    "max_ctx": ((int,), "max_ctx = 65536"),
    "gpu_only": ((bool,), "gpu_only = true"),
    "vram_limit": ((str,), 'vram_limit = "20GiB"'),
}
_MODEL: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), 'model = "llama3.1:8b"'),
    "tags": ((list,), 'tags = ["llama3.1:8b", "llama3.1:8b-instruct-q8_0"]'),
    "budget": ((int,), "budget = 30"),
}
_CRITERION: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), 'name = "fast at 32k"'),
    "metric": ((str,), 'metric = "decode_tok_s"'),
    "min": (_NUM, "min = 20"),
    "max": (_NUM, "max = 0"),
    "num_ctx_at_least": ((int,), "num_ctx_at_least = 32768"),
    "fully_on_gpu": ((bool,), "fully_on_gpu = true"),
    "models": ((list,), 'models = ["llama3.1:8b"]'),
}
_POSITIVE = {
    "heartbeat_s",
    "budget_per_model",
    "time_budget_h",
    "num_predict",
    "soak_num_predict",
    "drift_pct_per_h",
    "hot_c",
}
_NOT_NEGATIVE = {"soak_minutes", "heat_soak_minutes", "depth_steps", "remeasure_rounds"}


def _typed(
    table: Mapping[str, Any], spec: dict[str, tuple[tuple[type, ...], str]], where: str, problems: list[str]
) -> dict[str, Any]:
    """The keys of `table` that are known and of the right type; a problem line for each other one."""
    good: dict[str, Any] = {}
    for key, value in table.items():
        if key not in spec:
            known = ", ".join(sorted(spec))
            problems.append(f"{where}unknown key '{key}'; the keys here are: {known}.")
            continue
        types, example = spec[key]
        ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
        if not ok:
            problems.append(f"{where}'{key}' is {value!r} ({type(value).__name__}); write e.g. {example}.")
            continue
        good[key] = value
    return good


def load_plan(path: str | Path) -> Plan:
    """Read and check the plan file: PlanError with every problem, one line each."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Plan '{p}' not found; pass a plan file such as studies/rig-a.toml.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read plan '{p}' ({exc.strerror or exc}).") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Plan '{p}' is not valid TOML ({exc}); fix that line.") from exc
    return parse_plan(data, str(p), default_name=p.stem)


def parse_plan(data: Mapping[str, Any], path: str, default_name: str = "plan") -> Plan:
    problems: list[str] = []
    top = _typed(data, _TOP, "", problems)
    for key in _POSITIVE & top.keys():
        if not top[key] > 0:
            problems.append(f"'{key}' is {top[key]}; it must be above 0.")
    for key in _NOT_NEGATIVE & top.keys():
        if not top[key] >= 0:
            problems.append(f"'{key}' is {top[key]}; it must be 0 or more.")
    for key in ("time_budget_h", "soak_minutes", "heat_soak_minutes"):
        if key in top and not math.isfinite(float(top[key])):
            problems.append(f"'{key}' is {top[key]}; write a finite number.")
    if "collapse_fraction" in top and not 0 < top["collapse_fraction"] < 1:
        problems.append(
            f"'collapse_fraction' is {top['collapse_fraction']}; write a share in (0, 1), e.g. 0.7."
        )
    engine = top.get("engine", "ollama")
    if engine not in ("ollama", "llama-server"):
        problems.append(f"'engine' is '{engine}'; write engine = \"ollama\" or \"llama-server\".")
    if "name" in top and not slug(top["name"]):
        problems.append(f"'name' is '{top['name']}'; use letters, digits and dashes.")
    from tuner.study import SAMPLERS  # noqa: PLC0415

    if "sampler" in top and top["sampler"] not in SAMPLERS:
        problems.append(f"'sampler' is '{top['sampler']}'; use one of {', '.join(SAMPLERS)}.")
    cons = _typed(top.get("constraints", {}), _CONSTRAINTS, "[constraints] ", problems)
    vram_limit: int | None = None
    if "vram_limit" in cons:
        vram_limit = bytes_of(cons["vram_limit"])
        if vram_limit is None:
            problems.append(f"[constraints] 'vram_limit' is '{cons['vram_limit']}'; write e.g. \"20GiB\".")
    for key in ("min_ctx", "max_ctx"):
        if key in cons and cons[key] < 1:
            problems.append(f"[constraints] '{key}' is {cons[key]}; it must be above 0.")
    if cons.get("min_ctx") and cons.get("max_ctx") and cons["min_ctx"] > cons["max_ctx"]:
        problems.append(f"[constraints] min_ctx {cons['min_ctx']} is above max_ctx {cons['max_ctx']}.")
    models = _models(top.get("models", []), engine, problems)
    soak = float(top.get("soak_minutes", Plan.soak_minutes))
    criteria = _criteria(top.get("criteria", []), models, soak, cons, problems)
    heat = float(top.get("heat_soak_minutes", Plan.heat_soak_minutes))
    hours = float(top.get("time_budget_h", Plan.time_budget_h))
    soaks_min = len(models) * (soak + heat) if soak > 0 and heat >= 0 else 0.0
    if hours > 0 and soaks_min > hours * 60:
        problems.append(
            f"the soaks alone take {soaks_min:g} min ({len(models)} models x (soak_minutes + heat_soak_minutes)), more "
            f"than time_budget_h = {hours:g} ({hours * 60:g} min); raise time_budget_h or shorten the soaks."
        )
    if problems:
        raise PlanError(path, problems)
    settings = {k: v for k, v in top.items() if k not in ("constraints", "models", "criteria", "name")}
    for key in ("time_budget_h", "soak_minutes", "heat_soak_minutes", "drift_pct_per_h", "hot_c"):
        if key in settings:
            settings[key] = float(settings[key])
    return Plan(
        name=slug(top.get("name", default_name)) or "plan",
        path=path,
        models=tuple(models),
        criteria=tuple(criteria),
        min_ctx=cons.get("min_ctx"),
        max_ctx=cons.get("max_ctx"),
        gpu_only=bool(cons.get("gpu_only", False)),
        vram_limit_bytes=vram_limit,
        **settings,
    )


def _models(raw: list[Any], engine: str, problems: list[str]) -> list[ModelEntry]:
    if not raw:
        problems.append('the plan names no model; add [[models]] tables with model = "...".')
        return []
    entries: list[ModelEntry] = []
    for i, item in enumerate(raw, 1):
        where = f"[[models]] #{i} "
        if not isinstance(item, dict):
            problems.append(f'{where}is {item!r}; write a table: [[models]] model = "llama3.1:8b".')
            continue
        good = _typed(item, _MODEL, where, problems)
        if "model" not in good:
            problems.append(f"{where}has no 'model'; write e.g. model = \"llama3.1:8b\".")
            continue
        tags = good.get("tags", [])
        if not all(isinstance(t, str) and t for t in tags):
            problems.append(f"{where}'tags' must be a list of tag names, e.g. tags = [\"llama3.1:8b\"].")
            tags = []
        if tags and engine != "ollama":
            problems.append(
                f"{where}'tags' are for Ollama; with llama-server list each GGUF file as a model."
            )
        if "budget" in good and good["budget"] < 1:
            problems.append(f"{where}'budget' is {good['budget']}; it must be at least 1.")
        entry = ModelEntry(good["model"], tuple(tags), good.get("budget"))
        if any(e.key == entry.key for e in entries):
            problems.append(f"{where}'{entry.model}' is listed twice; list each model once.")
            continue
        entries.append(entry)
    return entries


def _criteria(
    raw: list[Any], models: list[ModelEntry], soak_minutes: float, cons: dict[str, Any], problems: list[str]
) -> list[Criterion]:
    out: list[Criterion] = []
    names = {m.model for m in models}
    for i, item in enumerate(raw, 1):
        where = f"[[criteria]] #{i} "
        if not isinstance(item, dict):
            problems.append(f'{where}is {item!r}; write a table: [[criteria]] metric = "decode_tok_s".')
            continue
        good = _typed(item, _CRITERION, where, problems)
        metric = good.get("metric")
        if metric is None:
            problems.append(f"{where}has no 'metric'; use one of: {', '.join(METRICS)}.")
            continue
        if metric not in METRICS:
            problems.append(f"{where}metric '{metric}' is unknown; use one of: {', '.join(METRICS)}.")
            continue
        if ("min" in good) == ("max" in good):
            problems.append(f"{where}needs exactly one of 'min' or 'max' (e.g. min = 20).")
            continue
        bound = float(good["min"] if "min" in good else good["max"])
        if not math.isfinite(bound):
            problems.append(f"{where}bound {bound} is not a finite number.")
            continue
        source = METRICS[metric].source
        ctx = good.get("num_ctx_at_least")
        if source == "soak" and ("num_ctx_at_least" in good or "fully_on_gpu" in good):
            problems.append(
                f"{where}'{metric}' is measured by the soak at the recommended config; num_ctx_at_least and "
                "fully_on_gpu are for trial metrics."
            )
        if source == "soak" and soak_minutes == 0:  # (a negative one is its own problem)
            problems.append(f"{where}'{metric}' needs a soak, but soak_minutes is 0; set soak_minutes = 30.")
        if ctx is not None and ctx < 1:
            problems.append(f"{where}'num_ctx_at_least' is {ctx}; it must be above 0.")
        if ctx and cons.get("max_ctx") and ctx > cons["max_ctx"]:
            problems.append(
                f"{where}asks num_ctx >= {ctx}, above the plan's max_ctx {cons['max_ctx']}: it can never pass; "
                "raise [constraints] max_ctx or lower num_ctx_at_least."
            )
        applies = good.get("models", [])
        unknown = [m for m in applies if m not in names]
        if unknown:
            problems.append(f"{where}names model(s) not in the plan: {', '.join(map(str, unknown))}.")
        if metric in ("num_ctx",) and ctx:
            problems.append(f"{where}'num_ctx' with num_ctx_at_least says the same twice; keep min = {ctx}.")
        out.append(
            Criterion(
                id=f"c{i}",
                metric=metric,
                min=float(good["min"]) if "min" in good else None,
                max=float(good["max"]) if "max" in good else None,
                num_ctx_at_least=ctx,
                fully_on_gpu=bool(good.get("fully_on_gpu", False)),
                models=tuple(str(m) for m in applies),
                name=str(good.get("name", "")),
            )
        )
    return out


def check_against_models(plan: Plan, trained_ctx: Mapping[str, int]) -> None:
    """The checks that need each model's trained context (read from the engine, nothing loaded):
    a criterion asking a context above what a model's study can reach can never pass."""
    problems: list[str] = []
    for c in plan.criteria:
        for entry in plan.models:
            if not c.applies_to(entry.model) or entry.model not in trained_ctx:
                continue
            top = min(trained_ctx[entry.model], plan.max_ctx or trained_ctx[entry.model])
            wanted = c.num_ctx_at_least or (int(c.min) if c.metric == "num_ctx" and c.min else None)
            if wanted and wanted > top:
                problems.append(
                    f"criterion {c.id} ({c.text()}) asks num_ctx >= {wanted}, but '{entry.model}' reaches at most "
                    f"{top}: it can never pass; lower it or limit the criterion with models = [...]."
                )
    if plan.min_ctx:
        for entry in plan.models:
            if entry.model in trained_ctx and plan.min_ctx > trained_ctx[entry.model]:
                problems.append(
                    f"[constraints] min_ctx {plan.min_ctx} is above the trained context of '{entry.model}' "
                    f"({trained_ctx[entry.model]}); no config of it can qualify."
                )
    if problems:
        raise PlanError(plan.path, problems)
