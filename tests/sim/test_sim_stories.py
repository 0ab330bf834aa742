"""The four user situations (../shared/user-stories.md), reproduced through the official client.

Each runs at the Ollama release of its era where the mechanism depends on it: story 4 (gemma3, default
context 2048) is a 0.6.x story, story 5's split 7,7,7,6,6,6,6,6 comes from the estimator before 0.7.0
walked the layers last to first, and the big automatic context of story 1 is the VRAM-tier default of
newer releases (at 0.12.10 with its 4096 default, llama3.3:70b fits two 24 GB cards; see the last test).
"""

from __future__ import annotations

import ollama
import pytest

from tuner.errors import is_out_of_memory
from tuner.sim import Simulation


def _decode(r: ollama.GenerateResponse) -> float:
    return r.eval_count / (r.eval_duration / 1e9)


def test_a_two_4090s_automatic_context_spills_but_81_layers_at_4096_fit(make_server, make_client) -> None:
    client = make_client(make_server(gpus="2xRTX4090", version="0.32.0"))
    auto = client.generate("llama3.3:70b", "Hello", options={"num_predict": 16})
    (ps,) = client.ps().models
    assert ps.size_vram < ps.size and ps.context_length == 131072
    client.generate("llama3.3:70b", "", keep_alive=0)
    forced = client.generate(
        "llama3.3:70b", "Hello", options={"num_predict": 16, "num_gpu": 81, "num_ctx": 4096}
    )
    (ps,) = client.ps().models
    assert ps.size_vram == ps.size and ps.context_length == 4096
    assert _decode(forced) > 3 * _decode(auto)


def test_b_one_4090_big_context_spills_default_fits(make_server, make_client) -> None:
    client = make_client(make_server(gpus="1xRTX4090"))
    big = client.generate("deepseek-r1:32b", "Hello", options={"num_predict": 16, "num_ctx": 131072})
    (ps,) = client.ps().models
    assert ps.size_vram < ps.size
    default = client.generate("deepseek-r1:32b", "Hello", options={"num_predict": 16})
    (ps,) = client.ps().models
    assert ps.size_vram == ps.size and ps.context_length == 4096
    assert _decode(default) > 5 * _decode(big)
    client.generate("deepseek-r1:32b", "", options={"num_ctx": 8192})
    (ps,) = client.ps().models
    assert ps.size_vram == ps.size and ps.context_length == 8192  # some bigger context still fits
    with pytest.raises(ollama.ResponseError) as info:
        client.generate("deepseek-r1:32b", "", options={"num_ctx": 131072, "num_gpu": 999})
    assert info.value.status_code == 500 and is_out_of_memory(info.value.error)


def test_c_four_1070ti_gemma3_131072_fails_8192_works(make_server, make_client) -> None:
    client = make_client(make_server(gpus="4xGTX1070Ti", host_ram="16GiB", version="0.6.2"))
    for options in ({"num_ctx": 131072}, {"num_ctx": 131072, "num_gpu": 49}):
        with pytest.raises(ollama.ResponseError) as info:
            client.generate("gemma3:12b", "Hello", options=options)
        assert info.value.status_code == 500 and is_out_of_memory(info.value.error)
        assert info.value.error.startswith("model requires more system memory (")
    r = client.generate("gemma3:12b", "Hello", options={"num_ctx": 8192, "num_predict": 8})
    assert r.done and client.ps().models[0].size_vram == client.ps().models[0].size


def test_c_also_fails_on_0_12_10(make_server, make_client) -> None:
    client = make_client(make_server(gpus="4xGTX1070Ti", host_ram="16GiB"))
    for options in ({"num_ctx": 131072}, {"num_ctx": 131072, "num_gpu": 49}):
        with pytest.raises(ollama.ResponseError) as info:
            client.generate("gemma3:12b", "", options=options)
        assert info.value.status_code == 500 and is_out_of_memory(info.value.error)
    assert client.generate("gemma3:12b", "", options={"num_ctx": 8192}).done_reason == "load"


def test_d_eight_a800_automatic_fails_on_cuda0_explicit_loads(make_server, make_client) -> None:
    kw = dict(gpus="8xA800-80GB", host_ram="1TiB", version="0.5.7")
    client = make_client(make_server(**kw))
    with pytest.raises(ollama.ResponseError) as info:
        client.generate("deepseek-r1:671b-q8_0", "Hello")
    assert info.value.status_code == 500
    assert (
        info.value.error
        == "llama runner process has terminated: error loading model: unable to allocate CUDA0 buffer"
    )
    core = Simulation(noise=0, **kw)
    auto = core.plan("deepseek-r1:671b-q8_0")
    largest = max(n for n in range(1, 63) if core.plan("deepseek-r1:671b-q8_0", num_gpu=n).ok)
    assert auto.num_gpu == 51 and largest < auto.num_gpu
    r = client.generate("deepseek-r1:671b-q8_0", "Hello", options={"num_gpu": largest, "num_predict": 8})
    (ps,) = client.ps().models
    assert r.done and ps.size_vram < ps.size
    assert client.generate("deepseek-r1:671b-q8_0", "", options={"num_gpu": 43}).done_reason == "load"


def test_at_0_12_10_defaults_two_4090s_hold_llama33_70b(make_server, make_client) -> None:
    client = make_client(make_server(gpus="2xRTX4090"))
    client.generate("llama3.3:70b", "")
    (ps,) = client.ps().models
    assert ps.context_length == 4096 and ps.size_vram == ps.size
    client.generate("llama3.3:70b", "", options={"num_ctx": 16384})
    (ps,) = client.ps().models
    assert ps.size_vram < ps.size  # a bigger context does spill
