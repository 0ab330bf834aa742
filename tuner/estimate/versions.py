"""What changes with the Ollama version a server reports (../shared/ollama-api.md sections 0, 8, 9).

Era A (<= 0.12.10): llm/memory.go estimateGPULayers decides placement; /api/ps shows the estimate.
  Before 0.7.0 (PR #9243, May 2025) the estimator walked the layers first to last; from 0.7.0 last to first.
Era B (0.12.11 - 0.24.x): the layout/fit loop; the estimator (and so the simulator) approximates it with Era A's rule.
Era C (>= 0.30): llama-server decides placement itself (--fit); /api/ps shows the real buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.releases import LOGPROBS_SINCE, era, parse_version
from tuner.units import GiB, KiB, MiB, TiB

__all__ = ["Version", "human_bytes2", "parse_version"]

_ENGINE_ARCHS_A = frozenset(
    "gemma3 gemma3n gptoss gpt-oss llama4 mistral3 mllama qwen25vl qwen3 qwen3moe qwen3vl qwen3vlmoe".split()
)
_ENGINE_ARCHS_B = _ENGINE_ARCHS_A | frozenset(
    "bert deepseek2 deepseekocr gemma4 laguna nemotron_h nemotron_h_moe nemotron_h_omni nomic-bert olmo3 "
    "qwen35 qwen35moe qwen3next glm4moelite glmocr lfm2 lfm2moe".split()
)


@dataclass(frozen=True)
class Version:
    text: str

    @property
    def number(self) -> tuple[int, int, int]:
        return parse_version(self.text)

    @property
    def era(self) -> str:
        return era(self.number)

    @property
    def has_thinking(self) -> bool:
        return self.number >= (0, 9, 0)

    @property
    def has_logprobs(self) -> bool:
        """`logprobs` / `top_logprobs` on generate and chat (0.12.11 on)."""
        return self.number >= LOGPROBS_SINCE

    def default_num_ctx(self, total_vram_bytes: int) -> int:
        """Built-in default context (section 9.1): 2048, then 4096, then the VRAM tier from 0.15.5."""
        n = self.number
        if n < (0, 6, 7):
            return 2048
        if n < (0, 15, 5):
            return 4096
        if total_vram_bytes >= 47 * GiB:
            return 262144
        if total_vram_bytes >= 23 * GiB:
            return 32768
        return 4096

    def ollama_engine(self, arch: str) -> bool:
        """Whether Ollama runs `arch` on its own Go engine (which reports measured buffers in /api/ps) rather
        than the llama.cpp runner (which reports memory.go's estimate). fs/ggml OllamaEngineRequired: the
        list of 0.12.10 in Era A (from 0.11.11, when gemma3 moved), of 0.24.0 in Era B; Era C has no Go
        engine for text models."""
        if self.era == "C" or self.number < (0, 11, 11):
            return False
        return arch in (_ENGINE_ARCHS_B if self.era == "B" else _ENGINE_ARCHS_A)

    def flash_attention(self, arch: str, gpus_support_fa: bool) -> bool:
        """OLLAMA_FLASH_ATTENTION unset: per-model default in 0.12.x (gemma3, qwen3, gpt-oss); auto in Era C."""
        if not gpus_support_fa:
            return False
        if self.era == "C" or self.number >= (0, 13, 5):
            return True
        if self.number >= (0, 12, 0):
            return arch in ("gemma3", "qwen3", "qwen3moe", "gptoss")
        return False

    def generation_batch(
        self,
        ctx_total: int,
        *,
        predicted_bytes: int,
        available_bytes: int,
        flash_attn: bool,
        smallest_gpu_bytes: int = 0,
    ) -> int:
        """Era C's automatic -b/-ub when num_batch is not set (server/sched.go automaticGenerationBatch,
        0.32.15): 512 up to 4096 tokens, 1024 above, 2048 above 32768, each step down while the predicted
        memory leaves too little headroom (75% / 60% of what is available, and a 768 MiB / 2 GiB surcharge
        under 80%); CUDA without flash attention: 512, or 256 above 4096 tokens on a card of 8 GiB or less.
        Unknown available memory (0) counts as room."""
        if not flash_attn and smallest_gpu_bytes:
            return 256 if ctx_total > 4096 and smallest_gpu_bytes <= 8 * GiB else 512
        batch = 2048 if ctx_total > 32768 else 1024 if ctx_total > 4096 else 512

        def fits(b: int) -> bool:
            if not predicted_bytes or not available_bytes:
                return True
            threshold = available_bytes * 80 // 100
            headroom = available_bytes * (60 if b >= 2048 else 75) // 100
            surcharge = 2 * GiB if b >= 2048 else 768 * (1 << 20)
            return predicted_bytes <= min(threshold, headroom) and surcharge <= threshold - predicted_bytes

        while batch > 512 and not fits(batch):
            batch = 1024 if batch > 1024 else 512
        return batch

    # --- error wording -------------------------------------------------------------------------
    def weights_oom(self, device: int, mib: float) -> str:
        if self.era == "C":
            return (
                "llama-server reported out-of-memory during startup: ggml_backend_cuda_buffer_type_alloc_buffer: "
                f"allocating {mib:.2f} MiB on device {device}: cudaMalloc failed: out of memory"
            )
        return f"llama runner process has terminated: error loading model: unable to allocate CUDA{device} buffer"

    def buffer_oom(self, device: int, mib: float) -> str:
        if self.era == "C":
            return (
                "llama-server reported out-of-memory during startup: ggml_backend_cuda_buffer_type_alloc_buffer: "
                f"allocating {mib:.2f} MiB on device {device}: cudaMalloc failed: out of memory"
            )
        return "llama runner process has terminated: cudaMalloc failed: out of memory"

    def system_memory(self, required: int, available: int) -> str:
        return (
            f"model requires more system memory ({human_bytes2(required)}) "
            f"than is available ({human_bytes2(available)})"
        )


def human_bytes2(value: int) -> str:
    """Ollama's format.HumanBytes2: binary units, one decimal ('7.2 GiB', '457.0 MiB', '0 B')."""
    if value < 1024:
        return f"{value} B"
    for unit, scale in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"  # pragma: no cover
