"""Ollama's server-level knobs: which exist in a release, their defaults, and the files that apply them. Pure.

Read from each release's envconfig/config.go (v0.12.10, v0.24.0, v0.32.15):

    variable                 exists     default                      read as
    OLLAMA_FLASH_ATTENTION   all three  off (a per-model default      BoolWithDefault: 1/true/0/false
                                        in 0.12.x; auto in Era C)
    OLLAMA_KV_CACHE_TYPE     all three  "" (= f16)                   f16 | q8_0 | q4_0
    OLLAMA_NUM_PARALLEL      all three  1                            slots per model
    OLLAMA_MAX_QUEUE         all three  512                          requests pending the scheduler
    OLLAMA_SCHED_SPREAD      all three  false                        spread a model over every GPU
    OLLAMA_NEW_ENGINE        A and B    false                        gone in Era C (0.30 on)
    OLLAMA_CONTEXT_LENGTH    all three  4096 in 0.12.10; 0 (= by VRAM tier 4k/32k/256k) from 0.24.0

At startup `ollama serve` logs every value it read: `msg="server config" env="map[KEY:VALUE ...]"`
(server/routes.go, `envconfig.Values()`, each value `fmt.Sprintf("%v")`); `parse_server_config` reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuner.releases import era, parse_version

KV_TYPES = ("f16", "q8_0", "q4_0")
# server/sched.go: these architectures (and every embedding model) get one slot whatever OLLAMA_NUM_PARALLEL says
FORCED_ONE_SLOT = ("mllama", "qwen3vl", "qwen3vlmoe", "qwen35", "lfm2", "nemotron_h", "bert", "nomic-bert")


@dataclass(frozen=True)
class Knob:
    env: str
    default: str  # as `ollama serve` logs it when unset
    until: tuple[int, int, int] | None = None  # the last release that has it (None: still there)


def knobs(version: str) -> dict[str, Knob]:
    """The server knobs this release reads, by variable name."""
    v = parse_version(version)
    table = [
        Knob("OLLAMA_FLASH_ATTENTION", "false"),
        Knob("OLLAMA_KV_CACHE_TYPE", ""),
        Knob("OLLAMA_NUM_PARALLEL", "1"),
        Knob("OLLAMA_MAX_QUEUE", "512"),
        Knob("OLLAMA_SCHED_SPREAD", "false"),
        Knob("OLLAMA_NEW_ENGINE", "false", until=(0, 29, 99)),
        Knob("OLLAMA_CONTEXT_LENGTH", "4096" if v <= (0, 12, 10) else "0"),
    ]
    return {k.env: k for k in table if k.until is None or v <= k.until}


@dataclass(frozen=True)
class ServerSettings:
    """The server environment autotune chose; None leaves the release's default."""

    flash_attention: bool | None = None
    kv_cache_type: str | None = None
    num_parallel: int | None = None
    sched_spread: bool | None = None

    def env(self, version: str) -> dict[str, str]:
        """KEY -> VALUE for this release; raises ValueError naming a knob the release does not have."""
        wanted: dict[str, str] = {}
        if self.flash_attention is not None:
            wanted["OLLAMA_FLASH_ATTENTION"] = "1" if self.flash_attention else "0"
        if self.kv_cache_type is not None:
            if self.kv_cache_type not in KV_TYPES:
                raise ValueError(f"KV cache type '{self.kv_cache_type}' is not one of {', '.join(KV_TYPES)}.")
            wanted["OLLAMA_KV_CACHE_TYPE"] = self.kv_cache_type
        if self.num_parallel is not None:
            if self.num_parallel < 1:
                raise ValueError(f"OLLAMA_NUM_PARALLEL {self.num_parallel} must be at least 1.")
            wanted["OLLAMA_NUM_PARALLEL"] = str(self.num_parallel)
        if self.sched_spread is not None:
            wanted["OLLAMA_SCHED_SPREAD"] = "1" if self.sched_spread else "0"
        have = knobs(version)
        for key in wanted:
            if key not in have:
                raise ValueError(f"Ollama {version} (era {era(version)}) has no {key}.")
        return wanted

    def label(self) -> str:
        parts = []
        if self.num_parallel is not None:
            parts.append(f"parallel={self.num_parallel}")
        if self.flash_attention is not None:
            parts.append(f"fa={'on' if self.flash_attention else 'off'}")
        if self.kv_cache_type is not None:
            parts.append(f"kv={self.kv_cache_type}")
        if self.sched_spread is not None:
            parts.append(f"spread={'on' if self.sched_spread else 'off'}")
        return ",".join(parts) or "defaults"


def expected_log_values(env: dict[str, str]) -> dict[str, str]:
    """What `server config` logs for these settings (bools as Go's %v prints them)."""
    out = {}
    for key, value in env.items():
        if key in ("OLLAMA_FLASH_ATTENTION", "OLLAMA_SCHED_SPREAD"):
            out[key] = "true" if value in ("1", "true") else "false"
        else:
            out[key] = value
    return out


def render_env_file(env: dict[str, str]) -> str:
    """KEY=VALUE lines: `set -a; . server.env`, systemd EnvironmentFile=, docker --env-file all read it."""
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))


def render_systemd_dropin(env: dict[str, str]) -> str:
    """/etc/systemd/system/ollama.service.d/autotune.conf; then systemctl daemon-reload and restart ollama."""
    lines = "".join(f'Environment="{k}={v}"\n' for k, v in sorted(env.items()))
    return f"# Written by autotune: the server settings it chose.\n[Service]\n{lines}"


def render_docker_flags(env: dict[str, str]) -> str:
    """`-e KEY=VALUE` flags for `docker run ... ollama/ollama`."""
    return " ".join(f"-e {k}={v}" for k, v in sorted(env.items()))


_CONFIG_RE = re.compile(r'msg="server config" env="map\[(?P<body>.*)\]"')
_KEY_RE = re.compile(r" (?=[A-Za-z][A-Za-z0-9_]*:(?!//))")  # a space before KEY: (not before https://)


def parse_server_config(log_text: str) -> dict[str, str]:
    """The last `server config` line of an `ollama serve` log as KEY -> VALUE; {} when there is none.

    A list value (OLLAMA_ORIGINS:[http://a https://b]) holds spaces and colons; a key is a name followed by
    a colon that does not start '//'."""
    found = _CONFIG_RE.findall(log_text)
    if not found:
        return {}
    out: dict[str, str] = {}
    for token in _KEY_RE.split(found[-1]):
        key, _, value = token.partition(":")
        out[key] = value
    return out
