"""Build llama.cpp's llama-server (and llama-bench, llama-quantize) from the source published on PyPI.

The source is the llama.cpp tree vendored in the llama-cpp-python sdist, pinned to one exact version
(LLAMA_CPP_PYTHON_VERSION), so a build is reproducible without git or network access beyond PyPI:

    python -m tuner.llamacpp build [--cuda] [--jobs N] [--targets llama-server,llama-bench,llama-quantize]
    python -m tuner.llamacpp path [--cuda | --cpu] [--tool llama-server]
    python -m tuner.llamacpp pack OUT.tar.gz     # a slim source tarball (llama.cpp only) for machines without PyPI

Binaries are installed into `<cache>/llama.cpp/<version>-<cpu|cuda>/bin`, where `<cache>` is
$AUTOTUNE_CACHE, else $XDG_CACHE_HOME/autotune, else ~/.cache/autotune. A marker file (BUILD-OK.json),
written last, says the install is complete: a second `build` finds it and does not rebuild.
The build folder is kept until the build succeeds, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import ConfigError, TunerError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_TARGETS = ("llama-server", "llama-bench", "llama-quantize")
VARIANTS = ("cpu", "cuda")
MARKER = "BUILD-OK.json"
CUDA_ARCHITECTURES = "90"  # Hopper (H100/H200); override with --cuda-arch

# Parts of the llama.cpp tree that no build target here needs (vocab test models, docs, media, tests).
_SKIP_DIRS = ("models", "docs", "media", "benches", "tests", ".github", ".devops", "pocs", "skills")


class BuildError(TunerError):
    pass


def cache_root() -> Path:
    if os.environ.get("AUTOTUNE_CACHE"):
        return Path(os.environ["AUTOTUNE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "autotune"


def install_dir(version: str = LLAMA_CPP_PYTHON_VERSION, variant: str = "cpu") -> Path:
    return cache_root() / "llama.cpp" / f"{version}-{variant}"


@dataclass(frozen=True)
class Install:
    root: Path
    version: str
    variant: str
    commit: str
    targets: tuple[str, ...]
    build_s: float

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def binary(self, tool: str = "llama-server") -> Path:
        return self.bin_dir / tool


def read_install(root: Path) -> Install | None:
    """The install at `root` if its marker says it is complete (and the binaries are still there)."""
    try:
        meta = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    inst = Install(
        root=root,
        version=str(meta.get("version", "")),
        variant=str(meta.get("variant", "")),
        commit=str(meta.get("commit", "")),
        targets=tuple(meta.get("targets", ())),
        build_s=float(meta.get("build_s", 0.0)),
    )
    if not all(inst.binary(t).is_file() for t in inst.targets):
        return None
    return inst


def find_install(
    variant: str | None = None, version: str = LLAMA_CPP_PYTHON_VERSION, tool: str = "llama-server"
) -> Install | None:
    """A complete cached install that has `tool`; with no variant, CUDA first, then CPU."""
    for v in [variant] if variant else ["cuda", "cpu"]:
        inst = read_install(install_dir(version, v))
        if inst is not None and tool in inst.targets:
            return inst
    return None


def cached_binary(tool: str = "llama-server", variant: str | None = None) -> Path | None:
    inst = find_install(variant, tool=tool)
    return inst.binary(tool) if inst else None


# ---- source ---------------------------------------------------------------------------------------


def sdist_name(version: str = LLAMA_CPP_PYTHON_VERSION) -> str:
    return f"llama_cpp_python-{version}.tar.gz"


def download_sdist(version: str, dest: Path) -> Path:
    """`pip download` the llama-cpp-python sdist (no wheels, no dependencies) into `dest`."""
    target = dest / sdist_name(version)
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    cmd += [f"llama-cpp-python=={version}", "-d", str(dest)]
    _log(f"downloading the llama-cpp-python {version} sdist: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not target.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BuildError(
            f"Cannot download llama-cpp-python=={version} from PyPI ({' / '.join(tail) or 'no file'}); "
            "check the network, or pass --sdist PATH to a downloaded sdist."
        )
    return target


def _llama_member(name: str) -> str | None:
    """The path inside llama.cpp of a tar member of the sdist, or None for members we do not need."""
    parts = name.split("/")
    if len(parts) < 4 or parts[1] != "vendor" or parts[2] != "llama.cpp":
        return None
    rel = parts[3:]
    if not rel or rel[0] in _SKIP_DIRS or rel[0] == ".git":
        return None
    return "/".join(rel)


def _is_head_member(name: str) -> bool:
    return name.endswith(".git/modules/vendor/llama.cpp/HEAD")


def extract_llama_cpp(sdist: Path, dest: Path) -> str:
    """Extract the vendored llama.cpp of `sdist` into `dest`; return its git commit ('' if unknown)."""
    commit = ""
    dest.mkdir(parents=True, exist_ok=True)
    found_server = False
    with tarfile.open(sdist, "r:*") as tar:
        for member in tar:
            if _is_head_member(member.name):
                data = tar.extractfile(member)
                commit = data.read().decode().strip() if data else ""
                continue
            rel = _llama_member(member.name)
            if rel is None or not (member.isfile() or member.isdir()):
                continue
            if rel.startswith("tools/server/"):
                found_server = True
            out = dest / rel
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                continue
            with src, open(out, "wb") as fh:
                shutil.copyfileobj(src, fh)
            os.chmod(out, 0o755 if member.mode & 0o111 else 0o644)
    if not (dest / "CMakeLists.txt").is_file():
        raise BuildError(f"'{sdist}' holds no vendor/llama.cpp tree; pass the llama-cpp-python sdist.")
    if not found_server:
        raise BuildError(
            f"The llama.cpp in '{sdist}' has no tools/server; use a newer llama-cpp-python sdist."
        )
    return commit if len(commit) == 40 else ""


def pack_source(sdist: Path, out: Path) -> Path:
    """Write a slim tarball (the llama.cpp tree and its commit, same layout as the sdist) for offline machines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "r:*") as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            if _is_head_member(member.name) or (_llama_member(member.name) is not None and member.isfile()):
                dst.addfile(member, src.extractfile(member))
    return out


# ---- build ----------------------------------------------------------------------------------------


def cmake_args(
    source: Path, build: Path, variant: str, commit: str, cuda_arch: str, native: bool
) -> list[str]:
    args = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries that can be copied into the cache
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_UI=OFF",  # no npm
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download of the web UI: the server runs without it
        "-DLLAMA_OPENSSL=OFF",
        f"-DGGML_NATIVE={'ON' if native else 'OFF'}",
        f"-DLLAMA_BUILD_COMMIT={commit[:7] or 'unknown'}",
    ]
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    if variant == "cuda":
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}"]
    return args


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> None:
    _log("$ " + " ".join(cmd))
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"'{cmd[0]} {cmd[1]}' failed (exit {proc.returncode}); full log in '{log}':\n{tail}")


def build(
    *,
    variant: str = "cpu",
    version: str = LLAMA_CPP_PYTHON_VERSION,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    jobs: int | None = None,
    sdist: Path | None = None,
    cuda_arch: str = CUDA_ARCHITECTURES,
    native: bool = True,
    keep_build: bool = False,
    force: bool = False,
) -> Install:
    """Build (or find in the cache) llama.cpp `targets` for `variant`; return the install."""
    if variant not in VARIANTS:
        raise ConfigError(f"Unknown llama.cpp variant '{variant}'; use one of {', '.join(VARIANTS)}.")
    root = install_dir(version, variant)
    existing = read_install(root)
    if existing is not None and not force and set(targets) <= set(existing.targets):
        _log(f"cached: {root} (built in {existing.build_s:.0f} s)")
        return existing
    if shutil.which("cmake") is None:
        raise ConfigError("cmake is not installed; install cmake (and a C++17 compiler) to build llama.cpp.")
    if variant == "cuda" and shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        raise ConfigError("nvcc (the CUDA toolkit) is not on PATH; install it or build with the CPU variant.")

    work = cache_root() / "llama.cpp" / f"work-{version}-{variant}"
    work.mkdir(parents=True, exist_ok=True)
    with open(work.parent / f".lock-{version}-{variant}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build of the same variant waits, then finds the cache
        existing = read_install(root)
        if existing is not None and not force and set(targets) <= set(existing.targets):
            _log(f"cached: {root} (built by another process in {existing.build_s:.0f} s)")
            shutil.rmtree(work, ignore_errors=True)
            return existing
        return _build_locked(
            root, work, variant, version, targets, jobs, sdist, cuda_arch, native, keep_build
        )


def _build_locked(
    root: Path,
    work: Path,
    variant: str,
    version: str,
    targets: tuple[str, ...],
    jobs: int | None,
    sdist: Path | None,
    cuda_arch: str,
    native: bool,
    keep_build: bool,
) -> Install:
    source, build_dir = work / "src", work / "build"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    start = time.monotonic()
    if not (work / "commit").is_file():  # written after a complete extraction
        sdist_path = sdist or _default_sdist(version)
        _log(f"extracting llama.cpp from '{sdist_path}'")
        partial = work / "src.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)
        commit = extract_llama_cpp(sdist_path, partial)
        partial.rename(source)
        (work / "commit").write_text(commit)
    commit = (work / "commit").read_text().strip()

    env = dict(os.environ)
    env["GIT_CEILING_DIRECTORIES"] = str(work)  # never pick up the commit of a repo the cache sits in
    if variant == "cuda" and shutil.which("nvcc") is None:
        env["PATH"] = "/usr/local/cuda/bin:" + env.get("PATH", "")
    _run(cmake_args(source, build_dir, variant, commit, cuda_arch, native), log, env)
    n_jobs = jobs or os.cpu_count() or 2
    _run(
        ["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(n_jobs), "--target", *targets],
        log,
        env,
    )

    bin_dir = root / "bin"
    if root.exists():
        shutil.rmtree(root)
    bin_dir.mkdir(parents=True)
    for target in targets:
        built = build_dir / "bin" / target
        if not built.is_file():
            raise BuildError(f"The build finished but '{built}' is missing; see '{log}'.")
        shutil.copy2(built, bin_dir / target)
    build_s = time.monotonic() - start
    shutil.copy2(log, root / "build.log")
    meta = {
        "version": version,
        "variant": variant,
        "commit": commit,
        "targets": list(targets),
        "build_s": round(build_s, 1),
        "jobs": n_jobs,
        "cuda_arch": cuda_arch if variant == "cuda" else None,
        "native": native,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (root / MARKER).write_text(json.dumps(meta, indent=2) + "\n")  # written last: the install is complete
    if not keep_build:
        shutil.rmtree(work, ignore_errors=True)
    _log(f"built {', '.join(targets)} in {build_s:.0f} s with {n_jobs} jobs into {bin_dir}")
    inst = read_install(root)
    assert inst is not None
    return inst


def _default_sdist(version: str) -> Path:
    env = os.environ.get("AUTOTUNE_LLAMA_SDIST")
    if env:
        return Path(env)
    return download_sdist(version, cache_root() / "sdist")


def _log(message: str) -> None:
    print(f"[llamacpp] {message}", file=sys.stderr, flush=True)


# ---- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.llamacpp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build llama.cpp tools into the cache (no-op when cached)")
    b.add_argument("--cuda", action="store_true", help="build with CUDA (GGML_CUDA=ON)")
    b.add_argument("--cuda-arch", default=CUDA_ARCHITECTURES, help="CMAKE_CUDA_ARCHITECTURES (default 90)")
    b.add_argument("--jobs", "-j", type=int, default=None, help="parallel compile jobs (default: all cores)")
    b.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="comma-separated cmake targets")
    b.add_argument(
        "--sdist", type=Path, default=None, help="a downloaded llama-cpp-python sdist (or `pack` output)"
    )
    b.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION, help=argparse.SUPPRESS)
    b.add_argument("--portable", action="store_true", help="GGML_NATIVE=OFF (binaries for other CPUs)")
    b.add_argument("--keep-build", action="store_true", help="keep the source and build folders")
    b.add_argument("--force", action="store_true", help="rebuild even when cached")
    p = sub.add_parser("path", help="print the cached binary's path (exit 1 if not built)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cuda", action="store_const", const="cuda", dest="variant")
    g.add_argument("--cpu", action="store_const", const="cpu", dest="variant")
    p.add_argument("--tool", default="llama-server")
    k = sub.add_parser("pack", help="write a slim llama.cpp source tarball from the sdist")
    k.add_argument("out", type=Path)
    k.add_argument("--sdist", type=Path, default=None)
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
            inst = build(
                variant="cuda" if args.cuda else "cpu",
                version=args.version,
                targets=targets,
                jobs=args.jobs,
                sdist=args.sdist,
                cuda_arch=args.cuda_arch,
                native=not args.portable,
                keep_build=args.keep_build,
                force=args.force,
            )
            tool = "llama-server" if "llama-server" in inst.targets else inst.targets[0]
            print(inst.binary(tool))
            return 0
        if args.command == "path":
            path = cached_binary(args.tool, args.variant)
            if path is None:
                which = f" ({args.variant})" if args.variant else ""
                print(
                    f"{args.tool}{which} is not built in '{cache_root() / 'llama.cpp'}'; "
                    "run 'python -m tuner.llamacpp build'.",
                    file=sys.stderr,
                )
                return 1
            print(path)
            return 0
        out = pack_source(args.sdist or _default_sdist(LLAMA_CPP_PYTHON_VERSION), args.out)
        print(out)
        return 0
    except TunerError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
