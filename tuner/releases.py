"""Ollama release numbers and their eras, the one place that says which release belongs to which. Pure.

Era A (<= 0.12.10): llm/memory.go estimateGPULayers decides placement; /api/ps shows the estimate.
Era B (0.12.11 - 0.24.x): the layout/fit loop (there is no 0.25 - 0.29).
Era C (>= 0.30): Ollama runs llama.cpp's llama-server, which places the layers itself (--fit).
"""

from __future__ import annotations

import re

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?$")


def parse_version(text: str) -> tuple[int, int, int]:
    match = _VERSION_RE.match(str(text).strip())
    if not match:
        raise ValueError(
            f"Invalid Ollama version {text!r}: use a release number such as '0.12.10' or '0.32.0'."
        )
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    if (major, minor, patch) < (0, 1, 0):
        raise ValueError(f"Invalid Ollama version {text!r}: use a release number such as '0.12.10'.")
    return major, minor, patch


def era(version: str | tuple[int, int, int]) -> str:
    """'A', 'B' or 'C'."""
    n = parse_version(version) if isinstance(version, str) else version
    if n <= (0, 12, 10):
        return "A"
    if n < (0, 30, 0):
        return "B"
    return "C"


LOGPROBS_SINCE = (0, 12, 11)  # `logprobs` / `top_logprobs` on generate and chat (../shared/ollama-api.md)


def has_logprobs(version: str) -> bool:
    """Whether an Ollama release serves token log-probabilities (0.12.11 on); False for a version it cannot
    read (a development build says so in its own words)."""
    try:
        return parse_version(version) >= LOGPROBS_SINCE
    except ValueError:
        return False
