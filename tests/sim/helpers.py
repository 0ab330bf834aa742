from __future__ import annotations

from typing import Any

import httpx

from tuner.sim import SimServer


def state(server: SimServer) -> dict[str, Any]:
    """GET /sim/state."""
    return httpx.get(server.url + "/sim/state").json()
