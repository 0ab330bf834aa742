"""Ollama through its official Python client: the only module that knows Ollama's API.

Load = an empty-prompt generate with the trial's options (Ollama answers done_reason "load");
unload = empty prompt with keep_alive 0. Options are sent identically on every request of a trial so
that Ollama never reloads in the middle of a measurement (reload rules, ../shared/ollama-api.md §7):
num_gpu is left out for the automatic placement (-1), which also means "reuse whatever is loaded",
so every trial unloads everything first.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import ollama
import pydantic
from ollama._client import _parse_host  # Ollama's own reading of OLLAMA_HOST / --host

from tuner.backend.base import (
    AUTO,
    EngineOptions,
    Generation,
    ModelInfo,
    ProgressCallback,
    Residency,
    ServerInfo,
    TokenStep,
)
from tuner.backend.http import limited_transport, limits, window_open
from tuner.config import Timeouts
from tuner.errors import (
    BackendError,
    BackendTimeout,
    BadResponse,
    ConfigError,
    ModelNotFound,
    OutOfMemory,
    ServerStateChanged,
    Unreachable,
    is_out_of_memory,
)
from tuner.releases import LOGPROBS_SINCE, has_logprobs

DEFAULT_HOST = "http://127.0.0.1:11434"
KEEP_ALIVE = "10m"  # long enough for a trial; every trial ends with an explicit unload


def resolve_host(host: str | None) -> str:
    """--host, else OLLAMA_HOST, else the default, read exactly as the official client reads it
    (`ollama._client._parse_host`): a bare host gets http:// and port 11434, http:// port 80, https:// port
    443, a path is kept, an IPv6 address keeps its brackets. Credentials are never part of the result."""
    return _parse_host(host or os.environ.get("OLLAMA_HOST"))


def host_credentials(host: str | None) -> tuple[str, str] | None:
    """(user, password) written in --host or OLLAMA_HOST (http://user:pw@host), for HTTP basic auth."""
    value = host or os.environ.get("OLLAMA_HOST") or ""
    if "@" not in value:
        return None
    try:
        split = urllib.parse.urlsplit(value if "://" in value else "http://" + value)
    except ValueError:
        return None
    if split.username is None and split.password is None:
        return None
    return urllib.parse.unquote(split.username or ""), urllib.parse.unquote(split.password or "")


def same_model(a: str, b: str) -> bool:
    """Ollama names match case-insensitively and `x` means `x:latest`."""
    return _norm_name(a) == _norm_name(b)


def _request_options(options: EngineOptions, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_ctx": options.num_ctx} if options.num_ctx > 0 else {}
    if options.num_gpu != AUTO:
        opts["num_gpu"] = options.num_gpu
    if options.num_batch is not None:
        opts["num_batch"] = options.num_batch
    if options.main_gpu is not None:
        opts["main_gpu"] = options.main_gpu
    if options.num_thread is not None:
        opts["num_thread"] = options.num_thread
    opts.update(extra)
    return opts


class OllamaBackend:
    engine = "ollama"

    def __init__(
        self,
        host: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        client: ollama.Client | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.host = resolve_host(host)  # never holds credentials: safe to show and to store
        self.timeouts = timeouts = timeouts or Timeouts()
        auth = host_credentials(host)
        timeout = httpx.Timeout(timeouts.request_s, connect=timeouts.connect_s)
        self._client = client or ollama.Client(
            host=self.host, timeout=timeout, transport=limited_transport(), auth=auth
        )
        self._http = httpx.Client(
            base_url=self.host, timeout=timeout, transport=limited_transport(), auth=auth
        )
        self._clock = clock

    def _small(self, what: str) -> contextlib.AbstractContextManager[None]:
        """The limits of a small request (version, ps, show, list, an unload request)."""
        t = self.timeouts
        return limits(what, first_byte_s=t.request_s, between_bytes_s=t.read_s, total_s=2 * t.request_s)

    # -- errors at the seam ------------------------------------------------------------------
    def _unreachable(self, exc: BaseException) -> Unreachable:
        reason = "connection refused" if "connect" in str(exc).lower() else str(exc)
        return Unreachable(
            f"Cannot reach Ollama at '{self.host}' ({reason}); start 'ollama serve' or pass --host."
        )

    def _call(self, what: str, fn: Callable[[], Any], model: str | None = None) -> Any:
        try:
            if window_open():  # inside a load's or a generation's limits
                return fn()
            with self._small(what):
                return fn()
        except ollama.ResponseError as exc:
            raise self._response_error(what, exc, model) from exc
        except (ConnectionError, httpx.ConnectError) as exc:
            raise self._unreachable(exc) from exc
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"Ollama at '{self.host}' timed out during {what} ({exc}); raise the limit named, or check "
                "the server."
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise BadResponse(
                f"Ollama at '{self.host}' broke the connection during {what} ({exc or type(exc).__name__}).",
                transient=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise BadResponse(f"Ollama at '{self.host}' failed during {what}: {exc}", transient=True) from exc
        except (json.JSONDecodeError, pydantic.ValidationError, UnicodeDecodeError) as exc:
            detail = str(exc).splitlines()[0][:120]
            raise BadResponse(
                f"Ollama at '{self.host}' sent an answer to {what} that is not Ollama's JSON ({detail}); "
                "check --host and any proxy in between.",
                transient=True,
            ) from exc

    def _window(self, what: str, seconds: float, flag: str) -> contextlib.AbstractContextManager[None]:
        """The limits of a long request: done within `seconds` (the option `flag`), no silence longer than
        --read-timeout once the answer has started."""
        t = self.timeouts
        return limits(what, first_byte_s=seconds, between_bytes_s=t.read_s, total_s=seconds, first_flag=flag)

    def _response_error(self, what: str, exc: ollama.ResponseError, model: str | None) -> BackendError:
        message = str(exc.error)
        if exc.status_code == 404 and model is not None:
            return ModelNotFound(
                f"Ollama at '{self.host}' has no model '{model}'; run 'ollama pull {model}' or pass --pull."
            )
        if is_out_of_memory(message):
            return OutOfMemory(message)
        transient = exc.status_code >= 500 or exc.status_code in (408, 429)  # a crash, a busy queue
        return BadResponse(
            f"Ollama at '{self.host}' refused {what} (HTTP {exc.status_code}): {message.strip()[:300]}",
            transient=transient,
        )

    # -- Backend protocol ----------------------------------------------------------------------
    def server_info(self) -> ServerInfo:
        try:
            with self._small("/api/version"):
                resp = self._http.get("/api/version")
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                f"Ollama at '{self.host}' did not answer /api/version ({exc}); check the server or --host."
            ) from exc
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        try:
            resp.raise_for_status()
            version = str(resp.json()["version"])
        except (httpx.HTTPStatusError, ValueError, KeyError, TypeError) as exc:
            raise BadResponse(
                f"'{self.host}' answered /api/version with something that is not Ollama "
                f"(HTTP {resp.status_code}); check --host."
            ) from exc
        return ServerInfo(engine=self.engine, version=version, host=self.host)

    def model_info(self, model: str) -> ModelInfo:
        show = self._call("show", lambda: self._client.show(model), model)
        info: dict[str, Any] = dict(show.modelinfo or {})
        arch = str(info.get("general.architecture", ""))
        try:
            block_count = int(info[f"{arch}.block_count"])
            context_length = int(info[f"{arch}.context_length"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadResponse(
                f"Ollama's /api/show for '{model}' lacks '{arch}.block_count' or '{arch}.context_length'."
            ) from exc
        details = show.details
        tensors = self._tensors(model)
        size = 0
        for entry in self._call("list", self._client.list).models:
            if same_model(entry.model or "", model):
                size = int(entry.size or 0)
        return ModelInfo(
            name=model,
            architecture=arch,
            block_count=block_count,
            context_length=context_length,
            quantization=(details.quantization_level if details else "") or "",
            size_bytes=size,
            parameter_size=(details.parameter_size if details else "") or "",
            family=(details.family if details else "") or "",
            model_info=info,
            tensors=tensors,
        )

    def _tensors(self, model: str) -> list[dict[str, Any]]:
        """/api/show's tensor list (the official client drops it); [] when the server does not send one."""
        try:
            with self._small("/api/show"):
                resp = self._http.post("/api/show", json={"model": model})
            resp.raise_for_status()
            tensors = resp.json().get("tensors") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return []
        return [t for t in tensors if isinstance(t, dict) and "name" in t and "type" in t]

    def list_models(self) -> list[str]:
        return [m.model or "" for m in self._call("list", self._client.list).models]

    def model_digests(self) -> dict[str, str]:
        """Each local model's digest, as /api/tags lists it (the fingerprint's model identity)."""
        return {m.model or "": m.digest or "" for m in self._call("list", self._client.list).models}

    def pull(self, model: str, progress: ProgressCallback | None = None) -> None:
        def run() -> None:
            for part in self._client.pull(model, stream=True):
                if progress is not None:
                    progress(part.status or "", int(part.completed or 0), int(part.total or 0))

        try:
            t = self.timeouts  # a pull streams its progress: no total, but no long silence either
            with limits("the pull", first_byte_s=t.request_s, between_bytes_s=t.read_s):
                self._call("pull", run, model)
        except BadResponse as exc:
            if "file does not exist" in str(exc) or "not found" in str(exc):
                raise ModelNotFound(f"Ollama's registry has no model '{model}'.") from exc
            raise

    def load(self, model: str, options: EngineOptions) -> float:
        start = self._clock()
        with self._window("the load", self.timeouts.load_s, "--load-timeout"):
            self._call(
                "the load",
                lambda: self._client.generate(
                    model=model, prompt="", options=_request_options(options), keep_alive=KEEP_ALIVE
                ),
                model,
            )
        return self._clock() - start

    def residency(self, model: str) -> Residency | None:
        return self._loaded().get(_norm_name(model))

    def _loaded(self) -> dict[str, Residency]:
        """/api/ps: every loaded model by its normalised name."""
        return {
            _norm_name(entry.model or entry.name or ""): Residency(
                size_bytes=int(entry.size or 0),
                size_vram_bytes=int(entry.size_vram or 0),
                context_length=entry.context_length,
            )
            for entry in self._call("ps", self._client.ps).models
        }

    def check_alone(self, model: str, expected: Residency | None) -> None:
        """/api/ps lists `model` alone, loaded as it was when the trial loaded it (same size, VRAM share and
        context); else another client changed the server under the trial: ServerStateChanged."""
        loaded = self._loaded()
        mine = _norm_name(model)
        others = sorted(name for name in loaded if name != mine)
        if others:
            raise ServerStateChanged(
                f"Ollama at '{self.host}' also has {', '.join(others)} loaded during the trial of {model} "
                "(another client is using the server); the measurement is discarded."
            )
        now = loaded.get(mine)
        if now is None:
            raise ServerStateChanged(
                f"Ollama at '{self.host}' unloaded {model} during its trial (another client, or the runner "
                "stopped); the measurement is discarded."
            )
        if expected is not None and (
            now.size_bytes != expected.size_bytes
            or now.size_vram_bytes != expected.size_vram_bytes
            or (expected.context_length and now.context_length != expected.context_length)
        ):
            raise ServerStateChanged(
                f"Ollama at '{self.host}' reloaded {model} with other options during its trial "
                f"(size {expected.size_bytes} -> {now.size_bytes}, VRAM {expected.size_vram_bytes} -> "
                f"{now.size_vram_bytes}, context {expected.context_length} -> {now.context_length}); "
                "the measurement is discarded."
            )

    def generate(
        self, model: str, prompt: str, options: EngineOptions, *, num_predict: int, seed: int = 0
    ) -> Generation:
        opts = _request_options(options, num_predict=num_predict, temperature=0.0, seed=seed)

        def run() -> Generation:
            start = self._clock()
            ttft: float | None = None
            text: list[str] = []
            stream: Iterator[Any] = self._client.generate(
                model=model, prompt=prompt, options=opts, stream=True, keep_alive=KEEP_ALIVE
            )
            final = None
            for chunk in stream:
                piece = (chunk.response or "") + (chunk.thinking or "")
                if piece and ttft is None:
                    ttft = self._clock() - start
                text.append(chunk.response or "")
                if chunk.done:
                    final = chunk
            total = self._clock() - start
            if final is None:  # real Ollama ends the stream this way when it aborts a generation
                raise BadResponse(
                    f"Ollama at '{self.host}' ended the generation stream for '{model}' without its final "
                    "chunk (it aborted the generation: its repeat guard, or the runner failed).",
                    transient=True,
                )
            return Generation(
                prompt_tokens=int(final.prompt_eval_count or 0),
                prompt_s=(final.prompt_eval_duration or 0) / 1e9,
                eval_tokens=int(final.eval_count or 0),
                eval_s=(final.eval_duration or 0) / 1e9,
                ttft_s=ttft if ttft is not None else total,
                total_s=total,
                text="".join(text),
            )

        with self._window("a generation", self.timeouts.generate_s, "--generate-timeout"):
            return self._call("a generation", run, model)

    # -- token log-probabilities (LogprobBackend) -----------------------------------------------
    teacher_forcing = False  # Ollama takes text, not token ids: the comparison stops at the first divergence

    def logprob_support(self) -> str | None:
        version = self.server_info().version
        if has_logprobs(version):
            return None
        since = ".".join(str(n) for n in LOGPROBS_SINCE)
        return (
            f"Ollama {version} serves no token log-probabilities (`logprobs` arrived in {since}); "
            f"upgrade Ollama to {since} or later to measure each tag's quality."
        )

    def token_logprobs(
        self,
        model: str,
        prompt: str,
        options: EngineOptions,
        *,
        num_predict: int,
        top_k: int,
        forced: Sequence[str] = (),
    ) -> list[TokenStep]:
        """One raw (untemplated) greedy generate with `logprobs` and `top_logprobs`; `forced` token texts are
        appended to the prompt as text (Ollama cannot take token ids)."""
        opts = _request_options(options, num_predict=num_predict, temperature=0.0, seed=0)
        resp = self._call(
            "a generation with logprobs",
            lambda: self._client.generate(
                model=model,
                prompt=prompt + "".join(forced),
                raw=True,
                logprobs=True,
                top_logprobs=top_k,
                options=opts,
                stream=False,
                keep_alive=KEEP_ALIVE,
            ),
            model,
        )
        entries = resp.logprobs or []
        if not entries and int(resp.eval_count or 0) > 0:
            raise BadResponse(
                f"Ollama at '{self.host}' generated {resp.eval_count} tokens for '{model}' but sent no "
                "logprobs; it may predate 0.12.11."
            )
        return [
            TokenStep(
                token=e.token,
                logprob=float(e.logprob),
                top=tuple((t.token, float(t.logprob)) for t in (e.top_logprobs or [])),
            )
            for e in entries
        ]

    def unload_all(self) -> None:
        for entry in self._call("ps", self._client.ps).models:
            name = entry.model or entry.name or ""
            self._call(
                "the unload",
                functools.partial(self._client.generate, model=name, prompt="", keep_alive=0),
                name,
            )
        wait_s = self.timeouts.unload_s
        deadline = self._clock() + wait_s
        while self._call("ps", self._client.ps).models:
            if self._clock() > deadline:
                raise BackendTimeout(
                    f"Ollama at '{self.host}' still lists loaded models {wait_s:.0f} s after unloading them; "
                    "check the server log."
                )
            time.sleep(0.05)

    def create(self, name: str, from_model: str, parameters: dict[str, Any]) -> None:
        """Create `name` from `from_model` with baked-in parameters (what `ollama create` does)."""
        with self._window("the create", self.timeouts.load_s, "--load-timeout"):
            self._call(
                "the create",
                lambda: self._client.create(model=name, from_=from_model, parameters=parameters),
                from_model,
            )

    def close(self) -> None:
        self._client.close()
        self._http.close()


def _norm_name(name: str) -> str:
    """A model name as Ollama matches it: case-insensitive, `x` meaning `x:latest`."""
    name = name.lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


# Infixes Ollama's library uses between the size and the quantization in full tag names
# (deepseek-r1:32b-qwen-distill-q8_0, llama3.1:8b-instruct-fp16, gemma3:12b-it-q8_0).
_TAG_INFIXES = ("", "instruct-", "it-", "qwen-distill-", "llama-distill-", "chat-", "text-")


def _norm_quant(q: str) -> str:
    q = q.lower()
    return {"fp16": "f16", "bf16": "bf16", "fp32": "f32"}.get(q, q)


def resolve_tags(
    backend: OllamaBackend,
    model: str,
    *,
    quants: list[str],
    tags: list[str],
    pull: bool,
    progress: ProgressCallback | None = None,
) -> list[str]:
    """The tags a study will try: --tags as given, or --quant expanded to tags of the same model."""
    local = backend.list_models()

    def have(name: str) -> bool:
        return any(same_model(name, m) for m in local)

    def ensure(name: str) -> str:
        if have(name):
            return name
        if not pull:
            raise ModelNotFound(
                f"Ollama at '{backend.host}' has no model '{name}'; run 'ollama pull {name}' or pass --pull."
            )
        backend.pull(name, progress)
        return name

    if tags:
        return [ensure(t) for t in tags]
    if not quants:
        return [ensure(model)]
    repo, _, base = model.partition(":")
    out: list[str] = []
    for quant in quants:
        q = _norm_quant(quant)
        # With a tag (deepseek-r1:32b) the quant tags of that size; without one (tiny-llama), any tag of the
        # repository whose last part is the quantization (tiny-llama:q8_0, llama3.2:3b-instruct-q8_0).
        match = [
            m
            for m in local
            if m.split(":")[0].lower() == repo.lower()
            and (m.split(":", 1)[1] if ":" in m else "latest").lower().startswith(base.lower())
            and _norm_quant(m.split(":", 1)[-1].rsplit("-", 1)[-1]) == q
        ]
        sizes = {m.split(":", 1)[-1].split("-")[0] for m in match}
        if not base and len(sizes) > 1:
            raise ConfigError(
                f"'{model}' has '{quant}' tags of several sizes ({', '.join(sorted(match))}); name the size, "
                f"e.g. {repo}:{sorted(sizes)[0]}, or pass --tags."
            )
        if not match and have(model) and _norm_quant(backend.model_info(model).quantization) == q:
            match = [model]
        if match:
            out.append(sorted(match, key=len)[0])
            continue
        if not pull:
            raise ModelNotFound(
                f"No local tag of '{model}' in quantization '{quant}' on '{backend.host}'; "
                "pass --pull to fetch it, or --tags with the full tag names."
            )
        for infix in _TAG_INFIXES:
            candidate = f"{repo}:{base or 'latest'}-{infix}{quant}"
            try:
                backend.pull(candidate, progress)
            except ModelNotFound:
                continue
            out.append(candidate)
            break
        else:
            raise ModelNotFound(
                f"Could not find a '{quant}' tag of '{model}' to pull; pass --tags with the full tag name "
                f"(see the model's page on ollama.com)."
            )
    return list(dict.fromkeys(out))
