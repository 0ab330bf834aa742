"""Sizing OLLAMA_NUM_PARALLEL inside a study: after `autotune MODEL --serve --tune parallel --concurrency N`,
the concurrency ladder runs once per slot count the study found feasible, each on the best config at that
slot count, with the managed server restarted for each (ManagedOllamaBackend.ensure_environment), and the
serving pick is made across them as serve-bench makes it (tuner.concurrency.choose_setting): the most
aggregate tok/s under --sla-ttft / --sla-itl, and the fewest slots within 5 % of that.

The block stored on the study (user attribute autotune_concurrency) is the chosen slot count's ladder at the
top level (what the single-ladder report reads), plus "settings": one ladder per slot count, and "chosen":
the slot count the server files (server.env, the systemd drop-in, docker flags) then carry.
"""

from __future__ import annotations

from typing import Any

from tuner.backend.base import EngineOptions
from tuner.cliutil import say
from tuner.concurrency import choose_setting
from tuner.decision.picks import eligible, picks
from tuner.schema import StudyMeta, TrialRecord
from tuner.servetune import PER_STREAM, bench_options, ladder_json, measure_ladder, say_ladder


def options_of(r: TrialRecord) -> EngineOptions:
    """What the trial ran with: the server environment and the per-request knobs."""
    return EngineOptions(
        r.num_gpu,
        r.num_ctx,
        r.flash_attn,
        r.kv_cache_type,
        r.num_parallel,
        r.gpus,
        r.num_batch,
        r.main_gpu,
        r.num_thread,
    )


def best_per_slot_count(meta: StudyMeta, records: list[TrialRecord]) -> list[TrialRecord]:
    """The fastest feasible config at each slot count the study tried, fewest slots first; where the overall
    fastest config's other server knobs (flash attention, KV type, GPUs) were tried at that count, among
    those (the baseline trial, on the server's defaults, is at no count). Empty when no config is feasible or the study did not search OLLAMA_NUM_PARALLEL."""
    fastest = picks(meta, records).get("fastest")
    if fastest is None:
        return []
    pool = eligible(meta, records)
    best = fastest.trial  # the baseline (the server's defaults) matches no tuned knob: any config at a count
    home = (best.flash_attn, best.kv_cache_type, best.gpus) if best.num_parallel is not None else None
    out = []
    for slots in sorted({r.num_parallel for r in pool if r.num_parallel is not None}):
        at = [r for r in pool if r.num_parallel == slots]
        alike = [r for r in at if (r.flash_attn, r.kv_cache_type, r.gpus) == home]
        pick = picks(meta, alike or at).get("fastest")
        if pick is not None:
            out.append(pick.trial)
    return out


def ladders_per_slot_count(
    backend: Any,
    meta: StudyMeta,
    records: list[TrialRecord],
    max_concurrency: int,
    num_predict: int,
    sla: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """The ladder at every feasible slot count, the server restarted for each; the block to store.
    {} when there is fewer than two slot counts to compare (servetune.ladder_on_best then runs alone)."""
    from tuner.backend.ollamamanaged import server_env  # noqa: PLC0415

    configs = best_per_slot_count(meta, records)
    if len(configs) < 2 or not hasattr(backend, "ensure_environment"):
        return {}
    settings: list[dict[str, Any]] = []
    for i, best in enumerate(configs, 1):
        engine_options = options_of(best)
        restart_s = backend.ensure_environment(engine_options)
        options = bench_options(
            best.num_ctx or None, best.num_gpu if best.num_gpu >= 0 else None, num_predict
        )
        options.update({k: v for k, v in _per_request(best).items() if v is not None})
        say(
            f"concurrency ladder {i} of {len(configs)}: OLLAMA_NUM_PARALLEL={best.num_parallel} "
            f"({best.tag}, trial #{best.number}, num_ctx {best.num_ctx}, num_gpu {best.num_gpu})"
            + (f", server restart {restart_s:.1f} s" if restart_s > 0 else "")
        )
        ladder = measure_ladder(backend.host, best.tag, options, max_concurrency, PER_STREAM, quiet=False)
        pick = ladder.pick(*sla)
        say_ladder(ladder, pick)
        settings.append(
            {
                "num_parallel": best.num_parallel,
                "model": best.tag,
                "trial": best.number,
                "options": options,
                "env": server_env(engine_options),
                **ladder_json(ladder, pick),
            }
        )
    throughputs = [_pick_tok_s(s) for s in settings]
    index = choose_setting(throughputs, [int(s["num_parallel"]) for s in settings])
    chosen = settings[index] if index is not None else settings[0]
    if index is None:
        say("serving pick across slot counts: none (no slot count had a level within the targets)")
    else:
        say(
            f"serving pick across slot counts: OLLAMA_NUM_PARALLEL={chosen['num_parallel']}, "
            f"{chosen['serving_pick']} concurrent streams, {throughputs[index]:.1f} tok/s in all"
        )
    return {
        "schema": 1,
        **chosen,
        "requests_per_stream": PER_STREAM,
        "sla_ttft_s": sla[0],
        "sla_itl_s": sla[1],
        "settings": settings,
        "chosen": chosen["num_parallel"] if index is not None else None,
    }


def _per_request(r: TrialRecord) -> dict[str, int | None]:
    return {"num_batch": r.num_batch, "main_gpu": r.main_gpu, "num_thread": r.num_thread}


def _pick_tok_s(setting: dict[str, Any]) -> float | None:
    pick = setting.get("serving_pick")
    level = next((lv for lv in setting["levels"] if lv["concurrency"] == pick), None)
    return None if level is None else float(level["aggregate_tok_s"])
