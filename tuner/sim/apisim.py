"""The simulator's own endpoints (/sim/state, /sim/interference, /sim/power, /sim/reset). A part of Api
(tuner.sim.api), which holds the state they share."""

from __future__ import annotations

import json
from collections.abc import Callable

from tuner.sim.apirequest import error
from tuner.sim.core import Interference, Simulation
from tuner.sim.details import gpu_details
from tuner.sim.power import Throttle, parse_drift
from tuner.sim.registry import local_time, utc_time
from tuner.sim.reply import Reply
from tuner.sim.scheduler import Scheduler


class SimEndpoints:
    # Set by Api.__init__.
    sched: Scheduler
    sim: Simulation
    clock: Callable[[], float]

    # --- the simulator's own -------------------------------------------------------------------
    machine = "sim"  # the simulated machine's name (SimServer machine=): its cards' UUIDs

    def sim_state(self) -> Reply:
        with self.sched.lock:
            self.sched.sweep(self.clock())
            state = self.sched.state()
        for entry in state["loaded"]:
            entry["expires_at"] = local_time(entry["expires_at"])
        for i, (gpu, spec) in enumerate(zip(state["gpus"], self.sim.gpus)):  # the fingerprint's fields
            limit = (gpu.get("telemetry") or {}).get("power_limit_w")
            gpu["details"] = gpu_details(spec, i, self.machine, str(state.get("driver", "")), limit)
        return Reply(200, state)

    def sim_interference(self, body: bytes) -> Reply:
        """POST /sim/interference {"spec": "cpu=1,gpu=2GiB,throttle=HwSlowdown,jitter=0.3"} ("" ends it)."""
        try:
            spec = json.loads(body or b"{}").get("spec", "")
            interference = Interference.parse(str(spec))
        except (ValueError, AttributeError) as exc:
            return error(400, str(exc))
        with self.sched.lock:
            self.sched.sim.interference = interference
        return Reply(200, {"status": "success", "interference": interference.to_json()})

    def sim_power(self, body: bytes) -> Reply:
        """POST /sim/power: faults and conditions for the power model (tuner.sim.power), any subset of
        {"throttle": "AT_S[:DURATION_S[:KIND]]" (AT_S may be "now" or "+S"), "clear": true (ends every
        throttle), "drift_pct_per_hour": 5, "ambient_c": 45, "power_limit_w": 300 (null: board power),
        "advance_s": 600 (idle simulated seconds)}. Answers the model's settings and the simulated clock."""
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
            unknown = set(req) - {
                "throttle",
                "clear",
                "drift_pct_per_hour",
                "ambient_c",
                "power_limit_w",
                "advance_s",
            }
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(sorted(unknown))}: use throttle, clear, drift_pct_per_hour, "
                    "ambient_c, power_limit_w, advance_s"
                )
        except ValueError as exc:
            return error(400, str(exc))
        with self.sched.lock:
            power = self.sim.power
            try:
                power.sync()
                throttle = Throttle.parse(str(req["throttle"]), power.time_s) if "throttle" in req else None
                drift = parse_drift(req["drift_pct_per_hour"]) if "drift_pct_per_hour" in req else None
                advance = float(req.get("advance_s") or 0.0)
                if not (advance >= 0 and advance <= 30 * 86400):
                    raise ValueError(
                        f"Invalid advance_s {req.get('advance_s')!r}: idle seconds from 0 to 2592000"
                    )
                if "ambient_c" in req:
                    power.set_ambient(float(req["ambient_c"]))
                if "power_limit_w" in req:
                    limit = req["power_limit_w"]
                    power.set_power_limit(None if limit is None else float(limit))
            except (TypeError, ValueError) as exc:
                return error(400, str(exc))
            if req.get("clear"):
                power.throttles = []
            if throttle is not None:
                power.throttles.append(throttle)
            if drift is not None:
                power.drift_pct_per_hour = drift
            power.idle(advance)
            return Reply(200, {"status": "success", "power": power.to_json()})

    def sim_reset(self) -> Reply:
        with self.sched.lock:
            self.sched.reset()
        return Reply(200, {"status": "success", "at": utc_time(self.clock())})
