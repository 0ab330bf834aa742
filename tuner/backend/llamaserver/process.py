"""The llama-server binary and its process: finding it, asking it (--help, --version), spawning it with its
log in a file, free loopback ports, and stopping it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from tuner.errors import ConfigError, Unreachable


def find_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """The llama-server to run: `binary`, else $LLAMA_SERVER, else PATH, else the tuner.engines cache."""
    if binary is not None:
        path = Path(binary).expanduser()
        if not path.is_file() and os.sep not in str(binary):
            found = shutil.which(str(binary))  # a bare command name: look it up on PATH
            path = Path(found) if found else path
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(
                f"llama-server binary '{binary}' is not an executable file; pass the path to llama-server "
                "or build one with 'python -m tuner.engines build llama-server'."
            )
        return path
    env = os.environ.get("LLAMA_SERVER")
    if env:
        return find_binary(env)
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    from tuner.installs import find_llama_cpp  # noqa: PLC0415 - only when nothing else was found

    cached = find_llama_cpp()
    if cached is not None:
        return cached.binary("llama-server")
    raise ConfigError(
        "No llama-server found (LLAMA_SERVER, PATH, or the autotune cache); build one with "
        "'python -m tuner.engines build llama-server' (add --cuda for NVIDIA GPUs) or set LLAMA_SERVER."
    )


def run_binary(binary: Path, flag: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`llama-server FLAG` (--help, --version), with a one-line error when the binary cannot run."""
    try:
        return subprocess.run(
            [str(binary), flag], capture_output=True, text=True, timeout=60, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unreachable(f"Cannot run '{binary} {flag}' ({exc}); check the llama-server binary.") from exc


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def spawn(
    argv: list[str], log_path: Path, env: dict[str, str], memory_limit_bytes: int | None
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start the server with stdout and stderr in `log_path` (its first line is the command); the caller
    closes the returned log file. `memory_limit_bytes` caps the address space (ulimit -v)."""
    log_file = open(log_path, "wb")  # noqa: SIM115 - the caller closes it when the server stops
    log_file.write(("$ " + " ".join(argv) + "\n").encode())
    log_file.flush()
    cmd = argv
    if memory_limit_bytes is not None:
        kib = max(1, memory_limit_bytes // 1024)
        cmd = ["/bin/sh", "-c", f'ulimit -v {kib} && exec "$@"', "llama-server", *argv]
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    except OSError as exc:
        log_file.close()
        raise Unreachable(f"Cannot start '{argv[0]}' ({exc}); check the llama-server binary.") from exc
    return proc, log_file


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
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


def wait_port_closed(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Until nothing listens on the port any more (the next server may be given the same one)."""
    deadline = time.monotonic() + timeout_s
    while port_open(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
