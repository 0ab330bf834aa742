"""Ollama's /api endpoints as functions from a parsed request to a reply (no sockets; server.py does HTTP).

Each handler returns a Reply: a status and either a JSON object, plain text, an empty body, or a list of
NDJSON lines (streaming). Durations are computed, not slept; `Reply.sleeps` tells a realtime server how long
to wait before each line.

Api holds the state the endpoints share and the generation endpoints; the rest live beside it:

    apirequest.py   request parsing (gin's rules) and error replies
    apimodels.py    the model-management endpoints (tags, ps, show, pull, create, blobs, delete, copy)
    apisim.py       the simulator's own endpoints (/sim/state, /sim/interference, /sim/power, /sim/reset)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tuner.sim import generation as gen
from tuner.sim.apimodels import ModelEndpoints
from tuner.sim.apirequest import BadRequest, error, parse_body
from tuner.sim.apisim import SimEndpoints
from tuner.sim.imported import BlobStore
from tuner.sim.options import DurationError, OptionError, parse_keep_alive, parse_options, runner_options
from tuner.sim.power import gpus_of
from tuner.sim.registry import (
    Registry,
)
from tuner.sim.reply import Reply
from tuner.sim.scheduler import LoadFailed, Scheduler
from tuner.sim.slots import Admission, QueueFull

__all__ = ["CHAT_TYPES", "GEN_TYPES", "Api", "BadRequest", "error", "parse_body"]


GEN_TYPES = {
    "model": str,
    "prompt": str,
    "system": str,
    "template": str,
    "suffix": str,
    "stream": bool,
    "raw": bool,
    "options": dict,
    "context": list,
    "images": list,
    "logprobs": bool,
    "top_logprobs": int,
}
CHAT_TYPES = {
    "model": str,
    "messages": list,
    "stream": bool,
    "options": dict,
    "tools": list,
    "logprobs": bool,
    "top_logprobs": int,
}


class Api(ModelEndpoints, SimEndpoints):
    def __init__(
        self, scheduler: Scheduler, registry: Registry, clock: Callable[[], float], concurrent: bool = False
    ) -> None:
        # concurrent: requests that overlap on the clock share OLLAMA_NUM_PARALLEL slots and queue. Only
        # meaningful when the clock follows the simulated durations (a realtime server, or a test's clock);
        # otherwise back-to-back requests would overlap on paper and each one is served alone.
        self.concurrent = concurrent
        self.sched = scheduler
        self.sim = scheduler.sim
        self.registry = registry
        self.clock = clock
        self.blobs = BlobStore()

    # --- generate / chat -----------------------------------------------------------------------
    def generate(self, raw: bytes) -> Reply:
        return self._completion(raw, chat=False)

    def chat(self, raw: bytes) -> Reply:
        return self._completion(raw, chat=True)

    def _completion(self, raw: bytes, chat: bool) -> Reply:
        try:
            req = parse_body(
                raw, "ChatRequest" if chat else "GenerateRequest", CHAT_TYPES if chat else GEN_TYPES
            )
            keep_alive = parse_keep_alive(req.get("keep_alive"))
        except (BadRequest, DurationError) as exc:
            return error(400, getattr(exc, "message", str(exc)))
        name = req.get("model") or ""
        if not name:  # routes.go: an invalid name answers as a missing model, "until we can change it"
            return error(404, f"model '{name}' not found")
        lm = self.registry.get(name)
        if lm is None:
            return error(404, f"model '{name}' not found")
        if not chat and req.get("raw") and (req.get("template") or req.get("system") or req.get("context")):
            return error(400, "raw mode does not support template, system, or context")
        think = req.get("think")
        if (
            think is not None
            and not isinstance(think, bool)
            and think not in ("high", "medium", "low", "max")
        ):
            return error(
                400,
                f'invalid think value: "{think}" (must be "high", "medium", "low", "max", true, or false)',
            )
        supports_think = "thinking" in lm.file.family.capabilities and self.sim.version.has_thinking
        if think and not supports_think and self.sim.version.has_thinking:
            return error(400, f'"{name}" does not support thinking')
        thinking = supports_think and think is not False
        if req.get("suffix") and "insert" not in lm.file.family.capabilities:
            return error(400, f"registry.ollama.ai/library/{lm.name} does not support insert")
        top = req.get("top_logprobs")
        logprobs_known = self.sim.version.has_logprobs  # older releases ignore both fields
        if (
            logprobs_known
            and isinstance(top, (int, float))
            and not isinstance(top, bool)
            and not 0 <= top <= 20
        ):
            return error(400, "top_logprobs must be between 0 and 20")
        if chat:
            messages = req.get("messages") or []
            empty = len(messages) == 0
        else:
            empty = (req.get("prompt") or "") == ""
        tag = lm.file.tag
        now = self.clock()
        with self.sched.lock:
            if empty and keep_alive == 0:
                self.sched.expire(tag, now)
                return Reply(200, gen.empty_reply(name, now, chat, "unload"))
            options = dict(lm.merged_parameters())
            if req.get("options"):
                options.update(req["options"])
            try:
                opts = parse_options(options)
            except OptionError as exc:
                return error(500, str(exc))
            ropts = runner_options(opts, self.sim.default_num_ctx)
            loads_before = self.sched.counters["loads"]
            try:
                runner, load_s = self.sched.acquire(lm.name, tag, ropts, keep_alive, now)
            except LoadFailed as exc:
                return error(exc.status, exc.message)
            admission = Admission(now + load_s, 1)
            if self.concurrent:  # slots and the queue on the simulated timeline (see tuner.sim.slots)
                loads = self.sched.counters["loads"] != loads_before
                if loads:
                    self.sched.slots.loading(tag, now, load_s, runner.placement.num_parallel)
                try:
                    admission = self.sched.slots.admit(tag, now, loads=loads)
                except QueueFull as exc:
                    return error(503, str(exc))
            if empty:
                self.sched.release(runner, keep_alive, now)
                return Reply(200, gen.empty_reply(name, now, chat, "load"), sleeps=[load_s])
            prompt_text = gen.render_prompt(req, chat, lm)
            result = gen.run(self.sim, runner, prompt_text, opts, req, load_s, thinking, lm)
            result = replace(
                result,
                eval_s=result.eval_s * admission.slowdown(),
                queue_s=max(0.0, admission.start_at - now - load_s),
            )
            if self.concurrent:
                self.sched.slots.occupy(tag, admission.start_at + result.prompt_s + result.eval_s)
            self.sched.counters["generations"] += 1
            self.sched.charge(
                result.prompt_s + result.eval_s + gen.REQUEST_OVERHEAD_S,
                "generation",
                gpus_of(runner.placement.layer_gpu),
                compute_s=result.prompt_s,
                duty=self.sim.gpu_duty(runner.placement, result.prompt_tokens),
            )
            self.sched.release(runner, keep_alive, now)
        stream = req.get("stream") is not False
        return gen.reply(name, now, chat, result, stream, raw_mode=bool(req.get("raw")))

    def version(self) -> Reply:
        return Reply(200, {"version": self.sim.version.text})
