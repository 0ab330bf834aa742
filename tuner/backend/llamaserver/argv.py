"""A trial's EngineOptions as llama-server's command line, using only the flags this build lists in --help.
Pure: the help text and the version output are inputs."""

from __future__ import annotations

import re

from tuner.backend.base import AUTO, EngineOptions

_VERSION_RE = re.compile(r"^version:\s*(.+?)\s*$", re.M)  # "version: 0.5.0-dev (build 0, commit 0c1e570)"


def supports(help_text: str, flag: str) -> bool:
    """Whether `--help` lists `flag` (as one of a comma-separated group of spellings)."""
    return re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=]|$)", help_text, re.M) is not None


def server_argv(
    binary: str,
    model: str,
    options: EngineOptions,
    *,
    host: str,
    port: int,
    help_text: str,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    argv = [binary, "-m", model, "--host", host, "--port", str(port)]
    argv += ["-c", str(options.num_ctx), "-np", "1"]
    if options.num_gpu != AUTO:
        argv += ["-ngl", str(options.num_gpu)]
        if supports(help_text, "--fit"):
            argv += ["--fit", "off"]  # exactly the placement asked for: fail rather than adjust
    if options.flash_attn is not None:
        argv += ["--flash-attn", options.flash_attn]
    if options.kv_cache_type is not None:
        argv += ["--cache-type-k", options.kv_cache_type, "--cache-type-v", options.kv_cache_type]
    if supports(help_text, "--no-webui"):
        argv.append("--no-webui")
    if re.search(r"4: trace", help_text):
        # since the log-verbosity rework, llama.cpp's own load lines (buffer sizes, offloaded
        # layers) are printed at "trace" only; older builds print them by default
        argv += ["-lv", "4"]
    if supports(help_text, "--cache-ram"):
        argv += ["--cache-ram", "0"]  # no host-side prompt cache: it would add to the measured memory
    return argv + list(extra_args)


def version_of(output: str) -> str | None:
    """The build string `--version` prints ('0.5.0-dev (build 0, commit 0c1e570)'), or None."""
    m = _VERSION_RE.search(output)
    return m.group(1) if m else None
