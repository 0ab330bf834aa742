"""The engine seam: one small Protocol that the study talks to, and the records that cross it.

An engine is anything that can load one model variant with (num_gpu, num_ctx, ...) and generate
from it: Ollama (backend/ollama.py) or llama.cpp's llama-server (backend/llamaserver/).
Nothing outside backend/ knows which engine it is talking to, apart from the engine name that is
stored with the study (so the report can render the right artifact: a Modelfile or a command line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tuner.fidelity import TokenStep as TokenStep  # one position's token and its top-k log-probabilities
from tuner.schema import AUTO as AUTO  # num_gpu left to the engine's own placement


@dataclass(frozen=True)
class ServerInfo:
    engine: str  # "ollama" | "llama-server"
    version: str  # "0.12.10", or the llama.cpp build string
    host: str  # URL or "local process"


@dataclass(frozen=True)
class ModelInfo:
    """What the engine says about one model variant (one quant tag or one GGUF file)."""

    name: str  # the tag ("deepseek-r1:32b") or the GGUF path
    architecture: str  # "llama", "qwen2", "gemma3", "deepseek2", ...
    block_count: int  # repeating layers; offloadable layers = block_count + 1 (the output layer)
    context_length: int  # trained context
    quantization: str  # "Q4_K_M", "Q8_0", "F16", ...
    size_bytes: int  # file size on disk
    parameter_size: str = ""  # "32.8B"
    family: str = ""
    model_info: dict[str, Any] = field(default_factory=dict)  # raw GGUF key/values
    tensors: list[dict[str, Any]] = field(default_factory=list)  # [{name, type, shape}] for the estimator

    @property
    def max_layers(self) -> int:
        return self.block_count + 1


@dataclass(frozen=True)
class EngineOptions:
    """Load-time settings of one trial."""

    num_gpu: int  # layers on GPU; AUTO (-1) = the engine decides
    num_ctx: int  # context tokens (per slot); 0 = the engine's default (the baseline trial)
    flash_attn: str | None = None  # llama-server only: "on" | "off" | "auto"; None = engine default
    kv_cache_type: str | None = None  # llama-server only: "f16" | "q8_0" | "q4_0"; None = default
    num_parallel: int | None = None  # Ollama with --serve: OLLAMA_NUM_PARALLEL; None = the server's default
    gpus: str | None = None  # Ollama --serve: GPU subset "0,1" (CUDA_VISIBLE_DEVICES), "+spread" suffix
    num_batch: int | None = None  # Ollama: the request's num_batch (no restart); None = the engine's default
    main_gpu: int | None = None  # Ollama: the request's main_gpu (Era C: that GPU alone); None = default
    num_thread: int | None = None  # Ollama: the request's num_thread (CPU layers); None = physical cores


@dataclass(frozen=True)
class Residency:
    """What the engine reports about the loaded model (Ollama: /api/ps)."""

    size_bytes: int  # total memory of the loaded model
    size_vram_bytes: int  # the part in GPU memory
    context_length: int | None = None  # effective per-slot context, if reported
    layers_offloaded: int | None = None  # if the engine tells

    @property
    def gpu_fraction(self) -> float:
        return self.size_vram_bytes / self.size_bytes if self.size_bytes else 0.0


@dataclass(frozen=True)
class Generation:
    """One generation, with the engine's own timings (seconds) and our streamed time to first token."""

    prompt_tokens: int
    prompt_s: float  # time the engine spent processing the prompt
    eval_tokens: int
    eval_s: float  # time the engine spent generating
    ttft_s: float  # wall clock from request to the first streamed token
    total_s: float  # wall clock of the whole request
    text: str = ""

    @property
    def decode_tok_s(self) -> float:
        return self.eval_tokens / self.eval_s if self.eval_s > 0 else float("nan")

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else float("nan")


ProgressCallback = Callable[[str, int, int], None]  # (status, completed_bytes, total_bytes)


@runtime_checkable
class Backend(Protocol):
    """One inference engine. Implementations: OllamaBackend, LlamaServerBackend (and test fakes)."""

    engine: str

    def server_info(self) -> ServerInfo:
        """Raise Unreachable if the engine cannot be reached."""
        ...

    def model_info(self, model: str) -> ModelInfo:
        """Raise ModelNotFound if the engine does not have `model`."""
        ...

    def load(self, model: str, options: EngineOptions) -> float:
        """Load `model` with `options`; return wall-clock seconds. Raise OutOfMemory on a memory failure."""
        ...

    def residency(self, model: str) -> Residency | None:
        """What is loaded for `model` now, or None if nothing is."""
        ...

    def generate(
        self, model: str, prompt: str, options: EngineOptions, *, num_predict: int, seed: int = 0
    ) -> Generation:
        """Stream one greedy (temperature 0) generation of exactly `num_predict` tokens where possible."""
        ...

    def check_alone(self, model: str, expected: Residency | None) -> None:
        """Raise ServerStateChanged unless `model` is the only model loaded, still as `expected` (what
        residency() said after the load): another client changed the server during the trial."""
        ...

    def unload_all(self) -> None:
        """Unload every model and wait until the memory is given back."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LogprobBackend(Backend, Protocol):
    """An engine that can also report token log-probabilities (the fidelity measure, tuner.quality).

    `teacher_forcing`: whether token_logprobs can feed the reference's tokens (`forced`) after the prompt,
    so every position of the reference is compared; otherwise the comparison stops at the first greedy
    divergence (tuner.fidelity)."""

    teacher_forcing: bool

    def logprob_support(self) -> str | None:
        """None when the engine serves token log-probabilities; else one line saying why not."""
        ...

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
        """Greedy (temperature 0) decoding of `prompt` as raw text (no chat template), then the tokens
        `forced`, with each generated position's top-k log-probabilities. The model must be loaded
        with `options` (load() first). Raise BadResponse when the engine sends none."""
        ...
