"""The simulated server's local models: what /api/tags lists, what pull/create/copy/delete change, and the
/api/show payload. Pure apart from holding the list; timestamps are passed in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tuner.estimate.versions import Version
from tuner.sim.catalog import (
    CATALOG_NAMES,
    DEFAULT_TAGS,
    ModelFile,
    canonical_name,
    lookup,
    normalize_name,
    sha256_hex,
)
from tuner.sim.modelinfo import details, model_info

MODELS_DIR = "/root/.ollama/models"  # where the simulated server keeps its blobs (OLLAMA_MODELS)
_PART = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_NAME_RE = re.compile(rf"^(?:{_PART}/){{0,2}}{_PART}(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{{0,127}})?$")


def valid_name(name: str) -> bool:
    return bool(name) and bool(_NAME_RE.match(name.strip()))


@dataclass
class LocalModel:
    name: str  # as /api/tags shows it ("deepseek-r1:32b", "tuned:latest")
    file: ModelFile
    modified_at: float
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str = ""
    template: str | None = None  # None: the family's template
    license: str | None = None
    parent: str = ""
    created: bool = False
    imported_from: str = ""  # Eras A/B: the blob a GGUF import came from, which /api/show gives as parent

    @property
    def digest(self) -> str:
        if not self.created:
            return self.file.digest
        blob = json.dumps(
            [self.file.tag, self.parameters, self.system, self.template, self.license], sort_keys=True
        )
        return sha256_hex("created:" + self.name + blob)

    @property
    def size(self) -> int:
        extra = len(json.dumps(self.parameters)) + len(self.system) + len(self.template or "") + 512
        return self.file.file_bytes + extra

    def merged_parameters(self) -> dict[str, Any]:
        out = dict(self.file.family.parameters)
        out.update(self.parameters)
        return out


class Registry:
    def __init__(self, local: str | list[str] | tuple[str, ...], now: float) -> None:
        self.models: dict[str, LocalModel] = {}
        if local == "all":
            names = list(CATALOG_NAMES)
        elif local == "default":
            names = list(DEFAULT_TAGS)
        elif local in ("none", ""):
            names = []
        elif isinstance(local, (list, tuple)):
            names = list(local)
        else:
            raise ValueError(
                f"Invalid local models {local!r}: use 'all', 'default', 'none' or a list of tags."
            )
        for i, name in enumerate(names):
            if canonical_name(name) is None:
                raise ValueError(
                    f"Invalid local model {name!r}: not in the simulator's catalog ({', '.join(DEFAULT_TAGS)}, ...)."
                )
            self.add_from_catalog(name, now - 3600 - i)

    @staticmethod
    def key(name: str) -> str:
        return normalize_name(name).lower()

    def get(self, name: str) -> LocalModel | None:
        return self.models.get(self.key(name))

    def add_from_catalog(self, name: str, now: float) -> LocalModel:
        canonical = canonical_name(name)
        mf = lookup(name)
        assert canonical is not None and mf is not None
        lm = LocalModel(canonical, mf, now)
        self.models[self.key(canonical)] = lm
        return lm

    def create(
        self,
        name: str,
        base: LocalModel,
        now: float,
        *,
        parameters: dict[str, Any] | None = None,
        system: str | None = None,
        template: str | None = None,
        license: str | None = None,
        file: ModelFile | None = None,
    ) -> LocalModel:
        display = normalize_name(name)
        params = dict(base.parameters)
        params.update(parameters or {})
        lm = LocalModel(
            display,
            file or base.file,
            now,
            params,
            base.system if system is None else system,
            base.template if template is None else template,
            base.license if license is None else license,
            parent=base.name,
            created=True,
        )
        self.models[self.key(display)] = lm
        return lm

    def add_imported(
        self,
        name: str,
        file: ModelFile,
        now: float,
        *,
        parameters: dict[str, Any] | None = None,
        imported_from: str = "",
    ) -> LocalModel:
        """A model made from an uploaded GGUF (create with `files`)."""
        display = normalize_name(name)
        lm = LocalModel(display, file, now, dict(parameters or {}), created=True, imported_from=imported_from)
        self.models[self.key(display)] = lm
        return lm

    def copy(self, source: LocalModel, destination: str, now: float) -> LocalModel:
        display = normalize_name(destination)
        lm = LocalModel(
            display,
            source.file,
            now,
            dict(source.parameters),
            source.system,
            source.template,
            source.license,
            source.parent,
            source.created,
        )
        self.models[self.key(display)] = lm
        return lm

    def delete(self, name: str) -> bool:
        return self.models.pop(self.key(name), None) is not None

    def listed(self) -> list[LocalModel]:
        return sorted(self.models.values(), key=lambda m: -m.modified_at)


def go_value(value: Any) -> str:
    """Go's %#v for the parameter types Ollama stores."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


def parameters_text(params: dict[str, Any]) -> str:
    lines = []
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        for v in values:
            lines.append(f"{key:<30} {go_value(v)}")
    return "\n".join(lines)


def modelfile_text(lm: LocalModel, params: dict[str, Any], system: str) -> str:
    mf = lm.file
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {lm.name}",
        "",
        f"FROM {MODELS_DIR}/blobs/sha256-{mf.blob_digest}",
        f'TEMPLATE """{lm.template if lm.template is not None else mf.family.template}"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        for v in values:
            text = v if isinstance(v, str) else go_value(v)
            lines.append(f"PARAMETER {key} {text}")
    license_text = lm.license if lm.license is not None else mf.family.license
    if license_text:
        lines.append(f'LICENSE """{license_text}"""')
    return "\n".join(lines) + "\n"


def capabilities(lm: LocalModel, version: Version) -> list[str]:
    caps = list(lm.file.family.capabilities)
    if "thinking" in caps and not version.has_thinking:
        caps.remove("thinking")
    return caps


def show_payload(
    lm: LocalModel,
    version: Version,
    *,
    verbose: bool = False,
    options: dict[str, Any] | None = None,
    system: str | None = None,
) -> dict[str, Any]:
    mf = lm.file
    params = lm.merged_parameters()
    if options:
        params.update(options)
    sys_text = lm.system if system is None else system
    out: dict[str, Any] = {}
    license_text = lm.license if lm.license is not None else mf.family.license
    if license_text:
        out["license"] = license_text
    out["modelfile"] = modelfile_text(lm, params, sys_text)
    if params:
        out["parameters"] = parameters_text(params)
    out["template"] = lm.template if lm.template is not None else mf.family.template
    if sys_text:
        out["system"] = sys_text
    out["details"] = details(mf, lm.parent or lm.imported_from)
    out["model_info"] = model_info(mf, verbose)
    out["tensors"] = [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in mf.tensors]
    out["capabilities"] = capabilities(lm, version)
    out["modified_at"] = local_time(lm.modified_at)
    return out


def tags_entry(lm: LocalModel, version: Version | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": lm.name,
        "model": lm.name,
        "modified_at": local_time(lm.modified_at),
        "size": lm.size,
        "digest": lm.digest,
        "details": details(lm.file, lm.parent),
    }
    if version is not None and version.era == "C":  # seen in 0.32.15, absent in 0.24.0
        entry["details"]["context_length"] = lm.file.arch.context_length
        entry["details"]["embedding_length"] = lm.file.arch.embedding_length
        entry["capabilities"] = capabilities(lm, version)
    return entry


def local_time(epoch: float) -> str:
    """RFC 3339 with the local offset and Go's trimmed fraction ('2026-08-21T03:16:12.5-07:00')."""
    if epoch > 253402300799:  # beyond year 9999: Go's "forever" keep-alive, ~292 years ahead
        epoch = datetime.now().timestamp() + 292 * 365.25 * 86400
    stamp = datetime.fromtimestamp(epoch).astimezone()
    text = stamp.isoformat(timespec="microseconds")
    main, _, rest = text.partition(".")
    frac, offset = rest[:6], rest[6:]
    frac = frac.rstrip("0")
    return f"{main}.{frac}{offset}" if frac else f"{main}{offset}"


def utc_time(epoch: float) -> str:
    """created_at: UTC, RFC 3339 with nanoseconds, trailing zeros trimmed, 'Z'."""
    stamp = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    nanos = f"{int(round((epoch % 1) * 1e9)) % 1_000_000_000:09d}".rstrip("0")
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos}Z" if nanos else f"{base}Z"
