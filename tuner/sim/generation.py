"""What a simulated generation produces: token counts, prompt-cache reuse, timings, filler text, and the
NDJSON / JSON bodies of generate, chat, pull and create.

Tokens are approximated from the text (a word or punctuation mark is one token, long words a token per six
characters), plus a few template tokens around each message. Real prompts cost about the same.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from tuner.sim import logprobs as lp
from tuner.sim.catalog import FAMILIES, QUANTS, ModelFile, model_file, sha256_hex
from tuner.sim.core import Simulation
from tuner.sim.registry import LocalModel, utc_time
from tuner.sim.reply import Reply
from tuner.sim.scheduler import Runner
from tuner.units import MiB

REQUEST_OVERHEAD_S = 0.002  # templating, tokenising, HTTP
FILLER = (
    "The quick brown fox jumps over the lazy dog while the model keeps writing plain filler text so that "
    "every generated token has something to show and nothing depends on its meaning at all ."
).split()
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    out: list[str] = []
    for word in _TOKEN_RE.findall(text):
        if len(word) <= 6:
            out.append(word)
        else:
            out.extend(word[i : i + 6] for i in range(0, len(word), 6))
    return out


def render_prompt(req: dict[str, Any], chat: bool, lm: LocalModel) -> list[str]:
    """The prompt as the runner sees it: template tokens, system prompt, messages."""
    if chat:
        tokens: list[str] = []
        messages = req.get("messages") or []
        if lm.system and not any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            tokens += ["<|system|>", *tokenize(lm.system), "<|end|>"]
        for m in messages:
            if not isinstance(m, dict):
                continue
            tokens += [f"<|{m.get('role', 'user')}|>", *tokenize(str(m.get("content") or "")), "<|end|>"]
        return [*tokens, "<|assistant|>"]
    prompt = req.get("prompt") or ""
    if req.get("raw"):
        return tokenize(prompt)
    context = [f"<c{int(t)}>" for t in (req.get("context") or []) if isinstance(t, (int, float))]
    system = req.get("system") or lm.system
    head = ["<|system|>", *tokenize(system), "<|end|>"] if system else []
    return [*context, *head, "<|user|>", *tokenize(prompt), "<|end|>", "<|assistant|>"]


@dataclass(frozen=True)
class Result:
    prompt_tokens: int
    processed_tokens: int
    pieces: tuple[str, ...]
    thinking_count: int
    done_reason: str
    load_s: float
    prompt_s: float
    eval_s: float
    context: tuple[int, ...]
    logprobs: tuple[dict[str, Any], ...] | None = None  # per generated token, when the request asked
    queue_s: float = 0.0  # waiting for a parallel slot (in total_duration, not in load_duration)


def run(
    sim: Simulation,
    runner: Runner,
    tokens: list[str],
    opts: dict[str, Any],
    req: dict[str, Any],
    load_s: float,
    thinking: bool,
    lm: LocalModel | None = None,
) -> Result:
    ctx = runner.placement.num_ctx
    if len(tokens) >= ctx:  # the runner truncates an over-long prompt, keeping its end
        tokens = tokens[-(ctx - 1) :]
    cache = runner.prompt_cache
    common = 0
    for a, b in zip(cache, tokens):
        if a != b:
            break
        common += 1
    common = min(common, len(tokens) - 1)
    processed = len(tokens) - common
    num_predict = int(opts.get("num_predict", -1))
    if num_predict > 0:
        count, reason = min(num_predict, 10 * ctx), "length"
    else:
        count, reason = 60 + zlib.crc32(" ".join(tokens[-64:]).encode()) % 140, "stop"
    pieces = tuple(("" if i == 0 else " ") + FILLER[i % len(FILLER)] for i in range(count))
    logprobs = None
    if lm is not None and req.get("logprobs") and sim.version.has_logprobs:
        logprobs, pieces = _with_logprobs(lm, tokens, count, req)
    prompt_s, eval_s = sim.generation_seconds(runner.placement, processed, common, count, runner.load_factor)
    runner.prompt_cache = [*tokens, *(p.strip() for p in pieces)]
    ids = tuple(zlib.crc32(t.encode()) % 100000 for t in runner.prompt_cache) if not req.get("raw") else ()
    think_n = count // 4 if thinking else 0
    return Result(len(tokens), processed, pieces, think_n, reason, load_s, prompt_s, eval_s, ids, logprobs)


def _with_logprobs(
    lm: LocalModel, tokens: list[str], count: int, req: dict[str, Any]
) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
    """Greedy tokens from the token model (tuner.sim.logprobs) with Ollama's logprobs entries."""
    top_k = int(req.get("top_logprobs") or 0)
    context = [lm.file.family.model, *tokens]
    kld = lp.tag_kld(lm.file.ftype, lm.file.tag)
    steps = lp.generate(context, count, lp.vocabulary(FILLER), kld, lm.file.tag, top_k)

    def text(i: int, token: str) -> str:
        return ("" if i == 0 else " ") + token

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    entries = tuple(
        {
            **entry(text(i, s.token), s.logprob),
            **({"top_logprobs": [entry(text(i, t), v) for t, v in s.top]} if top_k else {}),
        }
        for i, s in enumerate(steps)
    )
    return entries, tuple(text(i, s.token) for i, s in enumerate(steps))


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def metrics(r: Result) -> dict[str, Any]:
    total = r.load_s + r.queue_s + r.prompt_s + r.eval_s + REQUEST_OVERHEAD_S
    values = {
        "total_duration": _ns(total),
        "load_duration": _ns(r.load_s),
        "prompt_eval_count": r.prompt_tokens,
        "prompt_eval_duration": _ns(r.prompt_s),
        "eval_count": len(r.pieces),
        "eval_duration": _ns(r.eval_s),
    }
    return {k: v for k, v in values.items() if v}  # omitempty


def empty_reply(name: str, now: float, chat: bool, reason: str) -> dict[str, Any]:
    head: dict[str, Any] = {"model": name, "created_at": utc_time(now)}
    if chat:
        head["message"] = {"role": "assistant", "content": ""}
    else:
        head["response"] = ""
    return {**head, "done": True, "done_reason": reason}


def reply(name: str, now: float, chat: bool, r: Result, stream: bool, raw_mode: bool) -> Reply:
    stamp = utc_time(now)
    think, answer = r.pieces[: r.thinking_count], r.pieces[r.thinking_count :]
    final: dict[str, Any] = {"model": name, "created_at": stamp}
    if not stream:
        text, thought = "".join(answer).lstrip(), "".join(think).lstrip()
        if chat:
            final["message"] = {
                "role": "assistant",
                "content": text,
                **({"thinking": thought} if thought else {}),
            }
        else:
            final["response"] = text
            if thought:
                final["thinking"] = thought
    elif chat:
        final["message"] = {"role": "assistant", "content": ""}
    else:
        final["response"] = ""
    final.update({"done": True, "done_reason": r.done_reason})
    if r.logprobs is not None and not stream:
        final["logprobs"] = list(r.logprobs)
    if not chat and not raw_mode and r.context:
        final["context"] = list(r.context)
    final.update(metrics(r))
    if not stream:
        return Reply(200, final, sleeps=[r.load_s + r.queue_s + r.prompt_s + r.eval_s])
    lines = []
    for i, piece in enumerate(r.pieces):
        in_thought = i < r.thinking_count
        if chat:
            msg = {"role": "assistant", "content": "" if in_thought else piece}
            if in_thought:
                msg["thinking"] = piece
            lines.append({"model": name, "created_at": stamp, "message": msg, "done": False})
        else:
            line = {"model": name, "created_at": stamp, "response": "" if in_thought else piece}
            if in_thought:
                line["thinking"] = piece
            lines.append({**line, "done": False})
        if r.logprobs is not None and i < len(r.logprobs):
            lines[-1]["logprobs"] = [r.logprobs[i]]
    lines.append(final)
    per_token = r.eval_s / max(1, len(r.pieces))
    sleeps = [r.load_s + r.queue_s + r.prompt_s + per_token] + [per_token] * (len(lines) - 1)
    return Reply(200, lines=lines, sleeps=sleeps)


def _layers(mf: ModelFile) -> list[tuple[str, int]]:
    fam = mf.family
    return [
        (mf.blob_digest, mf.file_bytes),
        (sha256_hex("template:" + fam.template), len(fam.template.encode())),
        (sha256_hex("license:" + fam.license), len(fam.license.encode())),
        (sha256_hex("params:" + repr(fam.parameters)), 96),
    ]


def pull_lines(mf: ModelFile, already: bool) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for digest, total in _layers(mf):
        head = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": total}
        steps = [total] if already or total < MiB else [total * k // 4 for k in range(1, 5)]
        lines += [{**head, "completed": c} for c in steps]
    return lines + [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]


def create_lines(mf: ModelFile, req: dict[str, Any]) -> list[dict[str, Any]]:
    lines = [{"status": f"using existing layer sha256:{digest}"} for digest, _ in _layers(mf)[:3]]
    for key in ("template", "system", "parameters", "messages"):
        if req.get(key):
            lines.append({"status": f"creating new layer sha256:{sha256_hex(key + repr(req[key]))}"})
    return lines + [{"status": "writing manifest"}]


def progress_reply(lines: list[dict[str, Any]], stream: bool) -> Reply:
    if stream:
        return Reply(200, lines=lines)
    for line in lines:
        if "error" in line:
            return Reply(500, {"error": line["error"]})
    return Reply(200, lines[-1])


def quantized_variant(mf: ModelFile, quantize: str) -> ModelFile | None:
    if mf.ftype != "F16":
        return None
    wanted = {k.lower(): k for k in QUANTS}.get(quantize.lower())
    if wanted is None or wanted == "fp16" or wanted not in mf.family.quants:
        return None
    return model_file(FAMILIES.index(mf.family), wanted)
