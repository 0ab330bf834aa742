"""llama.cpp's llama-server as a Backend: one server process per loaded model variant.

Each load() starts `llama-server -m MODEL -ngl N -c CTX -np 1 ...` on a free loopback port and waits
for GET /health; unload_all() ends the process. num_gpu=AUTO leaves out -ngl (llama.cpp's own
placement, --fit on); an explicit num_gpu also passes `--fit off`, so the placement is exactly the one
asked for and a config that does not fit fails as OutOfMemory instead of being quietly shrunk.

What Ollama reports through /api/ps is read from the server's own log (../shared/ollama-api.md
section 8.3; since the log-verbosity rework these lines need `-lv 4`, which is passed when the build
lists it):

    load_tensors: offloaded 33/33 layers to GPU
    load_tensors:   CPU_Mapped model buffer size =   281.81 MiB
    load_tensors:        CUDA0 model buffer size =  4155.99 MiB
    llama_kv_cache:      CUDA0 KV buffer size =   512.00 MiB
    sched_reserve:      CUDA0 compute buffer size =   112.01 MiB
    sched_reserve:  CUDA_Host compute buffer size =    20.01 MiB

Buffers named CPU, CPU_Mapped, CPU_REPACK, ... or *_Host are host memory; the rest are device memory
(Ollama's Era C accounting). Even at full offload a CPU_Mapped model buffer remains (the token
embeddings stay on the host), so size_vram < size there too: full offload is
`layers_offloaded == block_count + 1`.

Generations go through POST /completion, streamed, greedy, with cache_prompt false (every repeat
re-processes the prompt) and ignore_eos (exactly n_predict tokens); the engine's own timings come from
the final chunk (`timings.prompt_n/prompt_ms/predicted_n/predicted_ms`). With no GPU, `pid` lets a
probe read the server's resident memory.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tuner.backend.base import AUTO, EngineOptions, Generation, ModelInfo, Residency, ServerInfo
from tuner.errors import (
    BackendError,
    BackendTimeout,
    BadResponse,
    ConfigError,
    ModelNotFound,
    OutOfMemory,
    Unreachable,
    is_out_of_memory,
)
from tuner.units import MiB

ENGINE = "llama-server"
LOG_TAIL_LINES = 30

_BUFFER_RE = re.compile(
    r"\w+:\s+(\S+)\s+(model|KV|compute|output|RS|LoRA)\s+buffer size\s*=\s*([\d.]+)\s*MiB"
)
_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_CTX_SEQ_RE = re.compile(r"llama_context: n_ctx_seq\s*=\s*(\d+)")
_VERSION_RE = re.compile(r"^version:\s*(.+?)\s*$", re.M)  # "version: 0.5.0-dev (build 0, commit 0c1e570)"


def find_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """The llama-server to run: `binary`, else $LLAMA_SERVER, else PATH, else the tuner.llamacpp cache."""
    if binary is not None:
        path = Path(binary).expanduser()
        if not path.is_file() and os.sep not in str(binary):
            found = shutil.which(str(binary))  # a bare command name: look it up on PATH
            path = Path(found) if found else path
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(
                f"llama-server binary '{binary}' is not an executable file; pass the path to llama-server "
                "or build one with 'python -m tuner.llamacpp build'."
            )
        return path
    env = os.environ.get("LLAMA_SERVER")
    if env:
        return find_binary(env)
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    from tuner import llamacpp  # noqa: PLC0415 - only when nothing else was found

    cached = llamacpp.cached_binary("llama-server")
    if cached is not None:
        return cached
    raise ConfigError(
        "No llama-server found (LLAMA_SERVER, PATH, or the autotune cache); "
        "build one with 'python -m tuner.llamacpp build' (add --cuda for NVIDIA GPUs) or set LLAMA_SERVER."
    )


@dataclass(frozen=True)
class BufferSizes:
    """Buffer sizes (bytes) from one server log, by kind ("model", "KV", "compute", "output") and buffer name."""

    buffers: dict[tuple[str, str], int] = field(default_factory=dict)
    layers_offloaded: int | None = None
    layers_total: int | None = None
    context_length: int | None = None

    @staticmethod
    def is_host(buffer_name: str) -> bool:
        return buffer_name.upper().startswith("CPU") or buffer_name.endswith("_Host")

    def total(self, kind: str | None = None, *, device: bool | None = None) -> int:
        return sum(
            size
            for (name, k), size in self.buffers.items()
            if (kind is None or k == kind) and (device is None or device != self.is_host(name))
        )

    @property
    def size_bytes(self) -> int:
        return self.total()

    @property
    def size_vram_bytes(self) -> int:
        return self.total(device=True)


def parse_log(text: str) -> BufferSizes:
    """Buffer sizes, offloaded layers and per-slot context from a llama-server log (the last load in it)."""
    buffers: dict[tuple[str, str], int] = {}
    offloaded = total = ctx = None
    for line in text.splitlines():
        if "loading model tensors" in line:
            buffers = {}  # a new load starts: forget the buffers of an earlier one
        m = _BUFFER_RE.search(line)
        if m:
            key = (m.group(1), m.group(2))
            buffers[key] = buffers.get(key, 0) + int(round(float(m.group(3)) * MiB))
            continue
        m = _OFFLOAD_RE.search(line)
        if m:
            offloaded, total = int(m.group(1)), int(m.group(2))
            continue
        m = _CTX_SEQ_RE.search(line)
        if m:
            ctx = int(m.group(1))
    if offloaded is None and buffers and not any(not BufferSizes.is_host(name) for name, _ in buffers):
        offloaded = 0  # a CPU-only build prints no offload line: nothing is on a GPU
    return BufferSizes(buffers, offloaded, total, ctx)


_LOG_PREFIX_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+ [A-Z] ")  # "0.00.111.253 E " (time since start, level)
_INSTANCES = itertools.count(1)


def is_memory_failure(text: str) -> bool:
    """tuner.errors.is_out_of_memory, plus C++'s std::bad_alloc (a host allocation that failed)."""
    return is_out_of_memory(text) or "bad_alloc" in text


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


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


class LlamaServerBackend:
    """Backend for llama.cpp's llama-server, one process per loaded model (see the module docstring)."""

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
        self.binary = find_binary(binary)
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
        return f"http://{self.host}:{self._running.port}" if self._running else None

    def _run_binary(self, flag: str) -> subprocess.CompletedProcess[str]:
        """`llama-server FLAG` (--help, --version), with a one-line error when the binary cannot run."""
        try:
            return subprocess.run(
                [str(self.binary), flag],
                capture_output=True,
                text=True,
                timeout=60,
                env=self._env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unreachable(
                f"Cannot run '{self.binary} {flag}' ({exc}); check the llama-server binary."
            ) from exc

    def _help_text(self) -> str:
        if self._help is None:
            proc = self._run_binary("--help")
            self._help = proc.stdout + proc.stderr
        return self._help

    def _supports(self, flag: str) -> bool:
        return re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=]|$)", self._help_text(), re.M) is not None

    def server_argv(self, model: str, options: EngineOptions, port: int) -> list[str]:
        argv = [str(self.binary), "-m", model, "--host", self.host, "--port", str(port)]
        argv += ["-c", str(options.num_ctx), "-np", "1"]
        if options.num_gpu != AUTO:
            argv += ["-ngl", str(options.num_gpu)]
            if self._supports("--fit"):
                argv += ["--fit", "off"]  # exactly the placement asked for: fail rather than adjust
        if options.flash_attn is not None:
            argv += ["--flash-attn", options.flash_attn]
        if options.kv_cache_type is not None:
            argv += ["--cache-type-k", options.kv_cache_type, "--cache-type-v", options.kv_cache_type]
        if self._supports("--no-webui"):
            argv.append("--no-webui")
        if re.search(r"4: trace", self._help_text()):
            # since the log-verbosity rework, llama.cpp's own load lines (buffer sizes, offloaded
            # layers) are printed at "trace" only; older builds print them by default
            argv += ["-lv", "4"]
        if self._supports("--cache-ram"):
            argv += ["--cache-ram", "0"]  # no host-side prompt cache: it would add to the measured memory
        return argv + list(self.extra_args)

    def _log_tail(self, path: Path, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str, log_path: Path, returncode: int | None = None) -> BackendError:
        """OutOfMemory if the log says memory ran out (or the kernel killed the server), else
        BackendError; both quote the log's last lines."""
        text = ""
        try:
            text = log_path.read_text(errors="replace")
        except OSError:
            pass
        lines = text.splitlines()
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        if is_memory_failure(text):
            reason = next((ln for ln in lines if is_memory_failure(ln)), "out of memory")
            return OutOfMemory(f"{what}: {_LOG_PREFIX_RE.sub('', reason.strip())}", log_tail=tail)
        if returncode == -signal.SIGKILL:  # we never SIGKILL a server we still wait on: the OOM killer did
            return OutOfMemory(
                f"{what}: killed by SIGKILL, most likely the kernel's out-of-memory killer", log_tail=tail
            )
        errors = [ln for ln in lines if " E " in ln[:20]]  # "0.00.015.818 E llama_init_from_model: ..."
        first = errors[0] if errors else next((ln for ln in reversed(lines) if ln.strip()), "no output")
        cause = _LOG_PREFIX_RE.sub("", first.strip())  # the first error line names the cause
        return BackendError(f"{what}: {cause} (log: '{log_path}')\n{tail}")

    def load(self, model: str, options: EngineOptions) -> float:
        if self._running is not None:
            self.unload_all()
        if not Path(model).is_file():
            raise ModelNotFound(f"GGUF file '{model}' does not exist; pass the path to a .gguf model file.")
        self._loads += 1
        log_path = self.log_dir / f"llama-server-{os.getpid()}-{self._instance}-{self._loads}.log"
        for attempt in range(3):  # a free port can be taken between choosing it and the bind
            port = _free_port(self.host)
            argv = self.server_argv(str(model), options, port)
            start = time.monotonic()
            self._spawn(model, options, argv, port, log_path)
            try:
                self._wait_healthy()
            except BackendError as exc:
                if (
                    attempt < 2
                    and "bind" in self._log_tail(log_path).lower()
                    and not isinstance(exc, OutOfMemory)
                ):
                    continue
                raise
            return time.monotonic() - start
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, model: str, options: EngineOptions, argv: list[str], port: int, log_path: Path) -> None:
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed in unload_all
        log_file.write(("$ " + " ".join(argv) + "\n").encode())
        log_file.flush()
        cmd = argv
        if self.memory_limit_bytes is not None:
            kib = max(1, self.memory_limit_bytes // 1024)
            cmd = ["/bin/sh", "-c", f'ulimit -v {kib} && exec "$@"', "llama-server", *argv]
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=self._env
            )
        except OSError as exc:
            log_file.close()
            raise Unreachable(f"Cannot start '{argv[0]}' ({exc}); check the llama-server binary.") from exc
        finalizer = weakref.finalize(self, _stop_process, proc, 5.0)
        self._running = _Running(model, options, proc, port, log_path, log_file, argv, finalizer)

    def _wait_healthy(self) -> None:
        run = self._running
        assert run is not None
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.02
        while True:
            if run.proc.poll() is not None:
                code = run.proc.returncode
                self._teardown()
                raise self._failure(
                    f"llama-server exited (code {code}) while loading '{run.model}'", run.log_path, code
                )
            status = self._health(run.port)
            if status == 200:
                self._wait_for_load_lines(run.log_path)
                return
            if time.monotonic() > deadline:
                self._teardown()
                err = self._failure(
                    f"llama-server did not load '{run.model}' in {self.startup_timeout_s:.0f} s", run.log_path
                )
                if isinstance(err, OutOfMemory):
                    raise err
                raise BackendTimeout(str(err))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    @staticmethod
    def _wait_for_load_lines(log_path: Path, timeout_s: float = 1.0) -> None:
        """llama.cpp logs from a worker thread: give the last load line (the compute buffers) a moment."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if "compute buffer size" in log_path.read_text(errors="replace"):
                    return
            except OSError:
                return
            time.sleep(0.02)

    def _health(self, port: int) -> int | None:
        conn = http.client.HTTPConnection(self.host, port, timeout=5)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def _teardown(self) -> None:
        run, self._running = self._running, None
        if run is None:
            return
        _stop_process(run.proc)
        run.finalizer.detach()
        run.log_file.close()
        deadline = time.monotonic() + 10
        while _port_open(self.host, run.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def unload_all(self) -> None:
        self._teardown()

    def close(self) -> None:
        self._teardown()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # ---- what the engine says --------------------------------------------------------------------

    def server_info(self) -> ServerInfo:
        if self._info is None:
            proc = self._run_binary("--version")
            out = proc.stdout + proc.stderr
            m = _VERSION_RE.search(out)
            if proc.returncode != 0 or m is None:
                raise Unreachable(
                    f"'{self.binary} --version' gave no version (exit {proc.returncode}): {out.strip()[-200:]!r}"
                )
            self._info = ServerInfo(engine=ENGINE, version=m.group(1), host=f"local process {self.binary}")
        return self._info

    def model_info(self, model: str) -> ModelInfo:
        return read_model_info(model)

    def residency(self, model: str) -> Residency | None:
        run = self._running
        if run is None or run.model != model or run.proc.poll() is not None:
            return None
        try:
            sizes = parse_log(run.log_path.read_text(errors="replace"))
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

    def buffer_sizes(self) -> BufferSizes | None:
        """Every buffer of the running server, for a report's breakdown (model / KV / compute per device)."""
        run = self._running
        return parse_log(run.log_path.read_text(errors="replace")) if run else None

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
        conn = http.client.HTTPConnection(self.host, run.port, timeout=self.request_timeout_s)
        start = time.monotonic()
        ttft: float | None = None
        text: list[str] = []
        final: dict[str, Any] | None = None
        try:
            conn.request(
                "POST", "/completion", body=json.dumps(body), headers={"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            if resp.status != 200:
                raise self._http_error(resp.status, resp.read().decode(errors="replace"), run)
            for raw in resp:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError as exc:
                    raise BadResponse(
                        f"llama-server sent a stream chunk that is not JSON: {payload[:200]!r}"
                    ) from exc
                if "error" in chunk:
                    raise self._http_error(500, json.dumps(chunk["error"]), run)
                if ttft is None and (chunk.get("tokens") or chunk.get("content")):
                    ttft = time.monotonic() - start
                text.append(chunk.get("content", ""))
                if chunk.get("stop"):
                    final = chunk
                    break
        except TimeoutError as exc:
            raise BackendTimeout(
                f"llama-server gave no answer in {self.request_timeout_s:.0f} s for '{model}'; raise request_timeout_s."
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            if run.proc.poll() is not None:
                raise self._failure(
                    f"llama-server died while generating with '{model}'", run.log_path, run.proc.returncode
                ) from exc
            raise Unreachable(f"Lost the connection to llama-server at {self.base_url} ({exc}).") from exc
        finally:
            conn.close()
        total = time.monotonic() - start
        if final is None or "timings" not in final:
            raise BadResponse(
                f"llama-server's stream for '{model}' ended without the final chunk and its timings."
            )
        t = final["timings"]
        return Generation(
            prompt_tokens=int(t.get("prompt_n", 0)),
            prompt_s=float(t.get("prompt_ms", 0.0)) / 1000,
            eval_tokens=int(t.get("predicted_n", 0)),
            eval_s=float(t.get("predicted_ms", 0.0)) / 1000,
            ttft_s=ttft if ttft is not None else total,
            total_s=total,
            text="".join(text),
        )

    def _http_error(self, status: int, body: str, run: _Running) -> BackendError:
        try:
            message = json.loads(body).get("error", {}).get("message", body)
        except (ValueError, AttributeError):
            message = body
        if is_memory_failure(message):
            return OutOfMemory(f"llama-server: {message}", log_tail=self._log_tail(run.log_path))
        if run.proc.poll() is not None:
            return self._failure(
                f"llama-server died (HTTP {status}: {message})", run.log_path, run.proc.returncode
            )
        return BadResponse(f"llama-server answered HTTP {status} for '{run.model}': {message[:300]}")


# ---- GGUF metadata -------------------------------------------------------------------------------


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - an odd field is not worth failing model_info for
        return None


def quantization_name(file_type: int | None) -> str:
    """general.file_type (llama_ftype) as a name: 15 -> 'Q4_K_M', 1 -> 'F16'."""
    if file_type is None:
        return "unknown"
    import gguf  # noqa: PLC0415

    try:
        name = gguf.LlamaFileType(int(file_type)).name
    except ValueError:
        return f"ftype-{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _format_params(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def read_model_info(path: str) -> ModelInfo:
    """What a GGUF file's metadata says (architecture, layers, trained context, quantization, size)."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFound(f"GGUF file '{path}' does not exist; pass the path to a .gguf model file.")
    try:
        import gguf  # noqa: PLC0415 - needed only for llama-server

        reader = gguf.GGUFReader(str(p), "r")
    except ImportError as exc:
        raise ConfigError("The 'gguf' package is needed to read GGUF files; run 'pip install gguf'.") from exc
    except (ValueError, OSError, KeyError) as exc:
        raise BadResponse(f"'{path}' is not a readable GGUF file ({exc}).") from exc
    arch = _field_value(reader, "general.architecture") or "unknown"
    block_count = _field_value(reader, f"{arch}.block_count")
    context_length = _field_value(reader, f"{arch}.context_length")
    raw: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or len(f.data) > 64:
            continue  # skip the header and big arrays (the vocabulary)
        value = _field_value(reader, key)
        if value is not None:
            raw[key] = value
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    tensors = [
        {"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape]}
        for t in reader.tensors
    ]
    return ModelInfo(
        name=str(path),
        architecture=str(arch),
        block_count=int(block_count or 0),
        context_length=int(context_length or 0),
        quantization=quantization_name(_field_value(reader, "general.file_type")),
        size_bytes=p.stat().st_size,
        parameter_size=_format_params(n_params),
        family=str(arch),
        model_info=raw,
        tensors=tensors,
    )
