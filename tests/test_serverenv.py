"""Server knobs per release, the env file / systemd drop-in / docker flags, and the startup log's config."""

from __future__ import annotations

import pytest

from tuner.serverenv import (
    ServerSettings,
    expected_log_values,
    knobs,
    parse_server_config,
    render_docker_flags,
    render_env_file,
    render_systemd_dropin,
)

# Shortened copies of what the real binaries logged (Ollama 0.12.10 and 0.32.15, this machine).
LOG_0_12_10 = (
    'time=2026-11-25T21:07:00.889Z level=INFO source=routes.go:1525 msg="server config" env="map['
    "CUDA_VISIBLE_DEVICES: HTTPS_PROXY: OLLAMA_CONTEXT_LENGTH:4096 OLLAMA_FLASH_ATTENTION:true "
    "OLLAMA_KEEP_ALIVE:5m0s OLLAMA_KV_CACHE_TYPE:q8_0 OLLAMA_MAX_QUEUE:512 OLLAMA_NEW_ENGINE:false "
    "OLLAMA_NUM_PARALLEL:3 OLLAMA_ORIGINS:[http://localhost https://localhost:* app://* file://*] "
    'OLLAMA_REMOTES:[ollama.com] OLLAMA_SCHED_SPREAD:false http_proxy: no_proxy:]"\n'
)
LOG_0_32_15 = (
    'time=2026-11-25T21:07:01.243Z level=INFO source=routes.go:1951 msg="server config" env="map['
    "LLAMA_ARG_FIT: OLLAMA_CONTEXT_LENGTH:0 OLLAMA_FLASH_ATTENTION:true OLLAMA_KV_CACHE_TYPE:q8_0 "
    "OLLAMA_MAX_QUEUE:512 OLLAMA_NUM_PARALLEL:3 OLLAMA_ORIGINS:[http://127.0.0.1:* vscode-file://*] "
    'OLLAMA_SCHED_SPREAD:false OLLAMA_VULKAN:true no_proxy:]"\n'
)


def test_knobs_follow_the_release() -> None:
    assert "OLLAMA_NEW_ENGINE" in knobs("0.12.10") and "OLLAMA_NEW_ENGINE" in knobs("0.24.0")
    assert "OLLAMA_NEW_ENGINE" not in knobs("0.32.15")  # Era C has none
    assert knobs("0.12.10")["OLLAMA_CONTEXT_LENGTH"].default == "4096"
    assert knobs("0.32.15")["OLLAMA_CONTEXT_LENGTH"].default == "0"  # by VRAM tier
    assert all(knobs(v)["OLLAMA_NUM_PARALLEL"].default == "1" for v in ("0.12.10", "0.24.0", "0.32.15"))


def test_settings_become_env_and_refuse_what_a_release_lacks() -> None:
    s = ServerSettings(flash_attention=True, kv_cache_type="q8_0", num_parallel=4, sched_spread=False)
    env = s.env("0.32.15")
    assert env == {
        "OLLAMA_FLASH_ATTENTION": "1",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_NUM_PARALLEL": "4",
        "OLLAMA_SCHED_SPREAD": "0",
    }
    assert ServerSettings().env("0.12.10") == {}
    assert s.label() == "parallel=4,fa=on,kv=q8_0,spread=off"
    with pytest.raises(ValueError, match="'q5_0'"):
        ServerSettings(kv_cache_type="q5_0").env("0.12.10")
    with pytest.raises(ValueError, match="at least 1"):
        ServerSettings(num_parallel=0).env("0.12.10")


def test_the_three_outputs() -> None:
    env = {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_FLASH_ATTENTION": "1"}
    assert render_env_file(env) == "OLLAMA_FLASH_ATTENTION=1\nOLLAMA_NUM_PARALLEL=4\n"
    dropin = render_systemd_dropin(env)
    assert "[Service]\n" in dropin and 'Environment="OLLAMA_NUM_PARALLEL=4"\n' in dropin
    assert render_docker_flags(env) == "-e OLLAMA_FLASH_ATTENTION=1 -e OLLAMA_NUM_PARALLEL=4"


@pytest.mark.parametrize("log", [LOG_0_12_10, LOG_0_32_15])
def test_the_startup_log_reports_the_settings(log: str) -> None:
    config = parse_server_config("some line\n" + log + "later line\n")
    env = ServerSettings(flash_attention=True, kv_cache_type="q8_0", num_parallel=3, sched_spread=False).env(
        "0.12.10"
    )
    assert {k: config[k] for k in env} == expected_log_values(env)
    assert config["OLLAMA_ORIGINS"].startswith("[http://") and config["no_proxy"] == ""
    assert parse_server_config("no config here") == {}
