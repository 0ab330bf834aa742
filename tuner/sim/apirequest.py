"""The simulator's request parsing, as Ollama's (gin's ShouldBindJSON) does it, and its error replies."""

from __future__ import annotations

import json
from typing import Any

from tuner.sim.reply import Reply


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


_GO_TYPES = {str: "string", bool: "bool", dict: "object", list: "array"}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse_body(raw: bytes, struct: str, types: dict[str, type]) -> dict[str, Any]:
    """gin ShouldBindJSON: empty -> 'missing request body'; bad JSON or a wrongly typed field -> 400."""
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid character looking for beginning of value ({exc.msg})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"json: cannot unmarshal {_json_kind(body)} into Go value of type api.{struct}")
    for key, want in types.items():
        val = body.get(key)
        if val is None:
            continue
        ok = isinstance(val, want) and not (want is not bool and isinstance(val, bool))
        if not ok:
            raise BadRequest(
                f"json: cannot unmarshal {_json_kind(val)} into Go struct field {struct}.{key} of type {_GO_TYPES[want]}"
            )
    return body
