"""The shape of a simulated HTTP reply, shared by api.py (who builds it) and server.py (who sends it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> text; None -> empty body
    lines: list[dict[str, Any]] | None = None  # NDJSON stream
    sleeps: list[float] = field(default_factory=list)  # realtime: seconds before each line (or the body)
