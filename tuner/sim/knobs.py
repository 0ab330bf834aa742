"""The simulated server's environment: what `ollama serve` reads at startup, per release. Pure.

    k = ServerKnobs.from_env(os.environ, "0.32.15", gpu_count=4)
    k.flash_attention   None (the release's default), True, False
    k.kv_cache_type     "f16" | "q8_0" | "q4_0" (what the runner gets; see effective_kv)
    k.num_parallel, k.max_queue, k.sched_spread, k.visible (GPU indices CUDA_VISIBLE_DEVICES leaves)

The rules, read from each release's envconfig/config.go and server/sched.go (../shared/ollama-api.md §8):
- OLLAMA_FLASH_ATTENTION is a BoolWithDefault: unset leaves the per-model default (0.12.x) or auto (Era C);
  1/true forces it on where the GPUs support it, 0/false off.
- OLLAMA_KV_CACHE_TYPE q8_0/q4_0 applies only with flash attention; otherwise the cache is f16 (Era A/B
  log `quantized kv cache requested but flash attention disabled`; from 0.13.5 FA must be set explicitly).
  An unknown type is f16 (llama.cpp's kvCacheTypeFromStr falls back).
- OLLAMA_NUM_PARALLEL: 1 when unset (0.10.0 on); embedding models and some architectures are forced to
  one slot (FORCED_ONE_SLOT).
- OLLAMA_NEW_ENGINE exists in Era A and B only; Era C does not read or log it.
- CUDA_VISIBLE_DEVICES: a comma list of indices (or GPU-<n> ids) limits the GPUs; an invalid id such as -1
  leaves none (the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tuner.estimate.versions import Version
from tuner.serverenv import FORCED_ONE_SLOT, KV_TYPES

_TRUE = ("1", "true", "t", "yes", "on")
_FALSE = ("0", "false", "f", "no", "off")


def _bool(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None  # Go's strconv.ParseBool fails: the default stands


def _int(name: str, value: str | None, default: int) -> int:
    if value is None or value.strip() == "":
        return default
    try:
        n = int(value.strip())
    except ValueError:
        return default  # envconfig.Uint logs "invalid environment variable, using default"
    return n if n > 0 else default


def parse_visible(value: str | None, gpu_count: int) -> tuple[int, ...]:
    """CUDA_VISIBLE_DEVICES as GPU indices, in the order given; unset = all. Raises ValueError naming an id
    that is neither an index nor GPU-<index> of the simulated GPUs (other than -1, which hides all)."""
    if value is None:
        return tuple(range(gpu_count))
    out: list[int] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        text = part[4:] if part.upper().startswith("GPU-") else part
        try:
            idx = int(text)
        except ValueError as exc:
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES '{value}': '{part}' is not a GPU index; use e.g. 0,1 of the "
                f"{gpu_count} simulated GPUs."
            ) from exc
        if idx < 0:
            break  # CUDA stops at the first invalid id: what came before stays visible
        if idx >= gpu_count:
            raise ValueError(
                f"CUDA_VISIBLE_DEVICES '{value}': GPU {idx} does not exist; the simulator has {gpu_count} "
                f"(0..{gpu_count - 1})."
            )
        if idx not in out:
            out.append(idx)
    return tuple(out)


@dataclass(frozen=True)
class ServerKnobs:
    flash_attention: bool | None = None  # None: the release's default for the model
    kv_cache_type: str = "f16"
    num_parallel: int = 1
    max_queue: int = 512
    sched_spread: bool = False
    new_engine: bool = False  # Era A/B only
    context_length: int = 0  # OLLAMA_CONTEXT_LENGTH (0 = the release's default)
    visible: tuple[int, ...] | None = None  # None: every simulated GPU
    raw: tuple[tuple[str, str], ...] = ()  # the variables as set, for the startup log

    @classmethod
    def from_env(cls, env: Mapping[str, str], version: str, *, gpu_count: int) -> ServerKnobs:
        v = Version(version)
        kv = (env.get("OLLAMA_KV_CACHE_TYPE") or "").strip().lower()
        visible = (
            parse_visible(env["CUDA_VISIBLE_DEVICES"], gpu_count) if "CUDA_VISIBLE_DEVICES" in env else None
        )
        return cls(
            flash_attention=_bool(env.get("OLLAMA_FLASH_ATTENTION")),
            kv_cache_type=kv if kv in KV_TYPES else "f16",
            num_parallel=_int("OLLAMA_NUM_PARALLEL", env.get("OLLAMA_NUM_PARALLEL"), 1),
            max_queue=_int("OLLAMA_MAX_QUEUE", env.get("OLLAMA_MAX_QUEUE"), 512),
            sched_spread=bool(_bool(env.get("OLLAMA_SCHED_SPREAD"))),
            new_engine=v.era != "C" and bool(_bool(env.get("OLLAMA_NEW_ENGINE"))),
            context_length=_int("OLLAMA_CONTEXT_LENGTH", env.get("OLLAMA_CONTEXT_LENGTH"), 0),
            visible=visible,
            raw=tuple(sorted((k, val) for k, val in env.items() if k.startswith("OLLAMA_"))),
        )

    def use_flash_attention(self, default: bool, gpus_support_fa: bool) -> bool:
        """Flash attention for a model whose release default is `default`."""
        if not gpus_support_fa:
            return False
        return default if self.flash_attention is None else self.flash_attention

    def effective_kv(self, flash_attn: bool, version: Version) -> str:
        """The runner's KV type: a quantized one needs flash attention (explicitly set from 0.13.5)."""
        if self.kv_cache_type == "f16" or not flash_attn:
            return "f16"
        if version.number >= (0, 13, 5) and version.era != "C" and self.flash_attention is not True:
            return "f16"
        return self.kv_cache_type

    def slots_for(self, arch: str, embedding: bool = False) -> int:
        return 1 if embedding or arch in FORCED_ONE_SLOT else self.num_parallel


def server_config_line(knobs: ServerKnobs, version: str, *, cuda_visible: str = "") -> str:
    """The `msg="server config"` line `ollama serve` logs at startup (server/routes.go), for this release:
    every variable envconfig.AsMap() has, as Go's %v prints it, keys sorted (Go's map printing)."""
    v = Version(version)
    raw = dict(knobs.raw)
    values: dict[str, str] = {
        "CUDA_VISIBLE_DEVICES": cuda_visible,
        "HTTPS_PROXY": "",
        "HTTP_PROXY": "",
        "NO_PROXY": "",
        "OLLAMA_CONTEXT_LENGTH": str(knobs.context_length or (4096 if v.number <= (0, 12, 10) else 0)),
        "OLLAMA_DEBUG": "INFO",
        "OLLAMA_FLASH_ATTENTION": "true" if knobs.flash_attention else "false",
        "OLLAMA_GPU_OVERHEAD": "0",
        "OLLAMA_HOST": "http://" + raw.get("OLLAMA_HOST", "127.0.0.1:11434"),
        "OLLAMA_KEEP_ALIVE": "5m0s",
        "OLLAMA_KV_CACHE_TYPE": raw.get("OLLAMA_KV_CACHE_TYPE", ""),
        "OLLAMA_LOAD_TIMEOUT": "5m0s",
        "OLLAMA_MAX_LOADED_MODELS": "0",
        "OLLAMA_MAX_QUEUE": str(knobs.max_queue),
        "OLLAMA_MODELS": raw.get("OLLAMA_MODELS", ""),
        "OLLAMA_NOPRUNE": "true" if _bool(raw.get("OLLAMA_NOPRUNE")) else "false",
        "OLLAMA_NUM_PARALLEL": str(knobs.num_parallel),
        "OLLAMA_ORIGINS": "[http://localhost https://localhost http://127.0.0.1 app://* file://*]",
        "OLLAMA_SCHED_SPREAD": "true" if knobs.sched_spread else "false",
        "http_proxy": "",
        "https_proxy": "",
        "no_proxy": "",
    }
    if v.era != "C":
        values["OLLAMA_NEW_ENGINE"] = "true" if knobs.new_engine else "false"
    body = " ".join(f"{k}:{values[k]}" for k in sorted(values))
    return f'time=0 level=INFO source=routes.go:1 msg="server config" env="map[{body}]"'
