"""Before the night starts: open the plan's engine once, read each model's description (nothing is loaded),
and refuse a plan whose criteria no model could meet (tuner.qualify.plan.check_against_models)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tuner.config import Timeouts
from tuner.errors import BackendError
from tuner.fingerprint import fingerprint
from tuner.qualify.plan import Plan, check_against_models
from tuner.qualify.runner import Engine, Variants
from tuner.tunesetup import build_backend, resolve_variants


def with_overrides(
    plan: Plan, engine: str | None, host: str | None, llama_server: str | None, storage: str | None
) -> Plan:
    """The command line's --engine/--host/--llama-server/--storage over the plan's own keys."""
    changes: dict[str, Any] = {
        k: v
        for k, v in (("engine", engine), ("host", host), ("llama_server", llama_server), ("storage", storage))
        if v is not None
    }
    return replace(plan, **changes) if changes else plan


def open_engine(plan: Plan) -> Engine:
    """The backend and probe for the plan's engine; Unreachable (one line) if the engine is not there."""
    backend, probe = build_backend(plan.engine, plan.host, plan.llama_server, Timeouts())
    try:
        server = backend.server_info()
        return Engine(backend, probe, server, fingerprint(probe, server))
    except BaseException:
        backend.close()
        probe.close()
        raise


def describe_models(plan: Plan, engine: Engine) -> Variants:
    """Each model's variants and descriptions; a model the engine does not have is recorded (the plan goes
    on without it). Then the plan's criteria are checked against the models' trained contexts."""
    out = Variants()
    for entry in plan.models:
        try:
            tags = ",".join(entry.tags) if entry.tags else None
            variants = resolve_variants(engine.backend, plan.engine, (entry.model,), None, tags, False)
            out.infos[entry.model] = {v: engine.backend.model_info(v) for v in variants}
        except BackendError as exc:  # not found, or the server's error about this model: recorded, not fatal
            out.errors[entry.model] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    check_against_models(
        plan, {m: min(i.context_length for i in infos.values()) for m, infos in out.infos.items() if infos}
    )
    return out
