"""GPU cards as their spec sheets list them, and the parser for `--gpus`. Pure data.

`autotune plan` plans for these cards and the simulator (tuner.sim) simulates them, so they live here, below
both, rather than inside the simulator. Card figures are public spec-sheet numbers: memory as NVML reports it
(nvidia-smi "MiB" total), peak memory bandwidth (GB/s), and dense FP16 tensor throughput with FP16 accumulate
(TFLOPS, no sparsity; cards without tensor cores get their plain FP32 rate). The simulator's speed model
(tuner/sim/perf.py) calibrates one efficiency factor for each against measured llama.cpp numbers, so what
matters is that the figures are consistent from card to card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuner.config import bytes_of
from tuner.units import GiB, MiB


@dataclass(frozen=True)
class GpuSpec:
    name: str  # as NVML prints it
    memory_bytes: int  # total, as NVML reports it
    bandwidth_gbps: float  # peak memory bandwidth, GB/s
    tflops: float  # dense FP16 tensor TFLOPS (FP16 accumulate), or FP32 where there are no tensor cores
    compute_capability: tuple[int, int] = (8, 9)
    unified: bool = False  # memory shared with the host (DGX Spark / GB10)

    @property
    def idle_reserved_bytes(self) -> int:
        """What the driver and an idle desktop keep: CUDA's total is below NVML's, and free is below that.

        384 MiB + 1.25 % of the card gives the "available" figures Ollama logs for real cards
        (RTX 4090: 23.3 GiB of 24 GiB; A100 80GB: about 78.6 GiB).
        """
        return 384 * MiB + self.memory_bytes // 80

    @property
    def supports_flash_attention(self) -> bool:
        return flash_attention_capable(self.compute_capability)


def flash_attention_capable(compute_capability: tuple[int, int] | None) -> bool:
    """Ollama's rule: CUDA compute capability 7.0 or newer, except 7.2 (unknown: assume yes)."""
    if compute_capability is None:
        return True
    major, minor = compute_capability
    return major >= 7 and (major, minor) != (7, 2)


def _card(
    name: str, mib: int, bw: float, tflops: float, cc: tuple[int, int], unified: bool = False
) -> GpuSpec:
    return GpuSpec(name, mib * MiB, bw, tflops, cc, unified)


# key (lower case, alphanumerics only) -> card. Aliases point at the same card.
KNOWN_CARDS: dict[str, GpuSpec] = {
    "rtx4090": _card("NVIDIA GeForce RTX 4090", 24564, 1008.0, 330.3, (8, 9)),
    "rtx4090d": _card("NVIDIA GeForce RTX 4090 D", 24564, 1008.0, 294.0, (8, 9)),
    "rtx3090": _card("NVIDIA GeForce RTX 3090", 24576, 936.2, 142.0, (8, 6)),
    "rtx3090ti": _card("NVIDIA GeForce RTX 3090 Ti", 24564, 1008.0, 160.0, (8, 6)),
    "rtx5090": _card("NVIDIA GeForce RTX 5090", 32607, 1792.0, 419.0, (12, 0)),
    "rtx5080": _card("NVIDIA GeForce RTX 5080", 16303, 960.0, 225.1, (12, 0)),
    "rtx5060ti16gb": _card("NVIDIA GeForce RTX 5060 Ti", 16311, 448.0, 95.0, (12, 0)),
    "rtx4080super": _card("NVIDIA GeForce RTX 4080 SUPER", 16376, 736.3, 208.9, (8, 9)),
    "rtx4080": _card("NVIDIA GeForce RTX 4080", 16376, 716.8, 194.9, (8, 9)),
    "rtx4070ti": _card("NVIDIA GeForce RTX 4070 Ti", 12282, 504.0, 160.4, (8, 9)),
    "rtx4070tisuper": _card("NVIDIA GeForce RTX 4070 Ti SUPER", 16376, 672.0, 176.4, (8, 9)),
    "rtx4070": _card("NVIDIA GeForce RTX 4070", 12282, 504.0, 116.8, (8, 9)),
    "rtx306012gb": _card("NVIDIA GeForce RTX 3060", 12288, 360.0, 51.2, (8, 6)),
    "rtx2080ti": _card("NVIDIA GeForce RTX 2080 Ti", 11264, 616.0, 107.6, (7, 5)),
    "rtx2080": _card("NVIDIA GeForce RTX 2080", 8192, 448.0, 80.5, (7, 5)),
    "gtx1070ti": _card("NVIDIA GeForce GTX 1070 Ti", 8192, 256.3, 8.2, (6, 1)),
    "rtx6000ada": _card("NVIDIA RTX 6000 Ada Generation", 49140, 960.0, 364.2, (8, 9)),
    "rtxa6000": _card("NVIDIA RTX A6000", 49140, 768.0, 154.8, (8, 6)),
    "quadrortx6000": _card("Quadro RTX 6000", 24576, 672.0, 130.5, (7, 5)),
    "rtxpro6000": _card("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", 97887, 1792.0, 503.8, (12, 0)),
    "rtxpro4000": _card("NVIDIA RTX PRO 4000 Blackwell", 24467, 672.0, 188.0, (12, 0)),
    "v10032gb": _card("Tesla V100-SXM2-32GB", 32768, 900.0, 125.0, (7, 0)),
    "a30": _card("NVIDIA A30", 24576, 933.0, 165.0, (8, 0)),
    "a10": _card("NVIDIA A10", 23028, 600.0, 125.0, (8, 6)),
    "m40": _card("Tesla M40 24GB", 24576, 288.0, 7.0, (5, 2)),
    "a10080gb": _card("NVIDIA A100-SXM4-80GB", 81920, 2039.0, 312.0, (8, 0)),
    "a10080gbpcie": _card("NVIDIA A100 80GB PCIe", 81920, 1935.0, 312.0, (8, 0)),
    "a80080gb": _card("NVIDIA A800-SXM4-80GB", 81920, 2039.0, 312.0, (8, 0)),
    "h100": _card("NVIDIA H100 80GB HBM3", 81559, 3350.0, 989.4, (9, 0)),
    "h200": _card("NVIDIA H200", 143771, 4800.0, 989.4, (9, 0)),
    "gb10": _card("NVIDIA GB10", 131072, 273.0, 62.5, (12, 1), unified=True),
    # Added for the search benchmark. Memory bandwidth (GB/s) from NVIDIA's product pages and the TechPowerUp
    # GPU database (techpowerup.com/gpu-specs); TFLOPS = 4 x the FP32 rate for GeForce Ampere/Ada/Blackwell
    # (FP16 tensor with FP16 accumulate, dense), the datasheet's dense FP16 tensor figure for data-center and
    # workstation parts, plain FP32 for the P40 (no tensor cores).
    "rtx30608gb": _card("NVIDIA GeForce RTX 3060", 8192, 240.0, 51.2, (8, 6)),  # 128-bit, 15 Gbps
    "rtx3070": _card("NVIDIA GeForce RTX 3070", 8192, 448.0, 81.3, (8, 6)),  # 256-bit, 14 Gbps
    "rtx308010gb": _card("NVIDIA GeForce RTX 3080", 10240, 760.3, 119.1, (8, 6)),  # 320-bit, 19 Gbps
    "rtx308012gb": _card("NVIDIA GeForce RTX 3080", 12288, 912.4, 122.4, (8, 6)),  # 384-bit, 19 Gbps
    "rtx4060": _card("NVIDIA GeForce RTX 4060", 8188, 272.0, 60.5, (8, 9)),  # 128-bit, 17 Gbps
    "rtx4060laptop": _card("NVIDIA GeForce RTX 4060 Laptop GPU", 8188, 256.0, 46.4, (8, 9)),  # 16 Gbps
    "rtx4060ti16gb": _card("NVIDIA GeForce RTX 4060 Ti", 16380, 288.0, 88.3, (8, 9)),  # 128-bit, 18 Gbps
    "rtx5070ti": _card("NVIDIA GeForce RTX 5070 Ti", 16303, 896.0, 175.8, (12, 0)),  # 256-bit GDDR7, 28 Gbps
    "l4": _card("NVIDIA L4", 23034, 300.0, 121.0, (8, 9)),
    "l40s": _card("NVIDIA L40S", 46068, 864.0, 362.1, (8, 9)),
    "l40": _card("NVIDIA L40", 46068, 864.0, 181.0, (8, 9)),
    "a40": _card("NVIDIA A40", 46068, 695.8, 149.7, (8, 6)),
    "rtxa5000": _card("NVIDIA RTX A5000", 24564, 768.0, 111.1, (8, 6)),
    "p40": _card("Tesla P40", 24576, 347.1, 11.8, (6, 1)),  # GDDR5, 384-bit, 7.2 Gbps
    "v10016gb": _card("Tesla V100-PCIE-16GB", 16384, 900.0, 112.0, (7, 0)),
}
_ALIASES = {
    "4090": "rtx4090",
    "geforcertx4090": "rtx4090",
    "rtx4090d": "rtx4090d",
    "3090": "rtx3090",
    "geforcertx3090": "rtx3090",
    "3090ti": "rtx3090ti",
    "5090": "rtx5090",
    "geforcertx5090": "rtx5090",
    "5080": "rtx5080",
    "rtx5060ti": "rtx5060ti16gb",
    "rtx3060": "rtx306012gb",
    "3060": "rtx306012gb",
    "rtx306012g": "rtx306012gb",
    "1070ti": "gtx1070ti",
    "geforcegtx1070ti": "gtx1070ti",
    "a100": "a10080gb",
    "a10080g": "a10080gb",
    "a100sxm480gb": "a10080gb",
    "a80080g": "a80080gb",
    "a800": "a80080gb",
    "a800sxm480gb": "a80080gb",
    "h10080gb": "h100",
    "h100sxm": "h100",
    "h10080gbhbm3": "h100",
    "h200141gb": "h200",
    "rtxpro6000blackwell": "rtxpro6000",
    "rtxpro600096gb": "rtxpro6000",
    "pro6000": "rtxpro6000",
    "dgxspark": "gb10",
    "spark": "gb10",
    "v100": "v10032gb",
    "teslam40": "m40",
    "teslav100": "v10032gb",
    "rtx30608g": "rtx30608gb",
    "3070": "rtx3070",
    "rtx3080": "rtx308010gb",
    "3080": "rtx308010gb",
    "rtx308010g": "rtx308010gb",
    "rtx308012g": "rtx308012gb",
    "4060": "rtx4060",
    "rtx40608gb": "rtx4060",
    "rtx4060laptopgpu": "rtx4060laptop",
    "rtx4060mobile": "rtx4060laptop",
    "rtx4060ti": "rtx4060ti16gb",
    "rtx4060ti16g": "rtx4060ti16gb",
    "5070ti": "rtx5070ti",
    "teslap40": "p40",
    "a5000": "rtxa5000",
    "v100pcie16gb": "v10016gb",
    "teslav100pcie16gb": "v10016gb",
}

_VALID_FORMS = (
    "valid forms: '2x24GiB', '24GiB,12GiB', '2xRTX4090', '8xA800-80GB', '4xGTX1070Ti', '1xH100' "
    "(known cards: RTX4090, RTX3090, RTX5090, RTX5070Ti, RTX3080-10GB, RTX3060-12GB, RTX4060, RTX4060-Laptop, "
    "RTX4060Ti-16GB, GTX1070Ti, L4, L40S, A40, A10, RTX-A5000, P40, V100, A100-80GB, A800-80GB, H100, H200, "
    "RTX-PRO-6000, GB10/DGX-Spark, and more)"
)


def parse_bytes(value: str | int | float, what: str = "size") -> int:
    """'64GiB' -> bytes (tuner.config.bytes_of: 'GB'/'TB' decimal, 'GiB'/'G' binary); a number is bytes.
    A bad value raises ValueError quoting it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"Invalid {what} {value!r}: must not be negative.")
        return int(value)
    size = bytes_of(str(value))
    if size is None:
        raise ValueError(
            f"Invalid {what} {value!r}: use a number with a unit, e.g. '64GiB', '16GB', '1TiB', '512MiB'."
        )
    return size


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def lookup_card(text: str) -> GpuSpec | None:
    key = _key(text)
    key = _ALIASES.get(key, key)
    if key.startswith("nvidia"):
        key = _ALIASES.get(key[6:], key[6:])
    return KNOWN_CARDS.get(key)


def generic_card(memory_bytes: int) -> GpuSpec:
    """A card known only by its size: bandwidth and throughput of a typical card of that size."""
    gib = memory_bytes / GiB
    tiers = [  # (up to GiB, bandwidth GB/s, TFLOPS, compute capability)
        (8.5, 256.0, 30.0, (7, 5)),
        (12.5, 360.0, 51.2, (8, 6)),
        (16.5, 448.0, 95.0, (8, 9)),
        (24.5, 1008.0, 330.3, (8, 9)),
        (32.5, 1792.0, 419.0, (12, 0)),
        (48.5, 960.0, 364.2, (8, 9)),
        (80.5, 2039.0, 312.0, (8, 0)),
        (96.5, 1792.0, 503.8, (12, 0)),
    ]
    bw, tflops, cc = 4800.0, 989.4, (9, 0)  # beyond 96 GiB: an H200-class part
    for limit, tier_bw, tier_tflops, tier_cc in tiers:
        if gib <= limit:
            bw, tflops, cc = tier_bw, tier_tflops, tier_cc
            break
    label = f"{gib:g} GiB" if abs(gib - round(gib, 2)) < 1e-9 else f"{memory_bytes} B"
    return GpuSpec(f"NVIDIA Simulated GPU {label}", memory_bytes, bw, tflops, cc)


def _parse_one(item: str, whole: str) -> list[GpuSpec]:
    text = item.strip()
    count = 1
    match = re.match(r"^(\d+)\s*[x×*]\s*(.+)$", text, re.IGNORECASE)
    if match:
        count, text = int(match.group(1)), match.group(2).strip()
    if not text or count < 1 or count > 64:
        raise ValueError(f"Invalid GPU list {whole!r} (bad item {item!r}); {_VALID_FORMS}.")
    card = lookup_card(text)
    if card is None:
        try:
            size = parse_bytes(text, "GPU memory")
        except ValueError:
            raise ValueError(
                f"Invalid GPU list {whole!r}: unknown card or size {text!r}; {_VALID_FORMS}."
            ) from None
        if size < 512 * MiB:
            raise ValueError(f"Invalid GPU list {whole!r}: {text!r} is too small for a GPU; {_VALID_FORMS}.")
        card = generic_card(size)
    return [card] * count


def parse_gpus(spec: str | list[GpuSpec] | tuple[GpuSpec, ...]) -> list[GpuSpec]:
    """'2x24GiB' | '24GiB,12GiB' | '2xRTX4090' | '8xA800-80GB' -> one GpuSpec per card ('' or 'none' -> no GPU)."""
    if isinstance(spec, (list, tuple)):
        if not all(isinstance(g, GpuSpec) for g in spec):
            raise ValueError(f"Invalid GPU list {spec!r}; {_VALID_FORMS}.")
        return list(spec)
    if not isinstance(spec, str):
        raise ValueError(f"Invalid GPU list {spec!r}; {_VALID_FORMS}.")
    if spec.strip().lower() in ("", "none", "cpu", "0"):
        return []
    cards: list[GpuSpec] = []
    for item in spec.split(","):
        cards.extend(_parse_one(item, spec))
    if len(cards) > 64:
        raise ValueError(f"Invalid GPU list {spec!r}: more than 64 GPUs; {_VALID_FORMS}.")
    return cards
