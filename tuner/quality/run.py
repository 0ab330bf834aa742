"""Measure each (tag, KV cache type)'s fidelity against the reference tag on a live engine.

Once per variant, never per num_gpu / num_ctx (placement does not change the weights' arithmetic): the
reference loads with the engine's own placement at QualitySettings.num_ctx, decodes every prompt of the
set greedily with its top-k log-probabilities, and unloads; then each other variant does the same and is
compared position by position (tuner.fidelity). Where the engine takes token ids (llama-server), a
candidate is teacher-forced: after each position where its greedy token differs, it is asked again with
the reference's tokens so far, so every reference position is compared (at most MAX_RESTARTS times per
prompt). Where it does not (Ollama), the comparison stops at the first divergence (greedy prefix).

An engine without log-probabilities (Ollama before 0.12.11), a reference that does not load, or an engine
that sends none gives every variant "not measured" with one line why: never a number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tuner.backend.base import AUTO, Backend, EngineOptions, LogprobBackend, TokenStep
from tuner.errors import BackendError
from tuner.fidelity import (
    PromptScore,
    TagQuality,
    choose_reference,
    not_measured,
    reference_quality,
    score_prompt,
    summarize,
    variant_key,
)
from tuner.quality import prompts as prompt_sets

MAX_RESTARTS = 8  # teacher-forced requests after divergences, per prompt
Variant = tuple[str, str | None]  # (tag, KV cache type; None = the engine's default, f16)


@dataclass(frozen=True)
class QualitySettings:
    prompt_set: str = prompt_sets.DEFAULT_VERSION
    num_predict: int = 32  # reference tokens per prompt
    top_k: int = 20  # Ollama's top_logprobs allows at most 20
    num_ctx: int = 4096  # room for the longest prompt (byte-level tokenizers included) and the answer


def normal_kv(kv: str | None) -> str | None:
    """f16 is the engines' default KV cache type: one key for both."""
    return None if kv in (None, "", "f16") else kv


def _options(kv: str | None, num_ctx: int) -> EngineOptions:
    kv = normal_kv(kv)
    return EngineOptions(AUTO, num_ctx, flash_attn="on" if kv else None, kv_cache_type=kv)


def measure_quality(
    backend: Backend,
    variants: Sequence[Variant],
    quantizations: Mapping[str, str],
    settings: QualitySettings = QualitySettings(),
    *,
    context_length: Mapping[str, int] | None = None,
    on_variant: Callable[[str], None] | None = None,
) -> dict[str, TagQuality]:
    """{variant_key: TagQuality} for every variant; the reference (the most precise tag, default KV cache)
    is 'reference'. `quantizations`: {tag: quantization name}; `context_length`: trained context per tag."""
    variants = [(tag, normal_kv(kv)) for tag, kv in variants]
    reference = choose_reference(dict(quantizations))
    keys = {variant_key(tag, kv): (tag, kv) for tag, kv in variants}

    def none_measured(why: str) -> dict[str, TagQuality]:
        return {k: not_measured(tag, kv, reference, why) for k, (tag, kv) in keys.items()}

    if len(set(quantizations)) < 2 and all(kv is None for _, kv in variants):
        return none_measured("only one variant: nothing to compare it with")
    if not isinstance(backend, LogprobBackend):
        return none_measured(f"the {backend.engine} backend cannot report token log-probabilities")
    why = backend.logprob_support()
    if why:
        return none_measured(why)
    pset = prompt_sets.load(settings.prompt_set)

    def ctx_for(tag: str) -> int:
        trained = (context_length or {}).get(tag)
        return min(settings.num_ctx, trained) if trained else settings.num_ctx

    if on_variant is not None:
        on_variant(f"{reference} (the reference)")
    try:
        ref_steps = _read_all(backend, reference, _options(None, ctx_for(reference)), pset, settings)
    except BackendError as exc:
        return none_measured(f"the reference {reference} gave no log-probabilities: {_first_line(exc)}")
    if not any(ref_steps):
        return none_measured(f"the reference {reference} generated no tokens with log-probabilities")
    out: dict[str, TagQuality] = {}
    for key, (tag, kv) in keys.items():
        if tag == reference and kv is None:
            out[key] = reference_quality(tag, kv, pset.version)
            continue
        if on_variant is not None:
            on_variant(tag + (f" (KV cache {kv})" if kv else ""))
        try:
            scores = _compare(backend, tag, _options(kv, ctx_for(tag)), pset, settings, ref_steps)
        except BackendError as exc:
            out[key] = not_measured(
                tag, kv, reference, f"no log-probabilities from {tag}: {_first_line(exc)}"
            )
            continue
        method = "teacher-forced" if backend.teacher_forcing else "greedy-prefix"
        out[key] = summarize(
            tag,
            kv,
            reference,
            scores,
            method=method,
            prompt_set=pset.version,
            top_k=settings.top_k,
            num_predict=settings.num_predict,
        )
    backend.unload_all()
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _read_all(
    backend: LogprobBackend,
    tag: str,
    options: EngineOptions,
    pset: prompt_sets.PromptSet,
    settings: QualitySettings,
) -> list[list[TokenStep]]:
    _load(backend, tag, options)
    return [
        backend.token_logprobs(tag, p.text, options, num_predict=settings.num_predict, top_k=settings.top_k)
        for p in pset.prompts
    ]


def _load(backend: LogprobBackend, tag: str, options: EngineOptions) -> None:
    backend.unload_all()
    backend.load(tag, options)


def _compare(
    backend: LogprobBackend,
    tag: str,
    options: EngineOptions,
    pset: prompt_sets.PromptSet,
    settings: QualitySettings,
    ref_steps: list[list[TokenStep]],
) -> list[PromptScore]:
    _load(backend, tag, options)
    scores = []
    for prompt, ref in zip(pset.prompts, ref_steps):
        if backend.teacher_forcing:
            cand = _teacher_forced(backend, tag, prompt.text, options, settings, ref)
        else:
            cand = backend.token_logprobs(
                tag, prompt.text, options, num_predict=settings.num_predict, top_k=settings.top_k
            )
        scores.append(score_prompt(prompt.id, prompt.kind, ref, cand, teacher_forced=backend.teacher_forcing))
    return scores


def _teacher_forced(
    backend: LogprobBackend,
    tag: str,
    text: str,
    options: EngineOptions,
    settings: QualitySettings,
    ref: list[TokenStep],
) -> list[TokenStep]:
    """The candidate's steps at every reference position, each conditioned on the reference's tokens before
    it: a new request, fed the reference's tokens so far, after each position where the candidate's own
    greedy token differs (it would continue from its own token otherwise)."""
    steps: list[TokenStep] = []
    for _ in range(MAX_RESTARTS + 1):
        pos = len(steps)
        if pos >= len(ref):
            break
        got = backend.token_logprobs(
            tag,
            text,
            options,
            num_predict=len(ref) - pos,
            top_k=settings.top_k,
            forced=[s.token for s in ref[:pos]],
        )
        if not got:
            break
        for j, step in enumerate(got):
            if pos + j >= len(ref):
                break
            steps.append(step)
            if step.token != ref[pos + j].token:
                break  # the next position would follow the candidate's own token
    return steps
