"""The metrics a plan's criteria can name: where each comes from (the study's trials or the soak), which
way is better, its unit. studies/README.md describes each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    source: str  # "trials": the best trial meeting the criterion's conditions; "soak": the soak's figure
    higher_is_better: bool
    unit: str
    about: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("decode_tok_s", "trials", True, "tok/s", "decode speed of the fastest qualifying trial"),
        Metric(
            "prefill_tok_s", "trials", True, "tok/s", "prompt speed of the fastest-prefill qualifying trial"
        ),
        Metric("ttft_s", "trials", False, "s", "time to first token of the quickest qualifying trial"),
        Metric("num_ctx", "trials", True, "tokens", "the largest context of a qualifying trial"),
        Metric("peak_vram_gib", "trials", False, "GiB", "the least peak VRAM of a qualifying trial"),
        Metric("soak_decode_tok_s", "soak", True, "tok/s", "median decode speed over the soak"),
        Metric("soak_drift_pct_per_h", "soak", True, "%/h", "decode speed trend over the soak (signed)"),
        Metric(
            "throttle_s", "soak", False, "s", "seconds the clocks were held back during the soak, any cause"
        ),
        Metric("thermal_throttle_s", "soak", False, "s", "seconds the clocks were held back by heat"),
        Metric("power_capped_s", "soak", False, "s", "seconds the clocks were held at the power limit"),
        Metric(
            "clock_collapses", "soak", False, "samples", "SM clock far below its median at normal temperature"
        ),
        Metric("max_temperature_c", "soak", False, "°C", "hottest GPU reading during the soak"),
        Metric("soak_j_per_token", "soak", False, "J/token", "energy per generated token over the soak"),
        Metric(
            "depth_decode_ratio", "soak", True, "ratio", "decode speed with the context full / nearly empty"
        ),
    )
}
