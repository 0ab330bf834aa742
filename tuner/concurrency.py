"""The concurrency ladder: 1, 2, 4 ... concurrent streams against one model config, and the serving pick.

Metrics follow NVIDIA AIPerf's metrics reference and GuideLLM's metrics guide
(https://docs.nvidia.com/aiperf/reference/ai-perf-metrics-reference,
https://blog.vllm.ai/guidellm/main/guides/metrics), all timed on the client:

    TTFT            request sent -> first chunk with non-empty text (empty chunks are skipped, as AIPerf does);
                    it includes queueing for a slot, prefill and the network
    ITL             (end-to-end latency - TTFT) / (output tokens - 1): the mean gap between tokens after the
                    first, per request (requests with one output token have none)
    end-to-end      request sent -> final chunk received
    aggregate tok/s output tokens of every successful request / the level's wall time (first send to last end)
    per-request     output tokens per second seen by one stream after its first token = 1 / ITL (AIPerf's
      tok/s         "output token throughput per user"); the level reports its median
    req/s           successful requests / the level's wall time

Percentiles (p50/p90/p99) interpolate linearly between order statistics, as numpy's default does.
Over-saturation: a level whose aggregate throughput grew by less than SATURATION_GAIN over the level before
while its median end-to-end latency rose by more than SATURATION_LATENCY_RISE. The ladder stops there.
The serving pick is the level with the most aggregate tok/s, no errors, not over-saturated, and p90 TTFT /
ITL within the SLA (`--sla-ttft`, `--sla-itl`).

The sender is injected (tuner.backend.stream.OllamaStreamer.generate in production), so this module never
talks to a server itself.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tuner.backend.stream import StreamRecord

SATURATION_GAIN = 0.10  # less than 10 % more aggregate throughput ...
SATURATION_LATENCY_RISE = 0.25  # ... while the median end-to-end latency rose by more than 25 %
SLA_PERCENTILE = "p90"

Send = Callable[[int], StreamRecord]  # the request's index -> its record


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p90: float | None
    p99: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between order statistics; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def percentiles(values: Sequence[float]) -> Percentiles:
    return Percentiles(percentile(values, 50), percentile(values, 90), percentile(values, 99))


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int
    ok: int
    errors: int
    error_messages: tuple[str, ...]  # distinct, at most 3
    wall_s: float
    output_tokens: int
    aggregate_tok_s: float
    per_request_tok_s: float | None
    req_s: float
    ttft_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    saturated: bool = False

    def meets(self, sla_ttft_s: float | None, sla_itl_s: float | None) -> bool:
        """No errors, and the p90 TTFT and ITL within the targets that are set."""
        if self.errors or not self.ok:
            return False
        for target, pct in ((sla_ttft_s, self.ttft_s), (sla_itl_s, self.itl_s)):
            value = getattr(pct, SLA_PERCENTILE)
            if target is not None and (value is None or value > target):
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize_level(concurrency: int, records: Sequence[StreamRecord]) -> LevelResult:
    """One level's figures from its request records (pure)."""
    good = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
    ttft = [r.first_token_s - r.sent_s for r in good if r.first_token_s is not None]
    e2e = [r.done_s - r.sent_s for r in good if r.done_s is not None]
    itl = [
        (r.done_s - r.first_token_s) / (r.output_tokens - 1)
        for r in good
        if r.first_token_s is not None and r.done_s is not None and r.output_tokens > 1
    ]
    ends = [r.done_s if r.done_s is not None else r.sent_s for r in records]
    wall = max(ends) - min(r.sent_s for r in records) if records else 0.0
    tokens = sum(r.output_tokens for r in good)
    per_user = [1.0 / x for x in itl if x > 0]
    messages = tuple(dict.fromkeys(r.error or "" for r in bad))[:3]
    return LevelResult(
        concurrency=concurrency,
        requests=len(records),
        ok=len(good),
        errors=len(bad),
        error_messages=messages,
        wall_s=wall,
        output_tokens=tokens,
        aggregate_tok_s=tokens / wall if wall > 0 else 0.0,
        per_request_tok_s=percentile(per_user, 50),
        req_s=len(good) / wall if wall > 0 else 0.0,
        ttft_s=percentiles(ttft),
        itl_s=percentiles(itl),
        e2e_s=percentiles(e2e),
    )


def is_saturated(before: LevelResult, now: LevelResult) -> bool:
    """Throughput flat (< SATURATION_GAIN more) while the median end-to-end latency climbs."""
    if before.aggregate_tok_s <= 0 or before.e2e_s.p50 is None or now.e2e_s.p50 is None:
        return False
    gain = now.aggregate_tok_s / before.aggregate_tok_s - 1.0
    rise = now.e2e_s.p50 / before.e2e_s.p50 - 1.0 if before.e2e_s.p50 > 0 else 0.0
    return gain < SATURATION_GAIN and rise > SATURATION_LATENCY_RISE


def ladder_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4 ... up to max_concurrency, which is always the last rung."""
    levels, n = [], 1
    while n < max_concurrency:
        levels.append(n)
        n *= 2
    return [*levels, max_concurrency]


def run_level(
    send: Send, concurrency: int, requests_per_stream: int, first_index: int = 0
) -> list[StreamRecord]:
    """`concurrency` threads, each sending `requests_per_stream` requests one after another."""
    records: list[StreamRecord] = []
    lock = threading.Lock()

    def stream(k: int) -> None:
        for j in range(requests_per_stream):
            record = send(first_index + k * requests_per_stream + j)
            with lock:
                records.append(record)

    threads = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


@dataclass(frozen=True)
class Ladder:
    levels: tuple[LevelResult, ...]
    stopped: str  # why it stopped: "max concurrency", "saturated", "errors"

    def pick(self, sla_ttft_s: float | None, sla_itl_s: float | None) -> LevelResult | None:
        """The serving pick: most aggregate tok/s among the levels that meet the SLA and are not
        over-saturated (past saturation more streams only queue: latency grows for no throughput)."""
        fit = [lv for lv in self.levels if lv.meets(sla_ttft_s, sla_itl_s) and not lv.saturated]
        return max(fit, key=lambda lv: lv.aggregate_tok_s) if fit else None

    def to_json(self) -> dict[str, Any]:
        return {"levels": [lv.to_json() for lv in self.levels], "stopped": self.stopped}


def run_ladder(
    send: Send,
    max_concurrency: int,
    requests_per_stream: int = 2,
    on_level: Callable[[LevelResult], None] | None = None,
) -> Ladder:
    """Climb the ladder; stop at max_concurrency, at over-saturation, or when a level only has errors."""
    done: list[LevelResult] = []
    index = 0
    stopped = "max concurrency"
    for n in ladder_levels(max_concurrency):
        records = run_level(send, n, requests_per_stream, index)
        index += len(records)
        level = summarize_level(n, records)
        if done and is_saturated(done[-1], level):
            level = LevelResult(**{**level.__dict__, "saturated": True})
        done.append(level)
        if on_level is not None:
            on_level(level)
        if level.saturated:
            stopped = "saturated"
            break
        if level.ok == 0:
            stopped = "errors"
            break
    return Ladder(tuple(done), stopped)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def render_table(ladder: Ladder, pick: LevelResult | None) -> str:
    """The ladder as a text table (times in ms), with the serving pick marked."""
    head = (
        f"{'conc':>4} {'ok':>4} {'err':>4} {'agg tok/s':>9} {'req tok/s':>9} {'req/s':>6} "
        f"{'TTFT p50/p90/p99':>17} {'ITL p50/p90/p99':>16} {'E2E p50/p90/p99':>18}"
    )
    lines = [head]
    for lv in ladder.levels:
        per = "-" if lv.per_request_tok_s is None else f"{lv.per_request_tok_s:.1f}"
        trio = [
            "/".join(_ms(getattr(p, k)) for k in ("p50", "p90", "p99"))
            for p in (lv.ttft_s, lv.itl_s, lv.e2e_s)
        ]
        mark = "  <- serving pick" if pick is lv else ("  saturated" if lv.saturated else "")
        lines.append(
            f"{lv.concurrency:>4} {lv.ok:>4} {lv.errors:>4} {lv.aggregate_tok_s:>9.1f} {per:>9} "
            f"{lv.req_s:>6.2f} {trio[0]:>17} {trio[1]:>16} {trio[2]:>18}{mark}"
        )
    return "\n".join(lines)


SETTINGS_TIE = 0.05  # server settings within 5 % of the best throughput count as equal


def choose_setting(throughputs: Sequence[float | None], slots: Sequence[int]) -> int | None:
    """Index of the server setting to recommend: its serving pick's aggregate tok/s within SETTINGS_TIE of
    the best, and of those the fewest slots (each slot holds its own KV cache: memory for nothing).
    None when no setting has a pick."""
    scored = [(t, i) for i, t in enumerate(throughputs) if t is not None]
    if not scored:
        return None
    top = max(t for t, _ in scored)
    near = [i for t, i in scored if t >= top * (1 - SETTINGS_TIE)]
    return min(near, key=lambda i: (slots[i], -(throughputs[i] or 0.0)))
