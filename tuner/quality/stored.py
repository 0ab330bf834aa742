"""The quality block a study stores (study user attribute ATTR) and how trials read it back.

    {"schema": 1, "prompt_set": "v1", "reference": "<tag>", "variants": {"<tag>|kv=<type>": TagQuality}}

Measured once per (tag, KV cache type); a resumed study measures only the variants it lacks, and the report
reads it without the server. Each trial record gets its variant's figures when the study is read back
(TrialRecord.quality_*), so the picks and the report need nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tuner.backend.base import Backend
from tuner.config import StudyConfig
from tuner.errors import ConfigError
from tuner.fidelity import QUALITY_SCHEMA, TagQuality, choose_reference, variant_key
from tuner.quality.run import QualitySettings, Variant, measure_quality, normal_kv
from tuner.schema import StudyMeta, TrialRecord

ATTR = "autotune_quality"


def results(block: Mapping[str, Any] | None) -> dict[str, TagQuality]:
    """{variant key: TagQuality} of a stored block (empty when there is none)."""
    if not block or not isinstance(block.get("variants"), dict):
        return {}
    return {k: TagQuality.from_dict(v) for k, v in block["variants"].items() if isinstance(v, dict)}


def missing(block: Mapping[str, Any] | None, variants: Sequence[Variant], prompt_set: str) -> list[Variant]:
    """The variants a study still has to measure (all of them when the stored set is another version)."""
    if not block or block.get("prompt_set") != prompt_set:
        return list(variants)
    have = results(block)
    return [v for v in variants if variant_key(*v) not in have]


def merged(block: Mapping[str, Any] | None, new: Mapping[str, TagQuality], prompt_set: str) -> dict[str, Any]:
    """The stored block with `new` results added (a block of another prompt set is replaced)."""
    keep = dict(block or {}) if block and block.get("prompt_set") == prompt_set else {}
    variants = dict(keep.get("variants") or {})
    variants.update({k: q.to_dict() for k, q in new.items()})
    reference = next((q.reference for q in new.values() if q.reference), keep.get("reference", ""))
    return {"schema": QUALITY_SCHEMA, "prompt_set": prompt_set, "reference": reference, "variants": variants}


def of(block_results: Mapping[str, TagQuality], tag: str, kv_cache_type: str | None) -> TagQuality | None:
    return block_results.get(variant_key(tag, normal_kv(kv_cache_type)))


def loss_of(block_results: Mapping[str, TagQuality], tag: str, kv_cache_type: str | None) -> float | None:
    q = of(block_results, tag, kv_cache_type)
    return q.loss if q is not None else None


def quality_over(limit: float | None, loss: float | None) -> float:
    """The quality_over constraint: (loss - limit) / limit with --max-quality-loss (a loss not measured is
    over), else -1 (<= 0 is satisfied)."""
    if limit is None:
        return -1.0
    if loss is None:
        return 1.0
    return (loss - limit) / limit if limit > 0 else (1.0 if loss > 0 else -1.0)


def over_words(tag: str, loss: float | None, limit: float | None) -> str:
    """Why a trial breaks the quality constraint, in the words of trials.csv's error column."""
    if loss is None:
        return f"{tag}'s quality was not measured (--max-quality-loss)"
    return f"{tag} loses {loss:.4g} nats of KL divergence, over --max-quality-loss {limit}"


def _rejudged(r: TrialRecord, loss: float | None, limit: float | None) -> TrialRecord:
    """The record judged against the study's current limit (a resumed study may have changed it)."""
    if "load_failed" not in (r.constraints or {}):
        return r
    constraints = {**r.constraints, "quality_over": quality_over(limit, loss)}
    if constraints == r.constraints:
        return r
    measured = constraints["load_failed"] <= 0
    parts = [p for p in (r.error or "").split("; ") if p and "--max-quality-loss" not in p]
    if measured and constraints["quality_over"] > 0:
        parts.append(over_words(r.tag, loss, limit))
    feasible = measured and all(v <= 0 for v in constraints.values())
    return dataclasses.replace(r, constraints=constraints, feasible=feasible, error="; ".join(parts))


def apply(
    records: Sequence[TrialRecord], block: Mapping[str, Any] | None, limit: float | None = None
) -> list[TrialRecord]:
    """Each record with its variant's quality filled in (None where not measured), and judged against
    --max-quality-loss `limit` as the study stands now."""
    found = results(block)
    out = []
    for r in records:
        q = of(found, r.tag, r.kv_cache_type)
        if q is None or not q.measured or q.kl is None:
            out.append(_rejudged(r, None, limit) if limit is not None else r)
            continue
        filled = dataclasses.replace(
            r,
            quality_kl=q.kl.mean,
            quality_kl_low=q.kl.low,
            quality_kl_high=q.kl.high,
            quality_top1=q.top1.mean if q.top1 is not None else None,
        )
        out.append(_rejudged(filled, q.loss, limit))
    return out


def ensure(
    backend: Backend,
    block: Mapping[str, Any] | None,
    variants: Sequence[Variant],
    quantizations: Mapping[str, str],
    settings: QualitySettings,
    *,
    context_length: Mapping[str, int] | None = None,
    on_variant: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """The study's quality block with every variant measured: `block` itself when it has them all (resume),
    else a new block with the missing ones measured (and the reference again, which they are compared with).
    None when nothing had to be measured and nothing was stored."""
    todo = missing(block, variants, settings.prompt_set)
    if not todo:
        return dict(block) if block else None
    reference = choose_reference(dict(quantizations))
    wanted = list(dict.fromkeys([*todo, (reference, None)])) if reference in quantizations else list(todo)
    new = measure_quality(
        backend,
        wanted,
        quantizations,
        settings,
        context_length=context_length,
        on_variant=on_variant,
    )
    return merged(block, new, settings.prompt_set)


def check_limit(block_results: Mapping[str, TagQuality], max_quality_loss: float | None) -> None:
    """--max-quality-loss needs a measured quality: ConfigError with the reason when there is none."""
    if max_quality_loss is None or any(q.measured for q in block_results.values()):
        return
    why = next((q.why_not for q in block_results.values() if q.why_not), "no tag was measured").rstrip(".")
    raise ConfigError(
        f"--max-quality-loss {max_quality_loss} cannot be applied: quality not measured ({why}); "
        "drop --max-quality-loss or measure on a server that serves log-probabilities."
    )


def for_study(
    backend: Backend,
    block: Mapping[str, Any] | None,
    meta: StudyMeta,
    variants: Sequence[Variant],
    config: StudyConfig,
    on_variant: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """A study's quality block (ensure) with its settings, and --max-quality-loss checked against it."""
    result = ensure(
        backend,
        block,
        variants,
        meta.quantization or {tag: tag for tag, _ in variants},
        QualitySettings(num_predict=config.quality_tokens),
        context_length=meta.context_length,
        on_variant=on_variant,
    )
    check_limit(results(result), config.max_quality_loss)
    return result


def over_limit(block: Mapping[str, Any] | None, max_quality_loss: float | None) -> frozenset[str]:
    """Tags whose default-KV quality loss is over --max-quality-loss: the search need not try them."""
    if max_quality_loss is None:
        return frozenset()
    return frozenset(
        q.tag
        for q in results(block).values()
        if q.kv_cache_type is None and q.loss is not None and q.loss > max_quality_loss
    )
