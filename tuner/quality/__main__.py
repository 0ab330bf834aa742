"""Measure the quality of tags without a study and print the table:

    python -m tuner.quality TAG TAG... [--host URL] [--tokens 32] [--repeat 2]
    python -m tuner.quality A.gguf B.gguf... --engine llama-server [--llama-server PATH] [--kv q8_0]

The most precise tag is the reference. --repeat measures again, to see that the figures land within their
own stated spread. Bad input: one line, exit 2; a runtime failure: one line, exit 1.
"""

from __future__ import annotations

import argparse
import sys

from tuner.backend.base import Backend
from tuner.errors import ConfigError, TunerError
from tuner.fidelity import TagQuality, fmt_loss, fmt_top1
from tuner.quality.run import QualitySettings, measure_quality


def _backend(args: argparse.Namespace) -> Backend:
    if args.engine == "llama-server":
        from tuner.backend.llamaserver import LlamaServerBackend  # noqa: PLC0415

        return LlamaServerBackend(args.llama_server)
    from tuner.backend.ollama import OllamaBackend  # noqa: PLC0415

    return OllamaBackend(args.host)


def _row(q: TagQuality, elapsed_run: int) -> str:
    d = q.first_divergence
    div = f"{d.mean:.1f} ({d.low:.1f}-{d.high:.1f})" if d is not None and not q.is_reference else "-"
    loss = fmt_loss(q) if q.measured else f"not measured: {q.why_not}"
    kv = q.kv_cache_type or "default"
    return f"| {elapsed_run} | {q.tag} | {kv} | {loss} | {fmt_top1(q)} | {div} | {q.positions} | {q.method or '-'} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("tags", nargs="+", help="Ollama tags, or GGUF paths with --engine llama-server")
    parser.add_argument("--engine", choices=["ollama", "llama-server"], default="ollama")
    parser.add_argument("--host", default=None, help="Ollama URL (default: OLLAMA_HOST or 127.0.0.1:11434)")
    parser.add_argument("--llama-server", default=None, help="llama-server binary")
    parser.add_argument(
        "--kv", default=None, help="llama-server: also measure the tags with this KV cache type"
    )
    parser.add_argument("--tokens", type=int, default=32, help="reference tokens per prompt (default 32)")
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times (default 1)")
    args = parser.parse_args(argv)
    if args.tokens < 4 or args.repeat < 1:
        print(f"--tokens {args.tokens} must be >= 4 and --repeat {args.repeat} >= 1.", file=sys.stderr)
        return 2
    try:
        backend = _backend(args)
        try:
            quants = {t: backend.model_info(t).quantization for t in args.tags}
            variants = [(t, None) for t in args.tags] + ([(t, args.kv) for t in args.tags] if args.kv else [])
            print(
                "| run | tag | KV cache | quality loss: KL (95% interval) | top-1 | first divergence | positions | method |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for run in range(1, args.repeat + 1):
                result = measure_quality(backend, variants, quants, QualitySettings(num_predict=args.tokens))
                for q in result.values():
                    print(_row(q, run))
        finally:
            backend.close()
    except ConfigError as exc:
        print(f"python -m tuner.quality: {exc}", file=sys.stderr)
        return 2
    except TunerError as exc:
        print(f"python -m tuner.quality: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
