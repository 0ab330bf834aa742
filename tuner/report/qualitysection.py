"""The report's quality text: one line on the first screen (what the faster tag costs in quality, or why
quality was not measured) and the detail section with each tag's figures and their spread. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.decision.picks import Decision
from tuner.decision.quality import limit_of, quality_cost
from tuner.decision.trials import decode_of, fmt_interval, is_measured, speed_interval
from tuner.fidelity import HIGH_PRECISION, TagQuality, fmt_loss, fmt_top1, precision_rank
from tuner.report.render import Block, escape_md
from tuner.schema import StudyMeta, TrialRecord


def stored_results(meta: StudyMeta) -> list[TagQuality]:
    block = getattr(meta, "quality", None) or {}
    variants = block.get("variants") if isinstance(block, dict) else None
    if not isinstance(variants, dict):
        return []
    return [TagQuality.from_dict(v) for v in variants.values() if isinstance(v, dict)]


def _why_not(results: Sequence[TagQuality]) -> str:
    return next((q.why_not for q in results if not q.measured and q.why_not), "")


def quality_cost_line(meta: StudyMeta, records: Sequence[TrialRecord], decision: Decision) -> list[Block]:
    results = stored_results(meta)
    if not results:
        return []
    if not any(q.measured and not q.is_reference for q in results):
        return [
            Block("p", f"**Quality not measured:** {escape_md(_why_not(results) or 'no tag to compare')}.")
        ]
    fastest = decision.picks.get("fastest")
    within = decision.picks.get("fastest_within_quality")
    text = quality_cost(
        records, fastest.trial if fastest else None, within.trial if within else None, limit_of(meta)
    )
    return [Block("p", f"**Quality:** {escape_md(text)}")] if text else []


def _ok_but_quality(r: TrialRecord) -> bool:
    """Measured, and every constraint but the quality one met."""
    return is_measured(r) and all(v <= 0 for k, v in (r.constraints or {}).items() if k != "quality_over")


def _kv(kv: str | None) -> str | None:
    return None if kv in (None, "", "f16") else kv


def _divergence(q: TagQuality) -> str:
    d = q.first_divergence
    if d is None or q.is_reference:
        return "-"
    return f"{d.mean:.1f} ({d.low:.1f}-{d.high:.1f})" if d.n > 1 else f"{d.mean:.1f}"


def quality_section(meta: StudyMeta, records: Sequence[TrialRecord], decision: Decision) -> list[Block]:
    results = stored_results(meta)
    if not results:
        return []
    reference = next((q.reference for q in results if q.reference), "")
    ref_q = (meta.quantization or {}).get(reference, "") if isinstance(meta.quantization, dict) else ""
    blocks = [Block("h3", "Quality of each tag")]
    measured = [q for q in results if q.measured]
    if not measured:
        blocks.append(Block("p", f"Quality not measured: {escape_md(_why_not(results))}."))
        return blocks
    q0 = next((q for q in measured if not q.is_reference), measured[0])
    method = (
        "every position of the reference's answer (teacher-forced: the reference's tokens are fed to the tag)"
        if q0.method == "teacher-forced"
        else "the positions up to and including the first where the greedy answers differ (greedy prefix: "
        "the engine cannot be fed the reference's tokens)"
    )
    text = (
        f"Each tag's next-token log-probabilities (top {q0.top_k or 20}, temperature 0) on autotune's prompt "
        f"set {q0.prompt_set or '?'} (chat, code, reasoning, long context; {q0.num_predict or '?'} tokens "
        f"each) against the most precise tag, {reference}, over {method}. Quality loss is the mean "
        "KL divergence in nats per token over the reference's top-k tokens plus the rest (a lower bound "
        "of the full KL that llama.cpp's perplexity tool reports); top-1 is the share of positions where "
        "both put the same token first; first divergence is the token where their greedy answers part. "
        "Intervals are 95% over the prompts. Measured once per tag and KV cache type: placement and "
        "context do not change them."
    )
    if precision_rank(ref_q or reference) < HIGH_PRECISION:
        text += (
            f" The reference itself is {ref_q or reference}, not a 16-bit or 8-bit tag: losses are relative."
        )
    blocks.append(Block("p", escape_md(text)))
    rows = []
    for q in sorted(results, key=lambda q: (not q.measured, q.loss if q.loss is not None else 0.0)):
        mine = [
            r
            for r in records
            if r.tag == q.tag and _ok_but_quality(r) and _kv(r.kv_cache_type) == q.kv_cache_type
        ]
        best = max(mine, key=decode_of, default=None)
        rows.append(
            [
                q.tag,
                q.kv_cache_type or "default",
                fmt_loss(q) if q.measured else f"not measured: {q.why_not}",
                fmt_top1(q),
                _divergence(q),
                str(q.positions) if q.measured and not q.is_reference else "-",
                q.method or "-",
                fmt_interval(speed_interval(best)) if best is not None else "-",
            ]
        )
    headers = [
        "tag",
        "KV cache",
        "quality loss: KL (95% interval)",
        "top-1 agreement",
        "first divergence (token)",
        "positions",
        "method",
        "fastest decode tok/s (other constraints met)",
    ]
    blocks.append(Block("table", items=headers, rows=rows))
    return blocks
