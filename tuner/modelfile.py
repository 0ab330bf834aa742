"""Render and parse the artifacts a study ends with; pure text, no disk, no network.

For Ollama that is a Modelfile (`ollama create NAME -f best.Modelfile`); for llama.cpp's llama-server it
is the exact command line (a small shell script) and, for router mode, an INI preset section
(`llama-server --models-preset FILE`).

Modelfile rules (parser/parser.go, ../shared/ollama-api.md section 10): instruction names are
case-insensitive, parameter names are case-sensitive `api.Options` keys, `#` starts a comment only at the
start of a line, a value runs to the end of its line unless it is quoted with `"` or `\"\"\"` (which may span
lines), and a file without FROM fails with `no FROM line`.

Preset rules (llama.cpp common/preset.cpp, tools/server/README.md "Model presets"): `[section]` headers,
`key = value` where the key is a long flag without its dashes, comments start with `;` or `#` (also after a
value, so a value cannot hold either), values are taken literally (no quoting) and trimmed.

Slightly over 400 lines, kept whole: render_artifact chooses between the two engines' artifacts, which share
the value checks; each format's grammar is documented once, above.
"""

from __future__ import annotations

import numbers
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tuner.errors import ConfigError
from tuner.schema import AUTO

INSTRUCTIONS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)
_INSTRUCTION_ERROR = "command must be one of " + ", ".join(f'"{name}"' for name in INSTRUCTIONS[:-1])
_INSTRUCTION_ERROR += f', or "{INSTRUCTIONS[-1]}"'

INT_PARAMETERS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "draft_num_predict",
    }
)
FLOAT_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
)
BOOL_PARAMETERS = frozenset({"use_mmap"})
LIST_PARAMETERS = frozenset({"stop"})
DEPRECATED_PARAMETERS = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
    }
)
MESSAGE_ROLES = ("system", "user", "assistant")

FLASH_ATTN_VALUES = ("on", "off", "auto")
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

ENGINES = ("ollama", "llama-server")
MODELFILE_SUFFIX = "Modelfile"
COMMAND_SUFFIX = "llama-server.sh"
PRESET_SUFFIX = "llama-server.ini"


# ---------------------------------------------------------------------------------------------------------
# Modelfile
# ---------------------------------------------------------------------------------------------------------


def render_modelfile(
    tag: str,
    num_gpu: int,
    num_ctx: int,
    comment_lines: Iterable[str] = (),
    parameters: Mapping[str, int | None] | None = None,
) -> str:
    """A Modelfile that `ollama create` accepts: FROM tag, num_gpu (omitted when -1), num_ctx, and the
    per-request integer `parameters` a study searched (num_batch, main_gpu, num_thread; None = left out)."""
    _check_settings(num_gpu, num_ctx)
    extra = {k: v for k, v in (parameters or {}).items() if v is not None}
    for name, value in extra.items():
        if name not in INT_PARAMETERS or not _is_int(value) or value < 0:
            raise ConfigError(
                f"PARAMETER {name} {value!r}: expected a whole number >= 0 of an integer option."
            )
    lines = _comments("#", comment_lines)
    lines.append(f"FROM {_quote_modelfile_value(tag, what='FROM')}")
    if num_gpu != AUTO:
        lines.append(f"PARAMETER num_gpu {int(num_gpu)}")
    lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    lines.extend(f"PARAMETER {name} {int(value)}" for name, value in extra.items())  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict[str, Any]:
    """Parse a Modelfile as `ollama create` would, far enough to check what autotune writes.

    Returns {"from": str, "parameters": {name: int | float | bool | str | list[str]}} plus, when present,
    "template", "system", "adapter", "draft", "renderer", "parser", "requires" (str), "license" (list) and
    "messages" (list of (role, content)). Deprecated parameters are skipped, as Ollama does.
    Raises ConfigError naming the line for anything Ollama would refuse.
    """
    result: dict[str, Any] = {"parameters": {}}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, raw = i + 1, lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        match = re.match(r"([A-Za-z]+)(?:[ \t]+(.*))?$", stripped)
        if not match or match.group(1).lower() not in INSTRUCTIONS:
            raise _parse_error(number, raw, _INSTRUCTION_ERROR)
        name, rest = match.group(1).lower(), (match.group(2) or "").strip()
        if not rest:
            raise _parse_error(number, raw, f"{name.upper()} needs a value")
        key = ""
        if name in ("parameter", "message"):
            sub = re.match(r"([A-Za-z0-9_]+)[ \t]+(.*)$", rest)
            if not sub:
                raise _parse_error(number, raw, f"{name.upper()} needs a name and a value")
            key, rest = sub.group(1), sub.group(2)
            if name == "message" and key not in MESSAGE_ROLES:
                raise _parse_error(
                    number, raw, 'message role must be one of "system", "user", or "assistant"'
                )
        value, i = _read_value(rest, lines, i)
        if name == "from":
            result["from"] = value
        elif name == "parameter":
            _add_parameter(result["parameters"], key, value, number, raw)
        elif name == "message":
            result.setdefault("messages", []).append((key, value))
        elif name == "license":
            result.setdefault("license", []).append(value)
        else:
            result[name] = value
    if "from" not in result:
        raise ConfigError(
            "Modelfile has no FROM line (Ollama: 'no FROM line'); add 'FROM <model tag or path>'."
        )
    return result


def _read_value(rest: str, lines: list[str], i: int) -> tuple[str, int]:
    """The value that starts with `rest` on line i; quoted values may continue on later lines."""
    value = rest.strip()
    for quote in ('"""', '"'):
        if not value.startswith(quote):
            continue
        start = i
        while not (len(value) >= 2 * len(quote) and value.endswith(quote)):
            i += 1
            if i >= len(lines):
                raise _parse_error(start + 1, lines[start], f"unterminated {quote} value")
            value = (value + "\n" + lines[i]).strip()
        return value[len(quote) : -len(quote)], i + 1
    return value, i + 1


def _add_parameter(params: dict[str, Any], name: str, value: str, number: int, raw: str) -> None:
    if name in DEPRECATED_PARAMETERS:
        return
    try:
        if name in INT_PARAMETERS:
            params[name] = int(value, 10)
        elif name in FLOAT_PARAMETERS:
            params[name] = float(value)
        elif name in BOOL_PARAMETERS:
            params[name] = _parse_bool(value)
        elif name in LIST_PARAMETERS:
            params.setdefault(name, []).append(value)
        else:
            raise _parse_error(number, raw, f"unknown parameter '{name}'")
    except ValueError:
        kind = "int" if name in INT_PARAMETERS else "float" if name in FLOAT_PARAMETERS else "bool"
        raise _parse_error(number, raw, f"invalid {kind} value [{value}]") from None


def _parse_bool(value: str) -> bool:
    # Go's strconv.ParseBool
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(value)


def _parse_error(number: int, raw: str, message: str) -> ConfigError:
    return ConfigError(f"Modelfile line {number} {raw.strip()!r}: {message}.")


def _quote_modelfile_value(value: str, *, what: str) -> str:
    if not value or not value.strip():
        raise ConfigError(f"Cannot write an empty {what} value into a Modelfile; pass a model tag or path.")
    if '"""' in value or "\r" in value:
        raise ConfigError(f'Cannot write {what} value {value!r} into a Modelfile: it holds \'"""\' or a CR.')
    needs_quotes = value != value.strip() or any(c in value for c in " \t\n") or value.startswith('"')
    if not needs_quotes:
        return value
    if '"' in value or "\n" in value:
        return f'"""{value}"""'
    return f'"{value}"'


# ---------------------------------------------------------------------------------------------------------
# llama-server
# ---------------------------------------------------------------------------------------------------------


def llama_server_args(
    model_path: str,
    num_gpu: int,
    num_ctx: int,
    flash_attn: str | None = None,
    kv_cache_type: str | None = None,
    binary: str = "llama-server",
    *,
    parallel: int | None = 1,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv for llama-server, as autotune measured it: one slot (-np 1, so -c is the context of a request);
    -ngl is omitted for num_gpu -1 so llama.cpp fits the layers itself."""
    _check_settings(num_gpu, num_ctx)
    if not model_path:
        raise ConfigError("Cannot render a llama-server command without a model path; pass the GGUF file.")
    args = [binary or "llama-server", "-m", model_path]
    if num_gpu != AUTO:
        args += ["-ngl", str(int(num_gpu))]
    args += ["-c", str(int(num_ctx))]
    if parallel is not None:
        args += ["-np", str(int(parallel))]
    if flash_attn is not None:
        args += ["--flash-attn", _check_choice(flash_attn, FLASH_ATTN_VALUES, "flash_attn")]
    if kv_cache_type is not None:
        kv = _check_choice(kv_cache_type, KV_CACHE_TYPES, "kv_cache_type")
        args += ["--cache-type-k", kv, "--cache-type-v", kv]
    return args + [str(a) for a in extra_args]


def render_llama_server_command(
    model_path: str,
    num_gpu: int,
    num_ctx: int,
    flash_attn: str | None = None,
    kv_cache_type: str | None = None,
    binary: str = "llama-server",
    *,
    parallel: int | None = 1,
    extra_args: Sequence[str] = (),
) -> str:
    """The exact shell command line, each word quoted with shlex (paths with spaces survive)."""
    args = llama_server_args(
        model_path,
        num_gpu,
        num_ctx,
        flash_attn,
        kv_cache_type,
        binary,
        parallel=parallel,
        extra_args=extra_args,
    )
    return shlex.join(args)


def render_llama_server_script(
    model_path: str,
    num_gpu: int,
    num_ctx: int,
    flash_attn: str | None = None,
    kv_cache_type: str | None = None,
    binary: str = "llama-server",
    comment_lines: Iterable[str] = (),
    *,
    parallel: int | None = 1,
    extra_args: Sequence[str] = (),
) -> str:
    """A POSIX shell script that runs the command; extra arguments (--host, --port) pass through."""
    command = render_llama_server_command(
        model_path,
        num_gpu,
        num_ctx,
        flash_attn,
        kv_cache_type,
        binary,
        parallel=parallel,
        extra_args=extra_args,
    )
    lines = ["#!/bin/sh", *_comments("#", comment_lines), f'exec {command} "$@"']
    return "\n".join(lines) + "\n"


def render_preset_section(
    name: str,
    model_path: str,
    num_gpu: int,
    num_ctx: int,
    flash_attn: str | None = None,
    kv_cache_type: str | None = None,
    comment_lines: Iterable[str] = (),
    *,
    parallel: int | None = 1,
) -> str:
    """One `[name]` section of a llama-server preset INI (router mode, `--models-preset FILE`)."""
    _check_settings(num_gpu, num_ctx)
    if not name or any(c in name for c in "[]\r\n"):
        raise ConfigError(
            f"Cannot use {name!r} as a preset section name; use one without brackets or newlines."
        )
    lines = _comments(";", comment_lines)
    lines.append(f"[{name}]")
    lines.append(f"model = {_preset_value(model_path)}")
    if num_gpu != AUTO:
        lines.append(f"n-gpu-layers = {int(num_gpu)}")
    lines.append(f"ctx-size = {int(num_ctx)}")
    if parallel is not None:
        lines.append(f"parallel = {int(parallel)}")
    if flash_attn is not None:
        lines.append(f"flash-attn = {_check_choice(flash_attn, FLASH_ATTN_VALUES, 'flash_attn')}")
    if kv_cache_type is not None:
        kv = _check_choice(kv_cache_type, KV_CACHE_TYPES, "kv_cache_type")
        lines += [f"cache-type-k = {kv}", f"cache-type-v = {kv}"]
    return "\n".join(lines) + "\n"


def render_preset_file(sections: Iterable[str], comment_lines: Iterable[str] = ()) -> str:
    """A whole preset INI: a comment header, then the sections from render_preset_section.

    No top-level `version = 1` line: the key is reserved and skipped, and llama-server files keys that
    come before any section under a preset named "default", which then shows up in GET /models.
    """
    header = _comments(";", comment_lines)
    parts = (["\n".join(header) + "\n"] if header else []) + list(sections)
    return "\n".join(parts)


def parse_preset(text: str) -> dict[str, dict[str, str]]:
    """Parse a preset INI with llama.cpp's grammar: {section: {key: value}}; keys before any section go
    to "default", as llama-server does."""
    sections: dict[str, dict[str, str]] = {}
    current = "default"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        header = re.match(r"\[[ \t]*([^\]]+?)[ \t]*\]$", _strip_ini_comment(line))
        if header:
            current = header.group(1)
            sections[current] = {}
            continue
        kv = re.match(r"([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*(.*)$", line)
        if not kv:
            raise ConfigError(f"Preset line {number} {raw.strip()!r}: expected '[section]' or 'key = value'.")
        sections.setdefault(current, {})[kv.group(1)] = _strip_ini_comment(kv.group(2))
    return sections


def _strip_ini_comment(value: str) -> str:
    match = re.search(r"[ \t]*[;#]", value)
    return (value[: match.start()] if match else value).strip()


def _preset_value(value: str) -> str:
    if not value or value != value.strip() or any(c in value for c in ";#\r\n"):
        raise ConfigError(
            f"Cannot write {value!r} into a llama-server preset: values are unquoted, so they cannot hold "
            "';', '#', a newline or surrounding spaces; use the command line (.sh) instead."
        )
    return value


# ---------------------------------------------------------------------------------------------------------
# Either engine
# ---------------------------------------------------------------------------------------------------------


def render_artifact(
    engine: str,
    tag: str,
    num_gpu: int,
    num_ctx: int,
    flash_attn: str | None = None,
    kv_cache_type: str | None = None,
    *,
    comment_lines: Iterable[str] = (),
    binary: str = "llama-server",
    extra_args: Sequence[str] = (),
    parameters: Mapping[str, int | None] | None = None,
) -> tuple[str, str]:
    """(file suffix, text) of the artifact for `engine`; the file is named f"{stem}.{suffix}".

    "ollama" -> ("Modelfile", Modelfile text); "llama-server" -> ("llama-server.sh", shell script).
    """
    if engine == "ollama":
        return MODELFILE_SUFFIX, render_modelfile(tag, num_gpu, num_ctx, comment_lines, parameters)
    if engine == "llama-server":
        script = render_llama_server_script(
            tag, num_gpu, num_ctx, flash_attn, kv_cache_type, binary, comment_lines, extra_args=extra_args
        )
        return COMMAND_SUFFIX, script
    raise ConfigError(f"Unknown engine {engine!r}; expected one of {', '.join(ENGINES)}.")


def _check_settings(num_gpu: int, num_ctx: int) -> None:
    if not _is_int(num_gpu) or num_gpu < AUTO:
        raise ConfigError(f"num_gpu must be an integer >= -1 (-1 = the engine decides), got {num_gpu!r}.")
    if not _is_int(num_ctx) or num_ctx <= 0:
        raise ConfigError(f"num_ctx must be a positive integer (context tokens), got {num_ctx!r}.")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{what} {value!r} is not one of {', '.join(allowed)}.")
    return value


def _comments(prefix: str, comment_lines: Iterable[str]) -> list[str]:
    out = []
    for line in comment_lines:
        for part in str(line).splitlines() or [""]:
            out.append(f"{prefix} {part}".rstrip())
    return out
