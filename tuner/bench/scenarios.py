"""The benchmark's scenarios: the situations (GPUs, model, tags, constraints, Ollama release) read from TOML.

A scenarios file holds an optional `[defaults]` table and one `[[scenario]]` table per situation:

    [defaults]                      # any scenario key but name; a scenario's own value wins
    ollama_version = "0.12.10"

    [[scenario]]
    name = "2x4090-llama3.3-70b"    # required, unique; letters, digits, . _ -
    gpus = "2xRTX4090"              # required; as `python -m tuner.sim --gpus` ("2x24GiB", "8xA800-80GB", ...)
    model = "llama3.3:70b"          # required; a catalog model (tuner.sim.catalog)
    quant = ["q4_K_M", "q8_0"]      # optional: like --quant (a list or "q4_K_M,q8_0")
    tags = ["llama3.3:70b-instruct-q8_0"]  # optional: like --tags (wins over quant)
    host_ram = "128GiB"             # optional: the simulated host's RAM (simulator default 64GiB)
    host_bandwidth = 83             # optional: the host's memory bandwidth in GB/s (simulator default 80)
    estimator_error = 2             # optional: run only at this memory truth (a scale >= 0 on the estimator's
                                    # hidden error, or "foreign"); default: every mode of --errors
    ollama_version = "0.32.0"       # optional: the release the simulator emulates (default 0.12.10)
    min_ctx = 32768                 # optional: like --min-ctx (also the bottom of the context ladder)
    max_ctx = 131072                # optional: like --max-ctx (top of the context ladder)
    vram_limit = "20GiB"            # optional: like --vram-limit
    gpu_only = true                 # optional: like --gpu-only
    baseline_ctx = 131072           # optional: like --baseline-ctx (only `auto` runs a baseline trial)
    note = "why this scenario"      # optional: shown in the report

A bad file is a ConfigError (exit 2) that names the file, the scenario and the key, and quotes the value.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuner.config import bytes_of
from tuner.errors import ConfigError
from tuner.units import GiB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_SCENARIOS = Path(__file__).with_name("scenarios.toml")
DEFAULT_OLLAMA_VERSION = "0.12.10"
QUANTS = ("q4_0", "q4_K_M", "q8_0", "fp16")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
KEYS = (
    "name", "gpus", "model", "quant", "tags", "host_ram", "host_bandwidth", "estimator_error", "ollama_version",
    "min_ctx", "max_ctx", "vram_limit", "gpu_only", "baseline_ctx", "note",
)  # fmt: skip
MEMORY_MODES = ("0", "1", "2", "foreign")  # the benchmark's default --errors
REQUIRED = ("name", "gpus", "model")


@dataclass(frozen=True)
class Scenario:
    name: str
    gpus: str
    model: str
    quant: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    host_ram: str | None = None
    host_bandwidth: float | None = None
    estimator_error: str | None = None  # "0", "1", "2" (a scale), "foreign"; None: every mode of the run
    ollama_version: str = DEFAULT_OLLAMA_VERSION
    min_ctx: int | None = None
    max_ctx: int | None = None
    vram_limit_bytes: int | None = None
    gpu_only: bool = False
    baseline_ctx: int | None = None
    note: str = ""

    @property
    def memory(self) -> tuple[float, str]:
        """(estimator_error, memory_truth) for the simulator: "foreign" or a scale on the estimator's error."""
        mode = self.estimator_error or "1"
        return (1.0, "foreign") if mode == "foreign" else (float(mode), "estimator")

    def constraints_text(self) -> str:
        """The constraints as the CLI flags that set them ('' when none)."""
        parts = []
        if self.min_ctx:
            parts.append(f"--min-ctx {self.min_ctx}")
        if self.max_ctx:
            parts.append(f"--max-ctx {self.max_ctx}")
        if self.vram_limit_bytes:
            parts.append(f"--vram-limit {self.vram_limit_bytes / GiB:g}GiB")
        if self.gpu_only:
            parts.append("--gpu-only")
        return " ".join(parts)


class _Where:
    """Names the place of a bad value in error messages."""

    def __init__(self, path: str, index: int | None, name: str | None) -> None:
        self.path, self.index, self.name = path, index, name

    def fail(self, key: str, value: Any, what: str) -> ConfigError:
        if self.index is None:
            where = "[defaults]"
        else:
            where = f"scenario #{self.index + 1}" + (f" '{self.name}'" if self.name else "")
        return ConfigError(f"Scenarios file '{self.path}': {where}: {key} = {value!r} {what}.")


def _text(where: _Where, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail(key, value, 'is not a non-empty string; quote it, e.g. gpus = "2xRTX4090"')
    return value.strip()


def _count(where: _Where, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise where.fail(key, value, f"is not a positive whole number; use e.g. {key} = 32768")
    return value


def _names(where: _Where, key: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items) or not items:
        raise where.fail(key, value, f'is not a list of names; use e.g. {key} = ["q4_K_M", "q8_0"]')
    return tuple(i.strip() for i in items)


def _check_value(where: _Where, key: str, value: Any) -> Any:
    """The parsed value of one key, or a ConfigError naming it."""
    from tuner.sim import Simulation, lookup, make_host, parse_gpus  # noqa: PLC0415 - heavy, and only here

    if key in ("name", "gpus", "model", "host_ram", "ollama_version", "vram_limit"):
        text = _text(where, key, value)
        if key == "name" and not _NAME_RE.match(text):
            raise where.fail(key, value, "may hold only letters, digits, '.', '_' and '-'")
        if key == "gpus":
            try:
                parse_gpus(text)
            except ValueError as exc:
                raise where.fail(key, value, f"is not a GPU list ({exc})") from None
        if key == "model" and lookup(text) is None:
            raise where.fail(key, value, 'is not in the simulator\'s catalog; use e.g. model = "llama3.1:8b"')
        if key == "host_ram":
            try:
                make_host(text)
            except ValueError as exc:
                raise where.fail(key, value, f"is not a RAM size ({exc})") from None
        if key == "ollama_version":
            try:
                Simulation("1x24GiB", version=text, noise=0)
            except ValueError:
                raise where.fail(
                    key, value, 'is not an Ollama release; use e.g. ollama_version = "0.12.10"'
                ) from None
        if key == "vram_limit":
            size = bytes_of(text)
            if not size:
                raise where.fail(key, value, 'is not a size; use e.g. vram_limit = "20GiB"')
            return size
        return text
    if key in ("min_ctx", "max_ctx", "baseline_ctx"):
        return _count(where, key, value)
    if key == "host_bandwidth":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise where.fail(key, value, "is not a positive number of GB/s; use e.g. host_bandwidth = 83")
        return float(value)
    if key == "estimator_error":
        return memory_mode(value, lambda why: where.fail(key, value, why))
    if key == "gpu_only":
        if not isinstance(value, bool):
            raise where.fail(key, value, "is not true or false")
        return value
    if key == "quant":
        quants = _names(where, key, value)
        for q in quants:
            if q not in QUANTS:
                raise where.fail(key, value, f"holds '{q}', not one of {', '.join(QUANTS)}")
        return quants
    if key == "tags":
        tags = _names(where, key, value)
        for t in tags:
            if lookup(t) is None:
                raise where.fail(key, value, f"holds '{t}', which is not in the simulator's catalog")
        return tags
    if key == "note":
        if not isinstance(value, str):
            raise where.fail(key, value, "is not a string")
        return value
    raise AssertionError(key)


def memory_mode(value: Any, fail: Callable[[str], Exception]) -> str:
    """A memory truth as text: a scale >= 0 on the estimator's hidden error ("0", "1.5") or "foreign"."""
    if value == "foreign":
        return "foreign"
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not number >= 0:
        raise fail('is not a scale >= 0 or "foreign"; use e.g. estimator_error = 2')
    return f"{float(number):g}"


def expand(scenarios: list[Scenario], modes: list[str]) -> list[Scenario]:
    """Each scenario at each memory mode (one that pins its own estimator_error runs at that one only)."""
    return [
        s if s.estimator_error is not None else replace(s, estimator_error=m)
        for s in scenarios
        for m in ([s.estimator_error] if s.estimator_error is not None else modes)
    ]


def _table(where: _Where, raw: Any, allow_name: bool) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise where.fail("scenario" if allow_name else "defaults", raw, "is not a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KEYS or (key == "name" and not allow_name):
            known = ", ".join(k for k in KEYS if allow_name or k != "name")
            raise where.fail(key, value, f"is not a known key; known keys: {known}")
        out[key] = _check_value(where, key, value)
    return out


def parse_scenarios(text: str, path: str = "<text>") -> list[Scenario]:
    """The scenarios in TOML `text` (see the module docstring), checked; ConfigError on the first bad value."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Scenarios file '{path}' is not valid TOML ({exc}).") from None
    for key in doc:
        if key not in ("defaults", "scenario"):
            raise ConfigError(
                f"Scenarios file '{path}': top-level key '{key}' is not known; use [defaults] and [[scenario]]."
            )
    defaults = _table(_Where(path, None, None), doc.get("defaults", {}), allow_name=False)
    raw_list = doc.get("scenario", [])
    if not isinstance(raw_list, list) or not raw_list:
        raise ConfigError(f"Scenarios file '{path}' has no [[scenario]] table; add at least one.")
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_list):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = _Where(path, index, name if isinstance(name, str) else None)
        values = {**defaults, **_table(where, raw, allow_name=True)}
        for key in REQUIRED:
            if key not in values:
                raise ConfigError(
                    f"Scenarios file '{path}': scenario #{index + 1}{f' {name!r}' if name else ''} lacks "
                    f"the required key '{key}'."
                )
        if values["name"] in seen:
            raise where.fail("name", values["name"], "is used by an earlier scenario; names must be unique")
        seen.add(values["name"])
        if values.get("min_ctx") and values.get("max_ctx") and values["min_ctx"] > values["max_ctx"]:
            raise where.fail("min_ctx", values["min_ctx"], f"is above max_ctx = {values['max_ctx']}")
        if "vram_limit" in values:
            values["vram_limit_bytes"] = values.pop("vram_limit")
        scenarios.append(Scenario(**values))
    return scenarios


def load_scenarios(path: str | Path) -> list[Scenario]:
    """The scenarios in the file at `path`; ConfigError when it cannot be read or is bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read scenarios file '{path}' ({exc.strerror or exc}); pass --scenarios with an existing file."
        ) from None
    return parse_scenarios(text, str(path))


def select(scenarios: list[Scenario], names: list[str]) -> list[Scenario]:
    """The scenarios named in `names` (all when empty), in file order; ConfigError for an unknown name."""
    if not names:
        return scenarios
    known = {s.name for s in scenarios}
    for name in names:
        if name not in known:
            raise ConfigError(
                f"--only '{name}' is not a scenario in the file; known: {', '.join(sorted(known))}."
            )
    return [s for s in scenarios if s.name in names]
