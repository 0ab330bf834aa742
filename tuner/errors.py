"""The exception tree. Only cli.py turns these into a message and an exit code.

    TunerError                      exit 1 unless said otherwise
    ├── ConfigError                 exit 2: bad usage (a flag value, a missing file)
    ├── BackendError                the inference server
    │   ├── Unreachable             connection refused / DNS / wrong port
    │   ├── BackendTimeout          the server did not answer in time
    │   ├── BadResponse             an answer we cannot use (HTTP error we do not expect, bad JSON)
    │   ├── ModelNotFound           the server does not have the model or tag
    │   └── OutOfMemory             a load failed for lack of memory; `.server_message` keeps the server's words
    └── ProbeError                  GPU memory probing failed in a way we cannot fall back from

Every message names what failed, quotes the value, and says what to do next.
"""

from __future__ import annotations


class TunerError(Exception):
    exit_code = 1


class ConfigError(TunerError):
    exit_code = 2


class BackendError(TunerError):
    pass


class Unreachable(BackendError):
    pass


class BackendTimeout(BackendError):
    pass


class BadResponse(BackendError):
    pass


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
    if any(marker in low for marker in HOST_MEMORY_MARKERS):
        return "host"
    return "gpu" if is_out_of_memory(message) else ""
