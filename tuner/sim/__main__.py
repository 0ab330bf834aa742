"""python -m tuner.sim --port 11500 --gpus 2x24GiB [--host-ram 64GiB] [--host-bandwidth 80]
    [--ollama-version 0.12.10] [--num-parallel 1] [--seed 0] [--noise 0.02] [--estimator-error 1] [--interference SPEC]
    [--local all|default] [--realtime] [--inject-throttle AT_S[:DURATION_S[:KIND]]] [--inject-drift PCT_PER_HOUR]

Prints one line with the URL and serves until interrupted. A bad value prints one line naming it and the
fix, and exits with status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import NoReturn

from tuner.sim.server import SimServer


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        sys.stderr.write(f"tuner.sim: {message}; see 'python -m tuner.sim --help'.\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tuner.sim", description="An Ollama-compatible server with simulated GPUs.")
    p.add_argument("--port", type=int, default=11500, help="TCP port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--gpus", default="1x24GiB", help="e.g. 2x24GiB, 24GiB,12GiB, 2xRTX4090, 8xA800-80GB")
    p.add_argument("--host-ram", default=None, help="host memory, e.g. 64GiB (default 64GiB)")
    p.add_argument(
        "--host-bandwidth", type=float, default=None, help="host memory bandwidth in GB/s (default 80)"
    )
    p.add_argument("--host-cores", type=int, default=None, help="physical CPU cores (default 16)")
    p.add_argument("--ollama-version", default="0.12.10", help="Ollama release to emulate (default 0.12.10)")
    p.add_argument("--num-parallel", type=int, default=1, help="OLLAMA_NUM_PARALLEL (default 1)")
    p.add_argument(
        "--max-queue", type=int, default=512, help="OLLAMA_MAX_QUEUE: requests pending a load (default 512)"
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--machine", default="sim", help="which simulated machine: its cards' UUIDs and VBIOS (default sim)"
    )
    p.add_argument("--noise", type=float, default=0.02, help="run-to-run noise, lognormal sigma (0 = none)")
    p.add_argument(
        "--estimator-error",
        type=float,
        default=1.0,
        help="scale of each model's hidden error between autotune's memory estimate and the real buffers "
        "(default 1; 0 = the estimate is exact)",
    )
    p.add_argument(
        "--memory-truth",
        choices=("estimator", "foreign"),
        default="estimator",
        help="what the runner really allocates: the estimate plus its hidden error (default), or a per-card-"
        "family model of a different form (tuner/sim/memtruth.py)",
    )
    p.add_argument(
        "--interference",
        default="",
        help="a simulated neighbour, e.g. cpu=1.5,gpu=2GiB,throttle=HwSlowdown,jitter=0.3 (default none)",
    )
    p.add_argument(
        "--inject-throttle",
        action="append",
        default=[],
        metavar="AT_S[:DURATION_S[:KIND]]",
        help="collapse the SM clocks from simulated second AT_S for DURATION_S (default: for good); KIND power "
        "(default) or thermal; the temperature stays normal. Repeatable",
    )
    p.add_argument(
        "--inject-drift",
        type=float,
        default=0.0,
        metavar="PCT_PER_HOUR",
        help="decode speed falls this many percent per simulated hour (default 0)",
    )
    p.add_argument("--local", default="all", help="models present at start: all | default | tag,tag,...")
    p.add_argument("--realtime", action="store_true", help="sleep the simulated durations")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # `python -m tuner.sim serve`: as `ollama serve` (tuner/sim/serve.py)
        from tuner.sim.serve import main as serve_main  # noqa: PLC0415

        return serve_main(argv)
    args = build_parser().parse_args(argv)
    local: str | list[str] = args.local
    if args.local not in ("all", "default", "none"):
        local = [t for t in args.local.split(",") if t]
    try:
        server = SimServer(
            gpus=args.gpus,
            host_ram=args.host_ram,
            host_bandwidth=args.host_bandwidth,
            host_cores=args.host_cores,
            version=args.ollama_version,
            num_parallel=args.num_parallel,
            max_queue=args.max_queue,
            seed=args.seed,
            machine=args.machine,
            noise=args.noise,
            estimator_error=args.estimator_error,
            memory_truth=args.memory_truth,
            interference=args.interference or None,
            local=local,
            realtime=args.realtime,
            port=args.port,
            bind=args.bind,
            inject_throttle=args.inject_throttle,
            inject_drift=args.inject_drift,
        )
        server.start()
    except ValueError as exc:
        sys.stderr.write(f"tuner.sim: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(
            f"tuner.sim: cannot listen on {args.bind}:{args.port} ({exc.strerror or exc}); "
            "pass another --port (0 picks a free one).\n"
        )
        return 2
    sim = server.simulation
    stop = threading.Event()
    signal.signal(
        signal.SIGTERM, lambda *_: stop.set()
    )  # before the URL line: a caller may stop us right after
    print(
        f"Ollama simulator {sim.version.text} listening on {server.url} "
        f"({len(sim.gpus)} GPU(s): {', '.join(g.name for g in sim.gpus) or 'none'})",
        flush=True,
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
