"""The fixed, versioned prompt set the fidelity measure reads (package data: prompts_<version>.json).

A released version never changes, so two studies that name the same version measured the same text; a new
set is a new file and a new DEFAULT_VERSION. Stored quality results carry the version they used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from tuner.errors import ConfigError

DEFAULT_VERSION = "v1"
KINDS = ("chat", "code", "reasoning", "long")


@dataclass(frozen=True)
class Prompt:
    id: str
    kind: str  # one of KINDS
    text: str  # plain completion text, sent raw (no chat template)


@dataclass(frozen=True)
class PromptSet:
    version: str
    prompts: tuple[Prompt, ...]


def load(version: str = DEFAULT_VERSION) -> PromptSet:
    """The prompt set of `version`; ConfigError naming the versions shipped when there is no such one."""
    name = f"prompts_{version}.json"
    folder = resources.files("tuner.quality")
    shipped = sorted(
        p.name[len("prompts_") : -len(".json")] for p in folder.iterdir() if p.name.startswith("prompts_")
    )
    if version not in shipped:
        raise ConfigError(f"Prompt set '{version}' is not shipped; use one of {', '.join(shipped)}.")
    data = json.loads((folder / name).read_text(encoding="utf-8"))
    prompts = tuple(Prompt(str(p["id"]), str(p["kind"]), str(p["text"])) for p in data["prompts"])
    return PromptSet(str(data["version"]), prompts)
