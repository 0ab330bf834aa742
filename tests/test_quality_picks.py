"""The quality picks as properties over generated studies (tuner.decision.quality): the fastest pick within
the limit never loses more than it and is within noise of the fastest config inside it, best.Modelfile takes
it, and the best-quality pick is the most faithful tag on the GPU. Without a quality measure nothing
changes."""

from __future__ import annotations

import random
from dataclasses import replace

from tuner.decision.picks import bare_meta, best_pick, decide
from tuner.decision.quality import DEFAULT_MAX_QUALITY_LOSS
from tuner.decision.trials import is_on_gpu, speed_interval
from tuner.schema import TrialRecord
from tuner.units import GiB


def generated(rng: random.Random) -> list[TrialRecord]:
    tags = {"m:fp16": 0.0, "m:q8_0": rng.uniform(0.0005, 0.004), "m:q4_K_M": rng.uniform(0.01, 0.12)}
    speed = {"m:fp16": 1.0, "m:q8_0": 1.8, "m:q4_K_M": 3.0}
    records = []
    for n in range(rng.randint(3, 14)):
        tag = rng.choice(list(tags))
        on_gpu = rng.random() < 0.7
        mean = 20 * speed[tag] * (1 if on_gpu else rng.uniform(0.1, 0.5)) * rng.uniform(0.9, 1.1)
        samples = [mean * rng.uniform(0.97, 1.03) for _ in range(3)]
        loss = tags[tag]
        records.append(
            TrialRecord(
                number=n,
                state="COMPLETE",
                tag=tag,
                num_gpu=33 if on_gpu else rng.randint(1, 30),
                num_ctx=rng.choice([2048, 4096, 8192]),
                decode_tok_s=sum(samples) / 3,
                decode_samples=samples,
                peak_vram_bytes=int(rng.uniform(4, 20) * GiB),
                gpu_fraction=1.0 if on_gpu else 0.6,
                cpu_spill=not on_gpu,
                feasible=True,
                repeats=3,
                baseline=n == 0,
                constraints={"quality_over": -1.0},
                quality_kl=loss,
                quality_kl_low=loss * 0.8,
                quality_kl_high=loss * 1.2,
                quality_top1=1 - loss,
            )
        )
    return records


def test_quality_picks_hold_over_generated_studies() -> None:
    rng = random.Random(15)
    for case in range(300):
        limit = rng.choice([None, 0.005, 0.03, 0.2])
        meta = replace(bare_meta(), max_quality_loss=limit)
        records = generated(rng)
        d = decide(meta, records)
        bound = DEFAULT_MAX_QUALITY_LOSS if limit is None else limit
        within = d.picks.get("fastest_within_quality")
        if within is None:
            assert all((r.quality_kl or 0) > bound for r in records), case
            continue
        assert (within.trial.quality_kl or 0) <= bound
        # within noise of the fastest config inside the limit (the fastest pick's tie and its tie-breaks)
        pick_interval = speed_interval(within.trial)
        top = max((r for r in records if (r.quality_kl or 0) <= bound), key=lambda r: r.decode_tok_s or 0)
        top_interval = speed_interval(top)
        assert pick_interval is not None and top_interval is not None
        assert pick_interval.overlaps(top_interval), (case, top.number, within.trial.number)
        best = best_pick(meta, records)
        assert best is not None and best.trial.number == within.trial.number
        faithful = d.picks.get("best_quality_on_gpu")
        on_gpu = [r for r in records if is_on_gpu(r)]
        user_ctx = records[0].num_ctx  # the baseline's: "at your context"
        at_ctx = [r for r in on_gpu if r.num_ctx >= user_ctx] or on_gpu
        if on_gpu:
            assert faithful is not None and is_on_gpu(faithful.trial)
            assert faithful.trial.num_ctx >= min(r.num_ctx for r in at_ctx)
            least = min(r.quality_kl or 0 for r in at_ctx)
            assert (faithful.trial.quality_kl_low or 0) <= least * 1.2 + 1e-12


def test_without_a_quality_measure_the_picks_are_as_before() -> None:
    rng = random.Random(2)
    for _ in range(50):
        records = [
            replace(r, quality_kl=None, quality_kl_low=None, quality_kl_high=None, quality_top1=None)
            for r in generated(rng)
        ]
        d = decide(bare_meta(), records)
        assert "fastest_within_quality" not in d.picks and "best_quality_on_gpu" not in d.picks
        assert d.best_name == "fastest"
        assert best_pick(bare_meta(), records).trial.number == d.picks["fastest"].trial.number  # type: ignore[union-attr]
