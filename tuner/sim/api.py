"""Ollama's /api endpoints as functions from a parsed request to a reply (no sockets; server.py does HTTP).

Each handler returns a Reply: a status and either a JSON object, plain text, an empty body, or a list of
NDJSON lines (streaming). Durations are computed, not slept; `Reply.sleeps` tells a realtime server how long
to wait before each line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tuner.sim import generation as gen
from tuner.sim.catalog import lookup
from tuner.sim.core import Interference
from tuner.sim.details import gpu_details
from tuner.sim.imported import BlobError, BlobStore, parse_digest, read_gguf
from tuner.sim.options import DurationError, OptionError, parse_keep_alive, parse_options, runner_options
from tuner.sim.power import Throttle, gpus_of, parse_drift
from tuner.sim.registry import (
    MODELS_DIR,
    Registry,
    local_time,
    show_payload,
    tags_entry,
    utc_time,
    valid_name,
)
from tuner.sim.reply import Reply
from tuner.sim.scheduler import LoadFailed, Scheduler
from tuner.sim.slots import Admission, QueueFull


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


class Api:
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

    # --- model management ----------------------------------------------------------------------
    def tags(self) -> Reply:
        with self.sched.lock:
            return Reply(200, {"models": [tags_entry(m, self.sim.version) for m in self.registry.listed()]})

    def ps(self) -> Reply:
        now = self.clock()
        with self.sched.lock:
            self.sched.sweep(now)
            runners = sorted(self.sched.runners.values(), key=lambda r: -r.expires_at)
            models = []
            for r in runners:
                lm = self.registry.get(r.name)
                mf = lookup(r.tag)
                assert mf is not None
                p = r.placement
                entry: dict[str, Any] = {
                    "name": r.name,
                    "model": r.name,
                    "size": p.size_bytes,
                    "size_vram": p.size_vram_bytes,
                    "digest": lm.digest if lm else mf.digest,
                    "details": {**(tags_entry(lm)["details"] if lm else {}), "parent_model": ""},
                    "expires_at": local_time(r.expires_at),
                }
                if self.sim.version.number >= (0, 11, 0):
                    era_c = self.sim.version.era == "C"
                    entry["context_length"] = p.num_ctx if era_c else r.options["num_ctx"]
                models.append(entry)
        return Reply(200, {"models": models})

    def show(self, raw: bytes) -> Reply:
        try:
            req = parse_body(raw, "ShowRequest", {"model": str, "name": str, "system": str, "options": dict})
        except BadRequest as exc:
            return error(exc.status, exc.message)
        name = req.get("model") or req.get("name") or ""
        if not name:
            return error(400, "model is required")
        if not valid_name(name):
            return error(400, "invalid model name")
        lm = self.registry.get(name)
        if lm is None:
            return error(404, f"model '{name}' not found")
        payload = show_payload(
            lm,
            self.sim.version,
            verbose=bool(req.get("verbose")),
            options=req.get("options"),
            system=req.get("system"),
        )
        return Reply(200, payload)

    def pull(self, raw: bytes) -> Reply:
        try:
            req = parse_body(raw, "PullRequest", {"model": str, "name": str, "stream": bool})
        except BadRequest as exc:
            return error(exc.status, exc.message)
        name = req.get("model") or req.get("name") or ""
        if not valid_name(name):
            return error(400, "invalid model name")
        lines = [{"status": "pulling manifest"}]
        mf = lookup(name)
        if mf is None:
            lines.append({"error": "pull model manifest: file does not exist"})
        else:
            with self.sched.lock:
                existing = self.registry.get(name)
                lines += gen.pull_lines(mf, already=existing is not None) + [{"status": "success"}]
                self.registry.add_from_catalog(name, self.clock())
        return gen.progress_reply(lines, req.get("stream") is not False)

    def create(self, raw: bytes) -> Reply:
        types = {
            "model": str,
            "name": str,
            "from": str,
            "files": dict,
            "parameters": dict,
            "system": str,
            "template": str,
            "quantize": str,
            "stream": bool,
            "messages": list,
            "adapters": dict,
        }
        try:
            req = parse_body(raw, "CreateRequest", types)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        name = req.get("model") or req.get("name") or ""
        if not valid_name(name):
            return error(400, "invalid model name")
        source = req.get("from") or ""
        files = req.get("files") or {}
        if not source and not files:
            return error(400, "neither 'from' or 'files' was specified")
        if not source:
            return self._create_from_files(name, files, req)
        license_text = req.get("license")
        if isinstance(license_text, list):
            license_text = "\n".join(str(x) for x in license_text)
        lines: list[dict[str, Any]] = []
        with self.sched.lock:
            base = self.registry.get(source)
            if base is None:
                mf = lookup(source)
                if mf is None:
                    lines += [
                        {"status": "pulling manifest"},
                        {"error": "pull model manifest: file does not exist"},
                    ]
                    return gen.progress_reply(lines, req.get("stream") is not False)
                lines += [{"status": "pulling manifest"}, *gen.pull_lines(mf, already=False)]
                base = self.registry.add_from_catalog(source, self.clock())
            target_file = base.file
            quantize = req.get("quantize")
            if quantize:
                target = gen.quantized_variant(base.file, quantize)
                if target is None:
                    return error(
                        400,
                        f"unsupported quantization type {quantize}"
                        if base.file.ftype == "F16"
                        else "quantization is only supported for F16 and F32 models",
                    )
                lines.append(
                    {
                        "status": f"quantizing F16 model to {target.ftype}",
                        "total": target.file_bytes,
                        "completed": target.file_bytes,
                    }
                )
                target_file = target
            lines += gen.create_lines(target_file, req)
            self.registry.create(
                name,
                base,
                self.clock(),
                parameters=req.get("parameters"),
                system=req.get("system"),
                template=req.get("template"),
                license=license_text,
                file=target_file,
            )
        return gen.progress_reply(lines + [{"status": "success"}], req.get("stream") is not False)

    def _create_from_files(self, name: str, files: dict[str, Any], req: dict[str, Any]) -> Reply:
        """`ollama create NAME -f Modelfile` with FROM ./file.gguf: the file was uploaded as a blob first."""
        ggufs = [(f, d) for f, d in files.items() if str(f).lower().endswith(".gguf")]
        if not ggufs:
            return error(400, "no Modelfile or safetensors files found")
        fname, digest = ggufs[0]
        try:
            path = self.blobs.path(str(digest))
            if path is None:
                return error(400, f"file {fname} does not exist")  # never uploaded
            mf = read_gguf(path, name, str(digest))
        except BlobError as exc:
            return error(400, str(exc))
        lines: list[dict[str, Any]] = [{"status": "parsing GGUF"}]
        lines += gen.create_lines(mf, req)
        # /api/show in Eras A/B names the blob a GGUF was imported from as its parent model; Era C does not.
        source = "" if self.sim.version.era == "C" else f"{MODELS_DIR}/blobs/sha256-{mf.blob_digest}"
        with self.sched.lock:
            self.registry.add_imported(
                name, mf, self.clock(), parameters=req.get("parameters"), imported_from=source
            )
        return gen.progress_reply(lines + [{"status": "success"}], req.get("stream") is not False)

    def blob_head(self, digest: str) -> Reply:
        try:
            return Reply(200 if self.blobs.path(digest) else 404, None)
        except BlobError as exc:
            return error(400, str(exc))

    def blob_post(self, digest: str, raw: bytes) -> Reply:
        try:
            parse_digest(digest)
            if self.blobs.path(digest) is None:
                self.blobs.put(digest, raw)
        except BlobError as exc:
            return error(400, str(exc))
        return Reply(201, None)

    def delete(self, raw: bytes) -> Reply:
        try:
            req = parse_body(raw, "DeleteRequest", {"model": str, "name": str})
        except BadRequest as exc:
            return error(exc.status, exc.message)
        name = req.get("model") or req.get("name") or ""
        if not valid_name(name):
            return error(400, f'name "{name}" is invalid')
        with self.sched.lock:
            if not self.registry.delete(name):
                return error(404, f"model '{name}' not found")
        return Reply(200, None)

    def copy(self, raw: bytes) -> Reply:
        try:
            req = parse_body(raw, "CopyRequest", {"source": str, "destination": str})
        except BadRequest as exc:
            return error(exc.status, exc.message)
        src, dst = req.get("source") or "", req.get("destination") or ""
        if not valid_name(dst):
            return error(400, f'name "{dst}" is invalid')
        with self.sched.lock:
            lm = self.registry.get(src)
            if lm is None:
                return error(404, f'model "{src}" not found')
            self.registry.copy(lm, dst, self.clock())
        return Reply(200, None)

    def version(self) -> Reply:
        return Reply(200, {"version": self.sim.version.text})

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
