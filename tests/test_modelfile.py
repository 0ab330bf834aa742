"""Modelfiles, llama-server command lines and presets: what autotune writes, read back the way the
engines read it."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from tuner.errors import ConfigError
from tuner.modelfile import (
    parse_modelfile,
    parse_preset,
    render_artifact,
    render_llama_server_command,
    render_llama_server_script,
    render_modelfile,
    render_preset_file,
    render_preset_section,
)

# ---------------------------------------------------------------------------------------------------------
# Modelfile
# ---------------------------------------------------------------------------------------------------------


def test_round_trip():
    text = render_modelfile("qwen2.5:14b-instruct-q4_K_M", 41, 16384, ["decode 41.2 tok/s", "peak 13.1 GiB"])
    assert parse_modelfile(text) == {
        "from": "qwen2.5:14b-instruct-q4_K_M",
        "parameters": {"num_gpu": 41, "num_ctx": 16384},
    }
    assert text.splitlines()[:2] == ["# decode 41.2 tok/s", "# peak 13.1 GiB"]
    assert "FROM qwen2.5:14b-instruct-q4_K_M\nPARAMETER num_gpu 41\nPARAMETER num_ctx 16384\n" in text


def test_num_gpu_minus_one_is_left_to_ollama():
    text = render_modelfile("llama3.2", -1, 8192)
    assert "num_gpu" not in text
    assert parse_modelfile(text)["parameters"] == {"num_ctx": 8192}


def test_num_gpu_zero_is_written():
    assert parse_modelfile(render_modelfile("llama3.2", 0, 2048))["parameters"]["num_gpu"] == 0


@pytest.mark.parametrize("tag", ["/models/my model/q4.gguf", 'odd "name" here', "./weights dir"])
def test_values_with_spaces_and_quotes_round_trip(tag):
    assert parse_modelfile(render_modelfile(tag, 10, 4096))["from"] == tag


def test_multi_line_comments_stay_comments():
    text = render_modelfile("llama3.2", 5, 4096, ["first\nsecond"])
    assert text.startswith("# first\n# second\nFROM llama3.2\n")


def test_parse_reads_what_ollama_accepts():
    text = '''# a comment
from llama3.2
PARAMETER num_ctx 8192
PARAMETER temperature 0.7
PARAMETER use_mmap false
PARAMETER stop "<|eot_id|>"
PARAMETER stop <|start_header_id|>
PARAMETER mirostat 1
TEMPLATE """{{ if .System }}{{ .System }}
{{ end }}{{ .Prompt }}"""
SYSTEM You are helpful.
MESSAGE user Hello there
LICENSE """MIT"""
'''
    parsed = parse_modelfile(text)
    assert parsed["from"] == "llama3.2"
    assert parsed["parameters"] == {
        "num_ctx": 8192,
        "temperature": 0.7,
        "use_mmap": False,
        "stop": ["<|eot_id|>", "<|start_header_id|>"],
    }  # mirostat is deprecated: skipped, as Ollama does
    assert parsed["template"] == "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"
    assert parsed["system"] == "You are helpful."
    assert parsed["messages"] == [("user", "Hello there")]
    assert parsed["license"] == ["MIT"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PARAMETER num_ctx 2048\n", "no FROM line"),
        ("FROM x\nFORM y\n", "'FORM y'"),
        ("FROM x\nFORM y\n", 'command must be one of "from"'),
        ("FROM x\nPARAMETER NUM_CTX 2048\n", "unknown parameter 'NUM_CTX'"),
        ("FROM x\nPARAMETER num_ctx lots\n", "invalid int value [lots]"),
        ("FROM x\nPARAMETER temperature hot\n", "invalid float value [hot]"),
        ('FROM x\nSYSTEM """never closed\n', 'unterminated """ value'),
        ("FROM x\nMESSAGE robot hi\n", "message role"),
        ("FROM\n", "FROM needs a value"),
    ],
)
def test_parse_errors_quote_the_line(text, message):
    with pytest.raises(ConfigError) as info:
        parse_modelfile(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("tag", "num_gpu", "num_ctx"),
    [("", 1, 2048), ("x", -2, 2048), ("x", 1, 0), ("x", 1.5, 2048), ("x", True, 2048), ('a"""b', 1, 2048)],
)
def test_render_refuses_what_ollama_would_not_read(tag, num_gpu, num_ctx):
    with pytest.raises(ConfigError):
        render_modelfile(tag, num_gpu, num_ctx)


# ---------------------------------------------------------------------------------------------------------
# llama-server
# ---------------------------------------------------------------------------------------------------------


def test_command_line_quotes_paths_with_spaces():
    command = render_llama_server_command("/models/Qwen 2.5/it's q4.gguf", 33, 8192, "on", "q8_0")
    assert shlex.split(command) == [
        "llama-server",
        "-m",
        "/models/Qwen 2.5/it's q4.gguf",
        "-ngl",
        "33",
        "-c",
        "8192",
        "-np",
        "1",
        "--flash-attn",
        "on",
        "--cache-type-k",
        "q8_0",
        "--cache-type-v",
        "q8_0",
    ]


def test_command_line_leaves_layers_to_llama_cpp_for_minus_one():
    words = shlex.split(
        render_llama_server_command("/m.gguf", -1, 4096, binary="/opt/llama cpp/llama-server")
    )
    assert words == ["/opt/llama cpp/llama-server", "-m", "/m.gguf", "-c", "4096", "-np", "1"]


@pytest.mark.parametrize(("flash_attn", "kv"), [("yes", None), (None, "q3_k"), ("ON", None)])
def test_command_line_refuses_unknown_values(flash_attn, kv):
    with pytest.raises(ConfigError):
        render_llama_server_command("/m.gguf", 10, 4096, flash_attn, kv)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell script")
def test_script_passes_exactly_these_arguments(tmp_path):
    fake = tmp_path / "fake server"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    model = "/models/a b/$HOME `x` 'q'.gguf"
    script = render_llama_server_script(model, 20, 2048, "auto", None, binary=str(fake), comment_lines=["hi"])
    assert script.startswith("#!/bin/sh\n# hi\n")
    path = tmp_path / "run.sh"
    path.write_text(script)
    out = subprocess.run(
        ["sh", str(path), "--port", "8081"], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        "-m",
        model,
        "-ngl",
        "20",
        "-c",
        "2048",
        "-np",
        "1",
        "--flash-attn",
        "auto",
        "--port",
        "8081",
    ]


def test_preset_round_trip():
    text = render_preset_file(
        [
            render_preset_section(
                "qwen-fastest", "/models/Qwen 2.5/q4.gguf", 49, 8192, "on", "q8_0", ["why"]
            ),
            render_preset_section("qwen-leanest", "/models/q4.gguf", -1, 2048),
        ],
        ["autotune presets"],
    )
    assert "version" not in text  # a top-level key makes llama-server list a phantom "default" model
    assert parse_preset(text) == {
        "qwen-fastest": {
            "model": "/models/Qwen 2.5/q4.gguf",
            "n-gpu-layers": "49",
            "ctx-size": "8192",
            "parallel": "1",
            "flash-attn": "on",
            "cache-type-k": "q8_0",
            "cache-type-v": "q8_0",
        },
        "qwen-leanest": {"model": "/models/q4.gguf", "ctx-size": "2048", "parallel": "1"},
    }


def test_parse_preset_follows_llama_cpp_comments():
    parsed = parse_preset("version = 1\n[*]\nc = 8192 ; trailing comment\n# comment\n[m]\nmodel = /a.gguf\n")
    assert parsed == {"default": {"version": "1"}, "*": {"c": "8192"}, "m": {"model": "/a.gguf"}}


@pytest.mark.parametrize("path", ["/models/a;b.gguf", "/models/#1.gguf", " /lead.gguf"])
def test_preset_refuses_values_it_cannot_hold(path):
    with pytest.raises(ConfigError):
        render_preset_section("m", path, 10, 4096)


# ---------------------------------------------------------------------------------------------------------
# Either engine
# ---------------------------------------------------------------------------------------------------------


def test_extra_arguments_and_parallel():
    words = shlex.split(
        render_llama_server_command("/m.gguf", 5, 4096, parallel=None, extra_args=["--fit", "off"])
    )
    assert words == ["llama-server", "-m", "/m.gguf", "-ngl", "5", "-c", "4096", "--fit", "off"]


def test_render_artifact_per_engine():
    suffix, text = render_artifact("ollama", "llama3.2", 20, 4096)
    assert suffix == "Modelfile" and parse_modelfile(text)["parameters"] == {"num_gpu": 20, "num_ctx": 4096}
    suffix, text = render_artifact("llama-server", "/m x.gguf", 20, 4096, "on", "q4_0")
    assert suffix == "llama-server.sh" and text.startswith("#!/bin/sh\n")
    assert (
        "-m '/m x.gguf' -ngl 20 -c 4096 -np 1 --flash-attn on --cache-type-k q4_0 --cache-type-v q4_0" in text
    )
    with pytest.raises(ConfigError, match="vllm"):
        render_artifact("vllm", "x", 1, 2048)
