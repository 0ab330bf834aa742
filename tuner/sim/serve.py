"""The simulator as an `ollama serve` binary, so autotune's managed-server mode (`--serve --ollama PATH`) can
start, restart and stop it exactly as it does the real one.

    autotune-sim-ollama serve [--gpus 2x24GiB] [--ollama-version 0.32.15] [--realtime] ...
    python -m tuner.sim serve ...            (the same)
    python -m tuner.sim.serve shim PATH [serve flags...]   writes an executable PATH for `--ollama PATH`

Like `ollama serve` it reads its settings from the environment: OLLAMA_HOST (host:port to listen on),
OLLAMA_NUM_PARALLEL, OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE, OLLAMA_SCHED_SPREAD, OLLAMA_MAX_QUEUE,
OLLAMA_CONTEXT_LENGTH, OLLAMA_MODELS and CUDA_VISIBLE_DEVICES (a subset of the simulated GPUs), with each
release's rules (tuner.sim.knobs). The simulated machine comes from flags or AUTOTUNE_SIM_* variables:
AUTOTUNE_SIM_GPUS, AUTOTUNE_SIM_VERSION, AUTOTUNE_SIM_HOST_RAM, AUTOTUNE_SIM_SEED, AUTOTUNE_SIM_NOISE,
AUTOTUNE_SIM_LOCAL, AUTOTUNE_SIM_REALTIME (1 = sleep the simulated durations, needed for concurrency
ladders), AUTOTUNE_SIM_START_S (seconds to wait before listening, a restart's cost).

At startup it logs, as the release does, the `msg="server config" env="map[...]"` line (which autotune
checks took the settings), then `Listening on` and one `inference compute` line per visible GPU. SIGTERM
stops it. `ollama --version` prints the release; any other command exits 1 with one line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from tuner.hardware import parse_gpus
from tuner.sim.knobs import ServerKnobs, server_config_line
from tuner.sim.server import SimServer

DEFAULT_PORT = 11434


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"autotune-sim-ollama: {message}; see 'autotune-sim-ollama serve --help'.\n")
        raise SystemExit(2)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def d(name: str, default: str) -> str:
        return env.get(f"AUTOTUNE_SIM_{name}", default)

    p = _Parser(
        prog="autotune-sim-ollama serve", description="The Ollama simulator, started as `ollama serve`."
    )
    p.add_argument("--gpus", default=d("GPUS", "1x24GiB"), help="simulated GPUs (AUTOTUNE_SIM_GPUS)")
    p.add_argument("--ollama-version", default=d("VERSION", "0.32.15"), help="release to imitate")
    p.add_argument("--host-ram", default=d("HOST_RAM", "") or None, help="host memory, e.g. 64GiB")
    p.add_argument("--host-cores", type=int, default=int(d("HOST_CORES", "0")) or None, help="physical cores")
    p.add_argument("--seed", type=int, default=int(d("SEED", "0")))
    p.add_argument("--noise", type=float, default=float(d("NOISE", "0.02")))
    p.add_argument("--estimator-error", type=float, default=float(d("ESTIMATOR_ERROR", "1")))
    p.add_argument("--local", default=d("LOCAL", "all"), help="models present: all | default | tag,tag")
    p.add_argument(
        "--realtime", action="store_true", default=d("REALTIME", "") in ("1", "true"), help="sleep durations"
    )
    p.add_argument("--start-s", type=float, default=float(d("START_S", "0")), help="delay before listening")
    return p


def listen_address(value: str | None) -> tuple[str, int]:
    """OLLAMA_HOST as envconfig.Host reads it: [scheme://]host[:port], default 127.0.0.1:11434."""
    text = (value or "").strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"OLLAMA_HOST '{value}': the port '{port}' is not a number; use host:port.") from exc


def serve(argv: list[str], env: Mapping[str, str]) -> int:
    args = build_parser(env).parse_args(argv)
    try:
        all_gpus = parse_gpus(args.gpus)
        knobs = ServerKnobs.from_env(env, args.ollama_version, gpu_count=len(all_gpus))
        bind, port = listen_address(env.get("OLLAMA_HOST"))
        visible = knobs.visible if knobs.visible is not None else tuple(range(len(all_gpus)))
        server = SimServer(
            gpus=all_gpus,  # every GPU stays on the simulated machine (NVML sees them); the server uses `visible`
            host_ram=args.host_ram,
            host_cores=args.host_cores,
            version=args.ollama_version,
            num_parallel=knobs.num_parallel,
            max_queue=knobs.max_queue,
            seed=args.seed,
            noise=args.noise,
            estimator_error=args.estimator_error,
            local=args.local if args.local in ("all", "default", "none") else args.local.split(","),
            realtime=args.realtime,
            port=port,
            bind=bind,
        )
        server.simulation.knobs = knobs
    except ValueError as exc:
        sys.stderr.write(f"autotune-sim-ollama: {exc}\n")
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = sys.stderr
    log.write(
        server_config_line(knobs, args.ollama_version, cuda_visible=env.get("CUDA_VISIBLE_DEVICES", ""))
    )
    log.write("\n")
    if args.start_s > 0:
        time.sleep(args.start_s)
    # logged before the port opens: whoever sees it answer finds the whole startup log
    sim = server.simulation
    log.write(
        f'time=0 level=INFO source=routes.go:1 msg="Listening on {bind}:{port} (version {sim.version.text})"\n'
    )
    for i, idx in enumerate(visible):
        g = sim.gpus[idx]
        log.write(
            f'time=0 level=INFO source=types.go:1 msg="inference compute" id=GPU-{idx} library=CUDA '
            f'name=CUDA{i} description="{g.name}" total="{g.memory_bytes / 2**30:.1f} GiB"\n'
        )
    if not visible:
        log.write('time=0 level=INFO source=types.go:1 msg="inference compute" id=cpu library=cpu\n')
    log.flush()
    try:
        server.start()
    except OSError as exc:
        log.write(f"Error: listen tcp {bind}:{port}: bind: address already in use ({exc.strerror or exc})\n")
        log.flush()
        return 1
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def write_shim(path: str | os.PathLike[str], serve_args: list[str] | None = None) -> Path:
    """An executable file that runs this simulator as `PATH serve`, for `autotune ... --serve --ollama PATH`."""
    import shlex  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    out = Path(path)
    flags = " ".join(shlex.quote(a) for a in serve_args or [])
    out.write_text(
        "#!/bin/sh\n# The autotune Ollama simulator as `ollama`: see tuner/sim/serve.py.\n"
        f"PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}} exec {shlex.quote(sys.executable)} "
        f'-m tuner.sim.serve "$@" {flags}\n'
    )
    out.chmod(0o755)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(__doc__ or "")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "serve":
        return serve(rest, env)
    if cmd in ("-v", "--version", "version"):
        version = build_parser(env).parse_known_args(rest)[0].ollama_version
        sys.stdout.write(f"ollama version is {version}\n")
        return 0
    if cmd == "shim":
        if not rest:
            sys.stderr.write("autotune-sim-ollama: shim needs a PATH to write, e.g. 'shim ./ollama-sim'.\n")
            return 2
        sys.stdout.write(f"{write_shim(rest[0], rest[1:])}\n")
        return 0
    sys.stderr.write(
        f"autotune-sim-ollama: '{cmd}' is not simulated; only 'serve' and '--version' (models are built in).\n"
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
