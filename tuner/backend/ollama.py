"""Ollama through its official Python client: the only module that knows Ollama's API.

Load = an empty-prompt generate with the trial's options (Ollama answers done_reason "load");
unload = empty prompt with keep_alive 0. Options are sent identically on every request of a trial so
that Ollama never reloads in the middle of a measurement (reload rules, ../shared/ollama-api.md §7):
num_gpu is left out for the automatic placement (-1), which also means "reuse whatever is loaded",
so every trial unloads everything first.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import ollama

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
from tuner.errors import (
    BackendError,
    BackendTimeout,
    BadResponse,
    ConfigError,
    ModelNotFound,
    OutOfMemory,
    Unreachable,
    is_out_of_memory,
)
from tuner.releases import LOGPROBS_SINCE, has_logprobs

DEFAULT_HOST = "http://127.0.0.1:11434"
KEEP_ALIVE = "10m"  # long enough for a trial; every trial ends with an explicit unload


def resolve_host(host: str | None) -> str:
    """--host, else OLLAMA_HOST, else the default; a bare host:port gets http://."""
    value = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    if "://" not in value:
        value = "http://" + value
    if value.count(":") < 2:  # no port given
        value = value.rstrip("/") + ":11434"
    return value.rstrip("/")


def same_model(a: str, b: str) -> bool:
    """Ollama names match case-insensitively and `x` means `x:latest`."""

    def norm(name: str) -> str:
        name = name.lower()
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    return norm(a) == norm(b)


def _request_options(options: EngineOptions, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_ctx": options.num_ctx} if options.num_ctx > 0 else {}
    if options.num_gpu != AUTO:
        opts["num_gpu"] = options.num_gpu
    opts.update(extra)
    return opts


class OllamaBackend:
    engine = "ollama"

    def __init__(
        self,
        host: str | None = None,
        *,
        timeout_s: float = 900.0,
        client: ollama.Client | None = None,
        clock: Callable[[], float] = time.perf_counter,
        unload_wait_s: float = 15.0,
    ) -> None:
        self.host = resolve_host(host)
        self._client = client or ollama.Client(host=self.host, timeout=timeout_s)
        self._clock = clock
        self._unload_wait_s = unload_wait_s

    # -- errors at the seam ------------------------------------------------------------------
    def _unreachable(self, exc: BaseException) -> Unreachable:
        reason = "connection refused" if "connect" in str(exc).lower() else str(exc)
        return Unreachable(
            f"Cannot reach Ollama at '{self.host}' ({reason}); start 'ollama serve' or pass --host."
        )

    def _call(self, what: str, fn: Callable[[], Any], model: str | None = None) -> Any:
        try:
            return fn()
        except ollama.ResponseError as exc:
            raise self._response_error(what, exc, model) from exc
        except (ConnectionError, httpx.ConnectError) as exc:
            raise self._unreachable(exc) from exc
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"Ollama at '{self.host}' did not answer {what} in time ({exc}).") from exc
        except httpx.HTTPError as exc:
            raise BadResponse(f"Ollama at '{self.host}' failed during {what}: {exc}") from exc

    def _response_error(self, what: str, exc: ollama.ResponseError, model: str | None) -> BackendError:
        message = str(exc.error)
        if exc.status_code == 404 and model is not None:
            return ModelNotFound(
                f"Ollama at '{self.host}' has no model '{model}'; run 'ollama pull {model}' or pass --pull."
            )
        if is_out_of_memory(message):
            return OutOfMemory(message)
        return BadResponse(f"Ollama refused {what} (HTTP {exc.status_code}): {message}")

    # -- Backend protocol ----------------------------------------------------------------------
    def server_info(self) -> ServerInfo:
        try:
            resp = httpx.get(self.host + "/api/version", timeout=10.0)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        try:
            resp.raise_for_status()
            version = str(resp.json()["version"])
        except (httpx.HTTPStatusError, ValueError, KeyError) as exc:
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
            resp = httpx.post(self.host + "/api/show", json={"model": model}, timeout=30.0)
            resp.raise_for_status()
            tensors = resp.json().get("tensors") or []
        except (httpx.HTTPError, ValueError, AttributeError):
            return []
        return [t for t in tensors if isinstance(t, dict) and "name" in t and "type" in t]

    def list_models(self) -> list[str]:
        return [m.model or "" for m in self._call("list", self._client.list).models]

    def pull(self, model: str, progress: ProgressCallback | None = None) -> None:
        def run() -> None:
            for part in self._client.pull(model, stream=True):
                if progress is not None:
                    progress(part.status or "", int(part.completed or 0), int(part.total or 0))

        try:
            self._call("pull", run, model)
        except BadResponse as exc:
            if "file does not exist" in str(exc) or "not found" in str(exc):
                raise ModelNotFound(f"Ollama's registry has no model '{model}'.") from exc
            raise

    def load(self, model: str, options: EngineOptions) -> float:
        start = self._clock()
        self._call(
            "the load",
            lambda: self._client.generate(
                model=model, prompt="", options=_request_options(options), keep_alive=KEEP_ALIVE
            ),
            model,
        )
        return self._clock() - start

    def residency(self, model: str) -> Residency | None:
        for entry in self._call("ps", self._client.ps).models:
            if same_model(entry.model or entry.name or "", model):
                return Residency(
                    size_bytes=int(entry.size or 0),
                    size_vram_bytes=int(entry.size_vram or 0),
                    context_length=entry.context_length,
                )
        return None

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
            if final is None:
                raise BadResponse(f"Ollama's stream for '{model}' ended without a final chunk.")
            return Generation(
                prompt_tokens=int(final.prompt_eval_count or 0),
                prompt_s=(final.prompt_eval_duration or 0) / 1e9,
                eval_tokens=int(final.eval_count or 0),
                eval_s=(final.eval_duration or 0) / 1e9,
                ttft_s=ttft if ttft is not None else total,
                total_s=total,
                text="".join(text),
            )

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
        deadline = self._clock() + self._unload_wait_s
        while self._call("ps", self._client.ps).models:
            if self._clock() > deadline:
                raise BackendTimeout(
                    f"Ollama at '{self.host}' still lists loaded models {self._unload_wait_s:.0f} s after "
                    "unloading them; check the server log."
                )
            time.sleep(0.05)

    def create(self, name: str, from_model: str, parameters: dict[str, Any]) -> None:
        """Create `name` from `from_model` with baked-in parameters (what `ollama create` does)."""
        self._call(
            "the create",
            lambda: self._client.create(model=name, from_=from_model, parameters=parameters),
            from_model,
        )

    def close(self) -> None:
        self._client.close()


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
