"""LlamaServerBackend: the Backend protocol over one llama-server process per loaded model (see the package
docstring). It orchestrates the other modules and turns what goes wrong into the errors tree."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from tuner.backend.base import EngineOptions, Generation, ModelInfo, Residency, ServerInfo, TokenStep
from tuner.backend.llamaserver import argv as argv_
from tuner.backend.llamaserver import client, logs, process
from tuner.backend.llamaserver.gguf import read_model_info
from tuner.errors import BackendError, BackendTimeout, BadResponse, ModelNotFound, OutOfMemory, Unreachable

ENGINE = "llama-server"

_INSTANCES = itertools.count(1)


@dataclass
class _Running:
    model: str
    options: EngineOptions
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]
    argv: list[str]
    finalizer: Any
    http: httpx.Client


def _exited(proc: subprocess.Popen[bytes], wait_s: float = 5.0) -> bool:
    """Whether the server process has ended, given a moment: a server that dies closes its sockets just
    before the exit status can be read, so a lost connection alone does not tell a crash from a network fault."""
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return False
    return True


class LlamaServerBackend:
    """Backend for llama.cpp's llama-server, one process per loaded model (see the package docstring)."""

    engine = ENGINE

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 300.0,
        request_timeout_s: float = 600.0,
        extra_args: tuple[str, ...] | list[str] = (),
        log_dir: str | os.PathLike[str] | None = None,
        memory_limit_bytes: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`memory_limit_bytes` caps the server's address space (ulimit -v): a CPU-only way to emulate
        a smaller host in tests. Do not use it with a GPU build (CUDA reserves a large address space)."""
        self.binary = process.find_binary(binary)
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.request_timeout_s = request_timeout_s
        self.extra_args = tuple(extra_args)
        self.memory_limit_bytes = memory_limit_bytes
        self._env = dict(os.environ if env is None else env)
        self._own_log_dir = log_dir is None
        self.log_dir = (
            Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="autotune-llama-server-"))
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._running: _Running | None = None
        self._instance = next(_INSTANCES)
        self._loads = 0
        self._help: str | None = None
        self._info: ServerInfo | None = None

    # ---- the process -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running server's process id (for an RSS probe), or None when nothing is loaded."""
        run = self._running
        return run.proc.pid if run is not None and run.proc.poll() is None else None

    @property
    def log_path(self) -> Path | None:
        return self._running.log_path if self._running else None

    @property
    def command_line(self) -> list[str] | None:
        """The argv of the running server (what the report can show as the tuned command)."""
        return list(self._running.argv) if self._running else None

    @property
    def base_url(self) -> str | None:
        return self._url(self._running.port) if self._running else None

    def _url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    def _help_text(self) -> str:
        if self._help is None:
            proc = process.run_binary(self.binary, "--help", self._env)
            self._help = proc.stdout + proc.stderr
        return self._help

    def server_argv(self, model: str, options: EngineOptions, port: int) -> list[str]:
        return argv_.server_argv(
            str(self.binary),
            model,
            options,
            host=self.host,
            port=port,
            help_text=self._help_text(),
            extra_args=self.extra_args,
        )

    def load(self, model: str, options: EngineOptions) -> float:
        if self._running is not None:
            self.unload_all()
        if not Path(model).is_file():
            raise ModelNotFound(f"GGUF file '{model}' does not exist; pass the path to a .gguf model file.")
        self._loads += 1
        log_path = self.log_dir / f"llama-server-{os.getpid()}-{self._instance}-{self._loads}.log"
        for attempt in range(3):  # a free port can be taken between choosing it and the bind
            port = process.free_port(self.host)
            argv = self.server_argv(str(model), options, port)
            start = time.monotonic()
            self._spawn(model, options, argv, port, log_path)
            try:
                self._wait_healthy()
            except BackendError as exc:
                if (
                    attempt < 2
                    and "bind" in logs.log_tail(log_path).lower()
                    and not isinstance(exc, OutOfMemory)
                ):
                    continue
                raise
            return time.monotonic() - start
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, model: str, options: EngineOptions, argv: list[str], port: int, log_path: Path) -> None:
        proc, log_file = process.spawn(argv, log_path, self._env, self.memory_limit_bytes)
        finalizer = weakref.finalize(self, process.stop_process, proc, 5.0)
        http = client.make_client(self._url(port), self.request_timeout_s)
        self._running = _Running(model, options, proc, port, log_path, log_file, argv, finalizer, http)

    def _wait_healthy(self) -> None:
        run = self._running
        assert run is not None
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.02
        while True:
            if run.proc.poll() is not None:
                code = run.proc.returncode
                self._teardown()
                raise logs.failure(
                    f"llama-server exited (code {code}) while loading '{run.model}'", run.log_path, code
                )
            if client.health(run.http) == 200:
                logs.wait_for_load_lines(run.log_path)
                return
            if time.monotonic() > deadline:
                self._teardown()
                err = logs.failure(
                    f"llama-server did not load '{run.model}' in {self.startup_timeout_s:.0f} s", run.log_path
                )
                if isinstance(err, OutOfMemory):
                    raise err
                raise BackendTimeout(str(err))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _teardown(self) -> None:
        run, self._running = self._running, None
        if run is None:
            return
        run.http.close()
        process.stop_process(run.proc)
        run.finalizer.detach()
        run.log_file.close()
        process.wait_port_closed(self.host, run.port)

    def check_alone(self, model: str, expected: Residency | None) -> None:
        """Our own llama-server process serves nothing else; a server that died is found by the next
        request."""

    def unload_all(self) -> None:
        self._teardown()

    def close(self) -> None:
        self._teardown()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # ---- what the engine says --------------------------------------------------------------------

    def server_info(self) -> ServerInfo:
        if self._info is None:
            proc = process.run_binary(self.binary, "--version", self._env)
            out = proc.stdout + proc.stderr
            version = argv_.version_of(out)
            if proc.returncode != 0 or version is None:
                raise Unreachable(
                    f"'{self.binary} --version' gave no version (exit {proc.returncode}): {out.strip()[-200:]!r}"
                )
            self._info = ServerInfo(engine=ENGINE, version=version, host=f"local process {self.binary}")
        return self._info

    def model_info(self, model: str) -> ModelInfo:
        return read_model_info(model)

    def residency(self, model: str) -> Residency | None:
        run = self._running
        if run is None or run.model != model or run.proc.poll() is not None:
            return None
        try:
            sizes = logs.parse_log(run.log_path.read_text(errors="replace"))
        except OSError:
            return None
        # Ollama's own rule for llama-server (Era C): with every layer offloaded, size = size_vram. The
        # token embeddings stay in a host buffer even then, so the raw sums would always look "spilled".
        full = sizes.layers_total is not None and sizes.layers_offloaded == sizes.layers_total
        return Residency(
            size_bytes=sizes.size_vram_bytes if full else sizes.size_bytes,
            size_vram_bytes=sizes.size_vram_bytes,
            context_length=sizes.context_length,
            layers_offloaded=sizes.layers_offloaded,
        )

    def buffer_sizes(self) -> logs.BufferSizes | None:
        """Every buffer of the running server, for a report's breakdown (model / KV / compute per device)."""
        run = self._running
        return logs.parse_log(run.log_path.read_text(errors="replace")) if run else None

    # ---- generation ------------------------------------------------------------------------------

    def generate(
        self, model: str, prompt: str, options: EngineOptions, *, num_predict: int, seed: int = 0
    ) -> Generation:
        run = self._running
        if run is None or run.model != model or run.options != options or run.proc.poll() is not None:
            self.load(model, options)
            run = self._running
            assert run is not None
        body = {
            "prompt": prompt,
            "n_predict": num_predict,
            "temperature": 0,
            "seed": seed,
            "cache_prompt": False,
            "ignore_eos": True,
            "stream": True,
        }
        try:
            done = client.stream_completion(
                run.http, body, lambda status, text: self._http_error(status, text, run)
            )
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"llama-server gave no answer in {self.request_timeout_s:.0f} s for '{model}'; raise request_timeout_s."
            ) from exc
        except httpx.TransportError as exc:
            if _exited(run.proc):
                raise logs.failure(
                    f"llama-server died while generating with '{model}'", run.log_path, run.proc.returncode
                ) from exc
            raise Unreachable(f"Lost the connection to llama-server at {self.base_url} ({exc}).") from exc
        if done.final is None or "timings" not in done.final:
            raise BadResponse(
                f"llama-server's stream for '{model}' ended without the final chunk and its timings."
            )
        t = done.final["timings"]
        return Generation(
            prompt_tokens=int(t.get("prompt_n", 0)),
            prompt_s=float(t.get("prompt_ms", 0.0)) / 1000,
            eval_tokens=int(t.get("predicted_n", 0)),
            eval_s=float(t.get("predicted_ms", 0.0)) / 1000,
            ttft_s=done.ttft_s if done.ttft_s is not None else done.total_s,
            total_s=done.total_s,
            text=done.text,
        )

    # ---- token log-probabilities (LogprobBackend) ----------------------------------------------------

    teacher_forcing = True  # /completion takes token ids, so the reference's tokens can be fed exactly

    def logprob_support(self) -> str | None:
        return None  # /completion's n_probs

    def token_logprobs(
        self,
        model: str,
        prompt: str,
        options: EngineOptions,
        *,
        num_predict: int,
        top_k: int,
        forced: Sequence[str] = (),
    ) -> list[TokenStep]:
        """/tokenize the prompt (with BOS), append the `forced` token ids, and decode greedily with n_probs;
        tokens are keyed by id (as text), so the same token compares equal across tags."""
        run = self._running
        if run is None or run.model != model or run.options != options or run.proc.poll() is not None:
            self.load(model, options)
            run = self._running
            assert run is not None

        def error(status: int, text: str) -> BackendError:
            return self._http_error(status, text, run)

        try:
            ids = client.post_json(run.http, "/tokenize", {"content": prompt, "add_special": True}, error)
            body = {
                "prompt": [*ids.get("tokens", []), *(int(t) for t in forced)],
                "n_predict": num_predict,
                "n_probs": top_k,
                "temperature": 0,
                "seed": 0,
                "cache_prompt": False,
                "ignore_eos": True,
                "stream": False,
            }
            done = client.post_json(run.http, "/completion", body, error)
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"llama-server gave no logprobs in {self.request_timeout_s:.0f} s for '{model}'."
            ) from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"Lost the connection to llama-server at {self.base_url} ({exc}).") from exc
        entries = done.get("completion_probabilities")
        if not isinstance(entries, list):
            raise BadResponse(
                f"llama-server sent no completion_probabilities for '{model}' (n_probs {top_k})."
            )
        return [_token_step(e) for e in entries if isinstance(e, dict)]

    def _http_error(self, status: int, body: str, run: _Running) -> BackendError:
        try:
            message = json.loads(body).get("error", {}).get("message", body)
        except (ValueError, AttributeError):
            message = body
        if logs.is_memory_failure(message):
            return OutOfMemory(f"llama-server: {message}", log_tail=logs.log_tail(run.log_path))
        if run.proc.poll() is not None:
            return logs.failure(
                f"llama-server died (HTTP {status}: {message})", run.log_path, run.proc.returncode
            )
        return BadResponse(f"llama-server answered HTTP {status} for '{run.model}': {message[:300]}")


def _token_step(entry: dict[str, Any]) -> TokenStep:
    """One completion_probabilities entry: {id, token, logprob, top_logprobs: [{id, token, logprob}]}."""
    try:
        top = tuple((str(int(t["id"])), float(t["logprob"])) for t in entry.get("top_logprobs") or [])
        return TokenStep(token=str(int(entry["id"])), logprob=float(entry["logprob"]), top=top)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadResponse(
            f"llama-server sent a token probability entry without id/logprob: {entry!r:.200}"
        ) from exc
