"""The exception tree. Only cli.py turns these into a message and an exit code.

    TunerError                      exit 1 unless said otherwise
    ├── ConfigError                 exit 2: bad usage (a flag value, a missing file, an unusable --out)
    ├── BackendError                the inference server; `.transient`: worth another attempt
    │   ├── Unreachable             connection refused / DNS / wrong port (the study waits for it, then stops)
    │   ├── BackendTimeout          the server did not answer in time (transient)
    │   ├── BadResponse             an answer we cannot use: a 5xx, garbage JSON, a stream cut short
    │   │                           (transient), or a 4xx we do not expect (not transient)
    │   ├── ServerStateChanged      /api/ps changed under a trial: someone else loaded or reloaded (transient)
    │   ├── ModelNotFound           the server does not have the model or tag
    │   └── OutOfMemory             a load failed for lack of memory; `.server_message` keeps the server's words
    ├── TrialFailed                 a trial's attempts ran out; the study records the reason and goes on
    ├── StorageError                the study storage cannot be opened, read or written (full, corrupt, locked)
    ├── OutputError                 a report cannot be written (disk full, permissions)
    └── ProbeError                  GPU memory probing failed in a way we cannot fall back from

    Interrupted (KeyboardInterrupt) Ctrl-C (exit 130) or SIGTERM (exit 143): `.exit_code`; the CLI turns it
                                    into Stopped (a TunerError) once the command has cleaned up

Every message names what failed, quotes the value, and says what to do next.
"""

from __future__ import annotations


class TunerError(Exception):
    exit_code = 1
    transient = False  # a retry of the same trial may succeed (a timeout, a 5xx, a reset connection)


class ConfigError(TunerError):
    exit_code = 2


class BackendError(TunerError):
    pass


class Unreachable(BackendError):
    pass


class BackendTimeout(BackendError):
    transient = True


class BadResponse(BackendError):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ServerStateChanged(BackendError):
    """The server's loaded models changed during a trial (another client loaded, reloaded or unloaded):
    the measurement is discarded and the trial retried, never recorded."""

    transient = True


class ModelNotFound(BackendError):
    pass


class OutOfMemory(BackendError):
    """A load (or the first generation) failed because memory ran out.

    The study records this as a completed, infeasible trial; it never aborts the study.
    """

    def __init__(self, server_message: str, *, log_tail: str = "") -> None:
        super().__init__(server_message)
        self.server_message = server_message
        self.log_tail = log_tail


class ProbeError(TunerError):
    pass


class TrialFailed(TunerError):
    """A trial's attempts ran out on transient failures; `.attempts` lists each one's reason."""

    def __init__(self, message: str, attempts: list[str]) -> None:
        super().__init__(message)
        self.attempts = attempts


class StorageError(TunerError):
    pass


class OutputError(TunerError):
    pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT, exit 130) or SIGTERM (exit 143). A KeyboardInterrupt, so Optuna fails the running
    trial the same way for both, and the CLI unloads the model and writes the report before it exits."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.name = name
        self.exit_code = 128 + signum


# Substrings that mark an out-of-memory failure in Ollama's and llama.cpp's messages
# (Ollama's IsOutOfMemory list plus the Era A/B messages, ../shared/ollama-api.md section 6b).
OOM_MARKERS = (
    "out of memory",
    "out of device memory",
    "cudamalloc failed",
    "hipmalloc failed",
    "failed to allocate",
    "allocation failed",
    "not enough memory",
    "insufficient memory",
    "vk_error_out_of_device_memory",
    "erroroutofmemory",
    "unable to allocate",
    "requires more system memory",
    "unable to load full model on gpu",
    "memory layout cannot be allocated",
    "out-of-memory",
    "bad_alloc",
)


def is_out_of_memory(message: str) -> bool:
    low = message.lower()
    return any(marker in low for marker in OOM_MARKERS)


class Stopped(TunerError):
    """A command stopped by Ctrl-C or SIGTERM after its clean-up; exit 130 or 143."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code


# Substrings that mark a memory failure on the host (system RAM, pinned host buffers), not on a GPU.
HOST_MEMORY_MARKERS = (
    "system memory",
    "host memory",
    "cpu_buffer",
    "cpu buffer",
    "cuda_host",
    "bad_alloc",
)


def memory_failure_kind(message: str) -> str:
    """ "host" for a host-RAM failure, "gpu" for any other out-of-memory message, "" for neither."""
    low = message.lower()
    if any(marker in low for marker in HOST_MEMORY_MARKERS) or ("host" in low and "memory" in low):
        return "host"
    return "gpu" if is_out_of_memory(message) else ""
