"""Run `ollama serve` as a child process: a private loopback port, its own environment, stopped by PID.

    with ManagedOllama(binary, models_dir=store) as server:
        OllamaBackend(server.url) ...
        server.create("tiny-llama:q8_0", "FROM ./tiny-q8_0.gguf\n", cwd=folder)   # the real `ollama create`

The server runs in its own process group, so stopping it also stops the runners it spawned (Era A/B
`ollama runner`, Era C `llama-server`). On Linux it is also told to stop (SIGTERM) when the process that
started it dies, even by SIGKILL, so no server outlives its tuner or test run. Its output goes to a log file
whose tail is kept for error messages. Nothing here knows about a study; tests and the managed-server mode
use it alike.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from tuner.errors import BackendError, ConfigError, Unreachable


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """prctl(PR_SET_PDEATHSIG, SIGTERM): the kernel signals the server when its parent goes away."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ManagedOllama:
    def __init__(
        self,
        binary: str | os.PathLike[str],
        *,
        models_dir: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        port: int = 0,
    ) -> None:
        self.binary = Path(binary).absolute()  # a relative path would be looked up on PATH by Popen
        if not os.access(self.binary, os.X_OK):
            raise ConfigError(f"Ollama binary '{self.binary}' is not an executable file; pass --ollama PATH.")
        self.models_dir = Path(models_dir)
        self.extra_env = dict(env or {})
        self.log_path = Path(log_path) if log_path else self.models_dir.parent / "ollama-serve.log"
        self.host = host
        self.port = 0
        self.fixed_port = port  # 0: a free port at each start; else always this one (a restart keeps the URL)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OLLAMA_HOST", None)
        env.update(self.extra_env)
        env["OLLAMA_HOST"] = f"{self.host}:{self.port}"
        env["OLLAMA_MODELS"] = str(self.models_dir)
        env.setdefault("OLLAMA_NOPRUNE", "1")
        return env

    def start(self) -> ManagedOllama:
        if self._proc is not None:
            return self
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port can be taken between free_port() and the server's bind
            self.port = self.fixed_port or free_port(self.host)
            log = open(self.log_path, "ab")
            try:
                self._proc = subprocess.Popen(
                    [str(self.binary), "serve"],
                    env=self.environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stop() reaches the runners too
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            finally:
                log.close()
            if self._wait_ready():
                return self
            code = self._proc.poll() if self._proc else None
            self.stop()
            if "address already in use" not in self.log_tail():
                break
        what = (
            f"exited (code {code}) before answering on {self.url}"
            if code is not None
            else f"did not answer on {self.url} within {self.startup_timeout_s:.0f} s"
        )
        raise Unreachable(f"'{self.binary} serve' {what}; see '{self.log_path}':\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/api/version", timeout=2.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after the timeout."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            try:  # the server is gone; its runners may still be stopping
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cli(self, *args: str, cwd: str | os.PathLike[str] | None = None, timeout_s: float = 300.0) -> str:
        """Run `ollama ARGS...` against this server; return its output, BackendError if it fails."""
        proc = subprocess.run(
            [str(self.binary), *args],
            env=self.environment(),
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise BackendError(
                f"'ollama {' '.join(args)}' failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}"
            )
        return proc.stdout

    def create(self, name: str, modelfile: str, *, cwd: str | os.PathLike[str]) -> None:
        """`ollama create NAME -f Modelfile`, the Modelfile written into `cwd` (relative FROM paths resolve there)."""
        path = Path(cwd) / f"Modelfile.{name.replace(':', '_').replace('/', '_')}"
        path.write_text(modelfile)
        self.cli("create", name, "-f", str(path), cwd=cwd)

    def __enter__(self) -> ManagedOllama:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
