"""Reading llama-server's log: buffer sizes and offloaded layers (what Ollama's /api/ps would report), and the
cause of a failed start or a crash as a BackendError (OutOfMemory when memory ran out)."""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuner.errors import BackendError, OutOfMemory, is_out_of_memory
from tuner.units import MiB

LOG_TAIL_LINES = 30

_BUFFER_RE = re.compile(
    r"\w+:\s+(\S+)\s+(model|KV|compute|output|RS|LoRA)\s+buffer size\s*=\s*([\d.]+)\s*MiB"
)
_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_CTX_SEQ_RE = re.compile(r"llama_context: n_ctx_seq\s*=\s*(\d+)")
_LOG_PREFIX_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+ [A-Z] ")  # "0.00.111.253 E " (time since start, level)


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


def is_memory_failure(text: str) -> bool:
    """tuner.errors.is_out_of_memory, plus C++'s std::bad_alloc (a host allocation that failed)."""
    return is_out_of_memory(text) or "bad_alloc" in text


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure(what: str, log_path: Path, returncode: int | None = None) -> BackendError:
    """OutOfMemory if the log says memory ran out (or the kernel killed the server), else BackendError;
    both quote the log's last lines."""
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


def wait_for_load_lines(log_path: Path, timeout_s: float = 1.0) -> None:
    """llama.cpp logs from a worker thread: give the last load line (the compute buffers) a moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if "compute buffer size" in log_path.read_text(errors="replace"):
                return
        except OSError:
            return
        time.sleep(0.02)
