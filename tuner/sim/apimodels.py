"""Ollama's model-management endpoints in the simulator: tags, ps, show, pull, create (from a model or an
uploaded GGUF blob), blobs, delete, copy. A part of Api (tuner.sim.api), which holds the state they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuner.sim import generation as gen
from tuner.sim.apirequest import BadRequest, error, parse_body
from tuner.sim.catalog import lookup
from tuner.sim.core import Simulation
from tuner.sim.imported import BlobError, BlobStore, parse_digest, read_gguf
from tuner.sim.registry import (
    MODELS_DIR,
    Registry,
    local_time,
    show_payload,
    tags_entry,
    valid_name,
)
from tuner.sim.reply import Reply
from tuner.sim.scheduler import Scheduler


class ModelEndpoints:
    # Set by Api.__init__.
    sched: Scheduler
    sim: Simulation
    registry: Registry
    clock: Callable[[], float]
    blobs: BlobStore

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
