"""Build a real Ollama from its Go module, one pinned release per era (../shared/real-ollama.md).

    Era A  0.12.10  memory.go estimate       CPU backend compiled in through cgo: `go build`
    Era B  0.24.0   layout/fit loop          the same
    Era C  0.32.15  llama-server subprocess  cmake superbuild: Go binary + Ollama's llama-server

Eras A/B: the module zip omits every vendor/ folder, so the header-only libraries llama.cpp vendors
(nlohmann/json, miniaudio, stb) are copied in from the pinned llama.cpp source before `go build`.
Era C: Ollama's CMake builds llama-server from the llama.cpp release named in LLAMA_CPP_VERSION; we give
it that source from PyPI (FETCHCONTENT_SOURCE_DIR_LLAMA_CPP) and apply Ollama's compat patches
ourselves, because its superbuild skips them for a source override. GGML_CPU_ALL_VARIANTS is off: one CPU
backend for this machine instead of ten variants (a third of the compile time).

The install is `<cache>/ollama/<version>-<variant>/bin/ollama` with `lib/ollama/` beside `bin/`, the
layout Ollama's Linux packages use, so it finds its runner libraries the same way.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tuner.engines.sources import (
    copy_tree,
    go_env,
    go_version,
    llama_cpp_source,
    ollama_module,
)
from tuner.engines.steps import BuildError, fmt_s, run_step, say
from tuner.engines.work import build_meta, locked, work_dir, write_marker
from tuner.errors import ConfigError
from tuner.installs import Install, cpu_march, install_dir, ollama_release, read_install, usable
from tuner.releases import era as era_of

VENDORED_HEADERS = ("nlohmann", "miniaudio", "stb")  # what Era A/B's cgo sources include from vendor/


def _ldflags(version: str) -> str:
    return (
        f"-s -w -X=github.com/ollama/ollama/version.Version={version} "
        "-X=github.com/ollama/ollama/server.mode=release"
    )


def _build_cgo(version: str, src: Path, out: Path, log: Path, jobs: int, march: str) -> None:
    """Eras A/B: the CPU backend is compiled into the Go binary."""
    vendor = src / "llama" / "llama.cpp" / "vendor"
    llama_vendor = llama_cpp_source() / "vendor"
    for name in VENDORED_HEADERS:
        if not (vendor / name).exists():
            shutil.copytree(llama_vendor / name, vendor / name)
    env = go_env()
    env["CGO_ENABLED"] = "1"
    if march:
        env["CGO_CFLAGS"] = env["CGO_CXXFLAGS"] = f"-O3 -march={march}"
    cmd = ["go", "build", "-p", str(jobs), "-trimpath", "-ldflags", _ldflags(version), "-o", str(out), "."]
    run_step(f"ollama {version}: go build (compiles ggml through cgo)", cmd, log, cwd=src, env=env)


def _build_superbuild(version: str, src: Path, work: Path, root: Path, log: Path, jobs: int) -> None:
    """Era C: Ollama's CMake superbuild (the Go binary, llama-server and llama-quantize)."""
    pinned = (src / "LLAMA_CPP_VERSION").read_text().strip()
    if not pinned.startswith("b") or not pinned[1:].isdigit():
        raise BuildError(f"Ollama {version} pins llama.cpp '{pinned}', which is not a release build number.")
    llama = work / "llama.cpp"
    if not (llama / "CMakeLists.txt").is_file():
        copy_tree(llama_cpp_source(int(pinned[1:])), llama)
    patch_dir = src / "llama" / "compat"
    env = go_env()
    env["GIT_CEILING_DIRECTORIES"] = str(work)
    run_step(
        f"ollama {version}: apply Ollama's llama.cpp compat patches",
        ["cmake", f"-DPATCH_DIR={patch_dir}", "-P", str(patch_dir / "apply-patch.cmake")],
        log,
        cwd=llama,
        env=env,
    )
    build = work / "build"
    configure = [
        "cmake",
        "-S",
        str(src),
        "-B",
        str(build),
        f"-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP={llama}",
        f"-DOLLAMA_VERSION={version}",
        f"-DOLLAMA_BUILD_PARALLEL={jobs}",
        f"-DOLLAMA_GO_OUTPUT={root / 'bin' / 'ollama'}",
        "-DGGML_CPU_ALL_VARIANTS=OFF",
    ]
    run_step(f"ollama {version}: configure", configure, log, env=env)
    run_step(
        f"ollama {version}: build (Go binary, llama-server {pinned})",
        ["cmake", "--build", str(build), "--parallel", str(jobs)],
        log,
        env=env,
    )
    built_lib = build / "lib" / "ollama"
    if not (built_lib / "llama-server").is_file():
        raise BuildError(f"The build finished but '{built_lib / 'llama-server'}' is missing; see '{log}'.")
    shutil.copytree(built_lib, root / "lib" / "ollama", symlinks=True)


def build(version: str, *, variant: str = "cpu", jobs: int | None = None, force: bool = False) -> Install:
    """Build (or find in the cache) Ollama `version` ('0.12.10', or an era letter)."""
    version = ollama_release(version)
    if variant != "cpu":
        raise ConfigError(
            f"Ollama variant '{variant}' is not built by this installer yet; build the cpu variant, and "
            "for a GPU see README 'Real Ollama on a GPU machine'."
        )
    era = era_of(version)
    root = install_dir("ollama", version, variant)

    def cached() -> Install | None:
        return None if force else usable(read_install(root))

    if (hit := cached()) is not None:
        say(f"ollama {version} (Era {era}, {variant}): cached in {root} (built in {fmt_s(hit.build_s)})")
        return hit
    go = go_version()
    if era == "C" and shutil.which("cmake") is None:
        raise ConfigError(
            "cmake is not installed; Ollama >= 0.30 needs cmake (and a C++17 compiler) to build."
        )
    with locked(f"ollama-{version}-{variant}"):
        if (hit := cached()) is not None:
            return hit
        start = time.monotonic()
        work = work_dir("ollama", version, variant)
        src, log = work / "src", work / "build.log"
        work.mkdir(parents=True, exist_ok=True)
        if not (src / "go.mod").is_file():
            copy_tree(ollama_module(version), src)
        n_jobs = jobs or os.cpu_count() or 2
        march = cpu_march() if era != "C" else ""
        shutil.rmtree(root, ignore_errors=True)
        (root / "bin").mkdir(parents=True)
        if era == "C":
            _build_superbuild(version, src, work, root, log, n_jobs)
        else:
            _build_cgo(version, src, root / "bin" / "ollama", log, n_jobs, march)
        shutil.copy2(log, root / "build.log")
        took = time.monotonic() - start
        meta = build_meta("ollama", version, variant, ["ollama"], took, n_jobs, era=era, go=go, march=march)
        inst = write_marker(root, meta)
        shutil.rmtree(work, ignore_errors=True)
    say(f"ollama {version} (Era {era}, {variant}): built in {fmt_s(took)} with {n_jobs} jobs into {root}")
    return inst
