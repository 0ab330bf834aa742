"""Build and find the real engines autotune runs against, from the registries this project reaches.

    python -m tuner.engines build ollama [--version 0.12.10,0.32.15 | --version A,B,C]
    python -m tuner.engines build llama-server [--cuda] [--cuda-arch 90] [--portable]
    python -m tuner.engines build ci            # what .ci/run needs: llama.cpp's tools + Ollama A, B and C
    python -m tuner.engines path ollama [--version 0.12.10]
    python -m tuner.engines path llama-server [--tool llama-quantize] [--cpu | --cuda]
    python -m tuner.engines list                # what the cache holds, with build times
    python -m tuner.engines pack OUT.tar.gz     # the llama.cpp source, slim, for a machine with no network
                                                # (there: AUTOTUNE_LLAMA_SDIST=OUT.tar.gz ... build ...)

Every build is cached (see tuner/engines/cache.py); building again returns at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from tuner.engines import llamacpp, ollama
from tuner.engines.sources import pack_llama_cpp
from tuner.engines.steps import fmt_s
from tuner.errors import TunerError
from tuner.installs import cache_root, find_llama_cpp, find_ollama, installs, ollama_release

CI_OLLAMA = ("A", "B", "C")
JOBS = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 256),
    default=None,
    help="Parallel compile jobs (default: all cores).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build and find real engines (Ollama releases, llama.cpp's llama-server) in autotune's cache."""


@cli.group("build")
def build_group() -> None:
    """Build an engine into the cache (a no-op when it is cached)."""


def _versions(text: str) -> list[str]:
    return [ollama_release(v.strip()) for v in text.split(",") if v.strip()]


@build_group.command("ollama")
@click.option(
    "--version",
    "versions",
    default="A,B,C",
    show_default=True,
    help="Releases or eras, comma-separated: A=0.12.10, B=0.24.0, C=0.32.15, or any release number.",
)
@JOBS
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
def build_ollama(versions: str, jobs: int | None, force: bool) -> None:
    """Build Ollama releases (CPU) from the Go module proxy."""
    for version in _versions(versions):
        click.echo(ollama.build(version, jobs=jobs, force=force).binary("ollama"))


@build_group.command("llama-server")
@click.option("--cuda", is_flag=True, help="Build with CUDA (GGML_CUDA=ON).")
@click.option(
    "--cuda-arch", default=llamacpp.CUDA_ARCHITECTURES, show_default=True, help="CMAKE_CUDA_ARCHITECTURES."
)
@click.option("--portable", is_flag=True, help="GGML_NATIVE=OFF: binaries that run on other CPUs.")
@click.option("--tools", default=",".join(llamacpp.DEFAULT_TOOLS), show_default=True, help="cmake targets.")
@JOBS
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
def build_llama_server(
    cuda: bool, cuda_arch: str, portable: bool, tools: str, jobs: int | None, force: bool
) -> None:
    """Build llama.cpp's llama-server, llama-bench and llama-quantize."""
    inst = llamacpp.build(
        variant="cuda" if cuda else "cpu",
        tools=tuple(t.strip() for t in tools.split(",") if t.strip()),
        jobs=jobs,
        cuda_arch=cuda_arch,
        native=not portable,
        force=force,
    )
    click.echo(inst.binary("llama-server" if "llama-server" in inst.tools else inst.tools[0]))


@build_group.command("ci")
@JOBS
def build_ci(jobs: int | None) -> None:
    """Everything the test suite runs against: llama.cpp's tools, then Ollama Eras A, B and C."""
    llamacpp.build(jobs=jobs)
    for era in CI_OLLAMA:
        ollama.build(era, jobs=jobs)
    _list()


@cli.command("path")
@click.argument("engine", type=click.Choice(["ollama", "llama-server"]))
@click.option("--version", default="A", show_default=True, help="Ollama: the release or era.")
@click.option("--tool", default="llama-server", show_default=True, help="llama.cpp: which tool.")
@click.option("--cpu", "variant", flag_value="cpu", default=None)
@click.option("--cuda", "variant", flag_value="cuda")
def path_cmd(engine: str, version: str, tool: str, variant: str | None) -> None:
    """Print a cached binary's path (exit 1 if it is not built)."""
    if engine == "ollama":
        inst = find_ollama(version, variant)
        hint = f"python -m tuner.engines build ollama --version {version}"
        name = "ollama"
    else:
        inst = find_llama_cpp(variant, tool)
        hint = "python -m tuner.engines build llama-server" + (" --cuda" if variant == "cuda" else "")
        name = tool
    if inst is None:
        raise TunerError(f"{name} is not built in '{cache_root()}'; run '{hint}'.")
    click.echo(inst.binary(name))


def _list() -> None:
    found = installs()
    if not found:
        click.echo(f"nothing built yet in '{cache_root()}'")
    for inst in found:
        era = f" (Era {inst.meta['era']})" if inst.meta.get("era") else ""
        click.echo(
            f"{inst.product} {inst.version}{era} {inst.variant}: built in {fmt_s(inst.build_s)} on "
            f"{inst.meta.get('cores', '?')} cores at {inst.meta.get('built_at', '?')}; {inst.bin_dir}"
        )


@cli.command("pack")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def pack_cmd(out: Path) -> None:
    """Write the llama.cpp source as a slim tarball, for a build on a machine with no network."""
    click.echo(pack_llama_cpp(out))


@cli.command("list")
def list_cmd() -> None:
    """What the cache holds, with build times."""
    _list()


def main(argv: list[str] | None = None) -> None:
    from tuner.cliutil import run_command  # the house way: one-line errors, exit codes, Ctrl-C

    run_command(
        cli,
        argv,
        prog="python -m tuner.engines",
        name="engines",
        interrupted="interrupted; run the same build again to continue.",
    )


if __name__ == "__main__":
    main()
