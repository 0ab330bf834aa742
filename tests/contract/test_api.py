"""The Ollama HTTP API as autotune relies on it, checked field by field on every backend.

Shapes and types always; values where they are fixed by the model file (the tiny model's GGUF keys, tensor
names, quantization levels) or by what was asked (num_ctx, num_predict). Where releases differ on purpose,
the test says which era does what, and README "Conformance" lists it.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import ollama
import pytest

from tests.contract.conftest import Target

HEX64 = re.compile(r"^[0-9a-f]{64}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
QUANT_LEVEL = {"f16": "F16", "q8_0": "Q8_0", "q4_K_M": "Q4_K_M"}
TINY_KEYS = {  # what tuner.ggufgen wrote into the file
    "general.architecture": "llama",
    "llama.block_count": 8,
    "llama.context_length": 32768,
    "llama.embedding_length": 256,
    "llama.feed_forward_length": 768,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": 2,
    "llama.vocab_size": 2048,
}
TINY_TENSORS = 3 + 8 * 9  # token_embd, output_norm, output + 9 per block


def _ps(http: httpx.Client) -> list[dict[str, Any]]:
    r = http.get("/api/ps")
    assert r.status_code == 200
    return r.json()["models"]


def _wait_unloaded(http: httpx.Client, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _ps(http):
        assert time.monotonic() < deadline, f"still loaded after {timeout_s} s: {_ps(http)}"
        time.sleep(0.05)


# -- server and model listing -----------------------------------------------------------------------


def test_version(target: Target, http: httpx.Client) -> None:
    r = http.get("/api/version")
    assert r.status_code == 200
    assert r.json() == {"version": target.version}


def test_tags_lists_each_imported_tag(target: Target, http: httpx.Client) -> None:
    r = http.get("/api/tags")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    for tag, name in target.tags.items():
        m = models[name]
        assert m["model"] == name
        assert RFC3339.match(m["modified_at"]), m["modified_at"]
        assert isinstance(m["size"], int) and m["size"] > 1_000_000
        assert HEX64.match(m["digest"])
        d = m["details"]
        assert d["format"] == "gguf"
        assert d["family"] == "llama" and d["families"] == ["llama"]
        assert d["quantization_level"] == QUANT_LEVEL[tag]
        assert d["parameter_size"] == "7.34M"
        assert d["parent_model"] == ""
        assert ("capabilities" in m) == (target.era == "C")  # listed with the model from 0.32.15 (not 0.24.0)
        if target.era == "C":
            assert m["capabilities"] == ["completion"]
            assert (d["context_length"], d["embedding_length"]) == (32768, 256)
    sizes = [models[target.tags[t]]["size"] for t in ("f16", "q8_0", "q4_K_M")]
    assert sizes == sorted(sizes, reverse=True), "a lighter quantization is a smaller file"


def test_show_details_model_info_and_tensors(target: Target, http: httpx.Client) -> None:
    for tag, name in target.tags.items():
        r = http.post("/api/show", json={"model": name, "verbose": True})
        assert r.status_code == 200
        show = r.json()
        for key in (
            "modelfile",
            "template",
            "details",
            "model_info",
            "tensors",
            "capabilities",
            "modified_at",
        ):
            assert key in show, key
        assert show["capabilities"] == ["completion"]
        assert show["details"]["quantization_level"] == QUANT_LEVEL[tag]
        # a GGUF import: in Eras A/B /api/show names the blob it came from as the parent model (tags do not)
        parent = show["details"]["parent_model"]
        assert parent == "" if target.era == "C" else re.search(r"/blobs/sha256-[0-9a-f]{64}$", parent), (
            parent
        )
        info = show["model_info"]
        for key, value in TINY_KEYS.items():
            assert info[key] == value, key
        assert info["general.parameter_count"] == 7344384
        assert "general.name" not in info  # Ollama drops it
        assert len(info["tokenizer.ggml.tokens"]) == 2048  # verbose: arrays are sent
        tensors = show["tensors"]
        assert len(tensors) == TINY_TENSORS
        assert all(set(t) == {"name", "type", "shape"} for t in tensors)
        by_name = {t["name"]: t for t in tensors}
        assert by_name["blk.0.ffn_up.weight"]["shape"] == [256, 768]
        assert by_name["blk.0.attn_norm.weight"]["type"] == "F32"
        assert by_name["blk.0.attn_q.weight"]["type"] == {"f16": "F16", "q8_0": "Q8_0", "q4_K_M": "Q4_K"}[tag]


def test_show_without_verbose_nulls_the_big_arrays(target: Target, http: httpx.Client) -> None:
    show = http.post("/api/show", json={"model": target.tags["q8_0"]}).json()
    assert show["model_info"]["tokenizer.ggml.tokens"] is None
    assert show["model_info"]["llama.block_count"] == 8


def test_show_unknown_model_is_404(target: Target, http: httpx.Client) -> None:
    r = http.post("/api/show", json={"model": "no-such-model:7b"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'no-such-model:7b' not found"}


def test_show_through_the_official_client(target: Target, client: ollama.Client) -> None:
    show = client.show(target.tags["q4_K_M"])
    assert show.details is not None and show.details.quantization_level == "Q4_K_M"
    assert show.modelinfo is not None and show.modelinfo["llama.block_count"] == 8


# -- load, generate, unload ------------------------------------------------------------------------


def test_load_only_then_ps_then_unload(target: Target, http: httpx.Client, client: ollama.Client) -> None:
    name = target.tags["q8_0"]
    r = http.post("/api/generate", json={"model": name, "prompt": "", "options": {"num_ctx": 2048}})
    assert r.status_code == 200
    loaded = r.json()
    assert loaded["done"] is True and loaded["done_reason"] == "load"
    assert loaded["model"] == name and loaded["response"] == ""
    assert RFC3339.match(loaded["created_at"])
    (ps,) = _ps(http)
    assert ps["name"] == ps["model"] == name
    assert isinstance(ps["size"], int) and ps["size"] > 0
    assert ps["size_vram"] == 0  # no GPU on this machine: everything on the CPU
    assert ps["context_length"] == 2048
    assert HEX64.match(ps["digest"])
    assert RFC3339.match(ps["expires_at"])
    assert ps["details"]["quantization_level"] == "Q8_0"
    r = http.post("/api/generate", json={"model": name, "prompt": "", "keep_alive": 0})
    assert r.status_code == 200
    assert r.json()["done_reason"] == "unload"
    _wait_unloaded(http)


def test_streamed_generation_reports_timings(
    target: Target, http: httpx.Client, client: ollama.Client
) -> None:
    name = target.tags["q4_K_M"]
    body = {
        "model": name,
        "prompt": "hello world",
        "options": {"num_predict": 8, "temperature": 0, "num_ctx": 2048},
    }
    lines = []
    with http.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        for line in r.iter_lines():
            if line:
                lines.append(httpx.Response(200, content=line).json())
    *chunks, final = lines
    assert chunks and all(c["done"] is False and isinstance(c["response"], str) for c in chunks)
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["eval_count"] == 8
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0, key
    assert final["prompt_eval_count"] >= 1
    assert final["total_duration"] >= final["eval_duration"]
    assert isinstance(final["context"], list) and all(isinstance(t, int) for t in final["context"])


def test_generation_is_greedy_and_repeatable(target: Target, client: ollama.Client) -> None:
    opts = {"num_predict": 6, "temperature": 0, "seed": 1, "num_ctx": 2048}
    a = client.generate(model=target.tags["f16"], prompt="abc", options=opts)
    b = client.generate(model=target.tags["f16"], prompt="abc", options=opts)
    assert a.response == b.response and a.eval_count == b.eval_count == 6


def test_a_new_num_ctx_reloads(target: Target, http: httpx.Client, client: ollama.Client) -> None:
    name = target.tags["q8_0"]
    for ctx in (2048, 4096):
        client.generate(model=name, prompt="", options={"num_ctx": ctx})
        (ps,) = _ps(http)
        assert ps["context_length"] == ctx


def test_default_context(target: Target, http: httpx.Client, client: ollama.Client) -> None:
    """No num_ctx: 4096 from 0.6.7 on; from 0.15.5 a VRAM tier, and with no GPU that is 4096 too."""
    client.generate(model=target.tags["q8_0"], prompt="")
    (ps,) = _ps(http)
    assert ps["context_length"] == 4096


def test_generate_unknown_model_is_404(target: Target, http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": "no-such-model:7b", "prompt": "hi"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'no-such-model:7b' not found"}


def test_generate_without_model_is_404(target: Target, http: httpx.Client) -> None:
    """routes.go answers an empty name as a missing model (a comment there says it should be 400)."""
    r = http.post("/api/generate", json={"prompt": "hi"})
    assert r.status_code == 404
    assert r.json() == {"error": "model '' not found"}


def test_show_without_model_is_400(target: Target, http: httpx.Client) -> None:
    r = http.post("/api/show", json={})
    assert r.status_code == 400
    assert r.json() == {"error": "model is required"}


def test_bad_json_is_400(target: Target, http: httpx.Client) -> None:
    r = http.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "error" in r.json()


def test_wrongly_typed_field_is_400(target: Target, http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": target.tags["q8_0"], "prompt": 5})
    assert r.status_code == 400
    assert r.json()["error"].startswith("json: cannot unmarshal number into Go struct field")


def test_unknown_route_is_404_text(target: Target, http: httpx.Client) -> None:
    r = http.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.text == "404 page not found"


# -- create, copy, delete, pull -----------------------------------------------------------------------


def test_create_from_a_local_model_with_parameters(
    target: Target, http: httpx.Client, client: ollama.Client
) -> None:
    name = "contract-tuned:latest"
    client.create(model=name, from_=target.tags["q8_0"], parameters={"num_ctx": 3072, "num_gpu": 0})
    try:
        show = http.post("/api/show", json={"model": name}).json()
        params = dict(line.split(None, 1) for line in show["parameters"].splitlines())
        assert params == {"num_ctx": "3072", "num_gpu": "0", "num_thread": "1"}  # the base's are kept
        assert "PARAMETER num_ctx 3072" in show["modelfile"]
        assert show["details"]["quantization_level"] == "Q8_0"
        client.generate(model=name, prompt="")
        (ps,) = _ps(http)
        assert ps["context_length"] == 3072  # the baked-in parameter applies at load
        client.generate(model=name, prompt="", keep_alive=0)  # a deleted model cannot be unloaded by name
    finally:
        client.delete(name)
    assert http.post("/api/show", json={"model": name}).status_code == 404


def test_create_from_an_uploaded_gguf(target: Target, client: ollama.Client, tiny_quants) -> None:
    path = tiny_quants["q4_K_M"]
    digest = client.create_blob(path)
    assert digest.startswith("sha256:") and HEX64.match(digest[7:])
    client.create(model="contract-blob:q4", files={path.name: digest})
    try:
        assert client.show("contract-blob:q4").details.quantization_level == "Q4_K_M"  # type: ignore[union-attr]
    finally:
        client.delete("contract-blob:q4")


def test_blob_head_says_whether_it_exists(target: Target, http: httpx.Client) -> None:
    r = http.head("/api/blobs/sha256:" + "0" * 64)
    assert r.status_code == 404


def test_create_from_a_missing_model_fails(target: Target, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError):
        client.create(model="contract-bad:latest", from_="no-such-model:7b")


def test_delete_unknown_is_404(target: Target, http: httpx.Client) -> None:
    r = http.request("DELETE", "/api/delete", json={"model": "no-such-model:7b"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'no-such-model:7b' not found"}


def test_pull_of_a_model_it_cannot_fetch_fails_in_the_stream(target: Target, http: httpx.Client) -> None:
    """No registry here (real releases have no network; the simulator has no such model): the pull
    answers 200 and the error arrives as the stream's last line, never as a success."""
    lines = []
    with http.stream("POST", "/api/pull", json={"model": "no-such-model-anywhere:7b"}) as r:
        for line in r.iter_lines():
            if line:
                lines.append(httpx.Response(200, content=line).json())
    assert r.status_code == 200
    assert "error" in lines[-1] and lines[-1]["error"].startswith("pull model manifest")
    assert not any(line.get("status") == "success" for line in lines)


# -- memory: what /api/ps reports is what the estimator predicts ------------------------------------------


@pytest.mark.parametrize("ctx", [2048, 8192])
def test_ps_size_is_the_estimators_prediction(
    target: Target, http: httpx.Client, client: ollama.Client, ctx: int
) -> None:
    """On a machine with no GPU. Eras A/B (llama.cpp runner): /api/ps reports memory.go's estimate, which
    the estimator reproduces to the byte. Era C: llama-server's real buffers (model + KV + compute), which
    it predicts within 5% (the compute buffer is a formula, not a measurement)."""
    from tuner.estimate import ModelSpec, Request, predict

    for tag, name in target.tags.items():
        spec = ModelSpec.from_show(http.post("/api/show", json={"model": name}).json(), name=name)
        pred = predict(spec, [], Request(num_ctx=ctx), engine="ollama", version=target.version)
        client.generate(model=name, prompt="", options={"num_ctx": ctx})
        (ps,) = _ps(http)
        if target.era in ("A", "B"):
            assert pred.ollama is not None
            assert ps["size"] == pred.ollama.total_bytes, (tag, ctx)
        else:
            assert ps["size"] == pytest.approx(pred.total_bytes, rel=0.05), (tag, ctx)


def test_a_context_past_host_memory_is_refused(
    target: Target, http: httpx.Client, long_context_model: str
) -> None:
    """A model whose KV cache at the asked context (32 GiB) cannot fit in host memory: every release refuses
    the load with HTTP 500 and a memory message, and nothing stays loaded."""
    from tuner.errors import is_out_of_memory

    r = http.post(
        "/api/generate", json={"model": long_context_model, "prompt": "", "options": {"num_ctx": 1 << 23}}
    )
    assert r.status_code == 500
    message = r.json()["error"]
    assert is_out_of_memory(message), message
    assert _ps(http) == []
