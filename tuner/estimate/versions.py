"""What changes with the Ollama version a server reports (../shared/ollama-api.md sections 0, 8, 9).

Era A (<= 0.12.10): llm/memory.go estimateGPULayers decides placement; /api/ps shows the estimate.
  Before 0.7.0 (PR #9243, May 2025) the estimator walked the layers first to last; from 0.7.0 last to first.
Era B (0.12.11 - 0.24.x): the layout/fit loop; the estimator (and so the simulator) approximates it with Era A's rule.
Era C (>= 0.30): llama-server decides placement itself (--fit); /api/ps shows the real buffers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuner.units import GiB, KiB, MiB, TiB

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?$")


def parse_version(text: str) -> tuple[int, int, int]:
    match = _VERSION_RE.match(str(text).strip())
    if not match:
        raise ValueError(
            f"Invalid Ollama version {text!r}: use a release number such as '0.12.10' or '0.32.0'."
        )
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    if (major, minor, patch) < (0, 1, 0):
        raise ValueError(f"Invalid Ollama version {text!r}: use a release number such as '0.12.10'.")
    return major, minor, patch


@dataclass(frozen=True)
class Version:
    text: str

    @property
    def number(self) -> tuple[int, int, int]:
        return parse_version(self.text)

    @property
    def era(self) -> str:
        n = self.number
        if n <= (0, 12, 10):
            return "A"
        if n < (0, 30, 0):
            return "B"
        return "C"

    @property
    def layers_ascending(self) -> bool:
        """Before 0.7.0 the estimator assigned layers 0, 1, 2, ... (PR #9243 reversed it)."""
        return self.number < (0, 7, 0)

    @property
    def has_thinking(self) -> bool:
        return self.number >= (0, 9, 0)

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

    def flash_attention(self, arch: str, gpus_support_fa: bool) -> bool:
        """OLLAMA_FLASH_ATTENTION unset: per-model default in 0.12.x (gemma3, qwen3, gpt-oss); auto in Era C."""
        if not gpus_support_fa:
            return False
        if self.era == "C" or self.number >= (0, 13, 5):
            return True
        if self.number >= (0, 12, 0):
            return arch in ("gemma3", "qwen3", "qwen3moe", "gptoss")
        return False

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
