"""Simulated studies with noise, made fast: the simulator's noise-free core (Simulation.plan / speed) says
where each config lands and how fast it runs; each trial's repeats are that speed times lognormal noise (some
studies with a noisy neighbour's heavy one-sided slowdowns); the records come from the study's own
build_record, as a real trial would. No HTTP, no Optuna: about 30 ms a study.

    study = make_study(seed)        # StudyMeta, records (and what the generator chose, for coverage)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from tuner import remeasure
from tuner.backend.base import AUTO, Generation, Residency
from tuner.config import MeasureSettings, StudyConfig, ctx_ladder
from tuner.decision.picks import contenders
from tuner.measure import Measurement
from tuner.schema import SCHEMA_VERSION, StudyMeta, TrialRecord
from tuner.sim import Simulation
from tuner.space import Config
from tuner.study import build_record
from tuner.units import GiB

MODELS = {
    "llama3.1:8b": ("llama3.1:8b-instruct-", 32),
    "gemma3:12b": ("gemma3:12b-it-", 48),
    "deepseek-r1:32b": ("deepseek-r1:32b-qwen-distill-", 64),
    "llama3.3:70b": ("llama3.3:70b-instruct-", 80),
}
QUANTS = ("q4_K_M", "q8_0", "fp16")
CARDS = (
    "1xRTX4090",
    "1xRTX3090",
    "1xRTX4070",
    "2xRTX4090",
    "1xRTX3060-12GB",
    "4xGTX1070Ti",
    "1xH100",
    "2xA100-80GB",
    "1xRTX4080",
    "1xRTX5090",
)
VERSIONS = ("0.5.7", "0.12.10", "0.24.0", "0.32.0")
NUM_PREDICT = 64


@dataclass(frozen=True)
class Study:
    meta: StudyMeta
    records: list[TrialRecord]
    noise: float  # lognormal sigma of the repeats
    jitter: float  # a neighbour's one-sided slowdown sigma (0: none)
    remeasured: bool
    cards: str


def _generations(
    rng: random.Random, speed: float, repeats: int, noise: float, jitter: float
) -> list[Generation]:
    load = math.exp(rng.gauss(0, noise / 2))  # one factor per load: what the repeats of one trial share
    out = []
    for _ in range(repeats):
        factor = load * math.exp(rng.gauss(0, noise))
        if jitter:
            factor *= math.exp(abs(rng.gauss(0, jitter)))
        eval_s = NUM_PREDICT / speed * factor
        out.append(Generation(40, 0.05, NUM_PREDICT, eval_s, 0.05 + eval_s / NUM_PREDICT, eval_s + 0.06))
    return out


def _measure(
    sim: Simulation,
    rng: random.Random,
    tag: str,
    num_gpu: int,
    num_ctx: int | None,
    noise: float,
    jitter: float,
) -> Measurement:
    config = Config(tag, num_gpu, num_ctx or 0)
    p = sim.plan(tag, num_gpu, num_ctx)
    if not p.ok:
        return Measurement(config, loaded=False, oom=True, error=p.error, vram_source="simulator")
    speed = sim.speed(p).decode_tok_s
    repeats = rng.choice((3, 3, 4, 5, 8))
    gens = _generations(rng, speed, repeats, noise, jitter)
    residency = Residency(p.size_bytes, p.size_vram_bytes, p.num_ctx)
    return Measurement(
        config,
        loaded=True,
        load_s=1.0,
        residency=residency,
        generations=gens,
        peak_vram_per_gpu=[int(b) for b in p.gpu_bytes],
        vram_source="simulator",
        target_rse=0.02,
    )


def make_study(seed: int) -> Study:
    rng = random.Random(seed)
    model = rng.choice(list(MODELS))
    prefix, blocks = MODELS[model]
    quants = rng.sample(QUANTS, rng.choice((1, 1, 2, 3)))
    tags = [prefix + q for q in quants]
    cards = rng.choice(CARDS)
    version = rng.choice(VERSIONS)
    sim = Simulation(cards, version=version, noise=0, host_ram=rng.choice(("32GiB", "64GiB", "128GiB")))
    noise = rng.choice((0.005, 0.01, 0.02, 0.02, 0.04, 0.08))
    jitter = rng.choice((0.0, 0.0, 0.0, 0.25))
    ladder = ctx_ladder(131072, max_ctx=rng.choice((16384, 32768, 131072)))
    total = sum(g.memory_bytes for g in sim.gpus)
    min_ctx = rng.choice((None, None, None, 4096, 8192))
    vram_limit = rng.choice((None, None, None, int(total * rng.uniform(0.4, 0.9))))
    gpu_only = rng.random() < 0.08
    allow_cpu_only = rng.random() < 0.05
    config = StudyConfig(
        model=model,
        tags=tuple(tags),
        engine="ollama",
        budget=30,
        storage="in-memory",
        study_name=f"prop-{seed}",
        min_ctx=min_ctx,
        vram_limit_bytes=vram_limit,
        gpu_only=gpu_only,
        allow_cpu_only=allow_cpu_only,
        measure=MeasureSettings(num_predict=NUM_PREDICT),
    )
    baseline_ctx = rng.choice((None, None, 4096, 8192, 32768))
    plan: list[tuple[str, int, int | None]] = [(tags[0], AUTO, baseline_ctx)]
    for tag in tags:  # what a search does: every layer at the smallest and a larger context
        plan.append((tag, blocks + 1, ladder[0]))
        plan.append((tag, blocks + 1, rng.choice(ladder)))
    plan.append((tags[0], 0, ladder[0]))  # the CPU-only anchor
    for _ in range(rng.randint(8, 22)):
        tag = rng.choice(tags)
        num_gpu = rng.choice((rng.randint(0, blocks + 1), blocks + 1, blocks, blocks - rng.randint(1, 6)))
        plan.append((tag, max(0, num_gpu), rng.choice(ladder)))
    plan = list(dict.fromkeys(plan))
    records = []
    for number, (tag, num_gpu, num_ctx) in enumerate(plan):
        m = _measure(sim, rng, tag, num_gpu, num_ctx, noise, jitter if rng.random() < 0.6 else 0.0)
        record = build_record(number, m.config, m, config, baseline=num_gpu == AUTO)
        records.append(record)
    meta = StudyMeta(
        schema_version=SCHEMA_VERSION,
        study_name=config.study_name,
        engine="ollama",
        model=model,
        tags=tags,
        block_count={t: blocks for t in tags},
        context_length={t: 131072 for t in tags},
        ctx_ladder=ladder,
        budget=config.budget,
        vram_limit_bytes=vram_limit,
        min_ctx=min_ctx,
        gpu_only=gpu_only,
        depth=0.0,
        num_predict=NUM_PREDICT,
        fingerprint={"gpus": [{"name": g.name, "memory_bytes": g.memory_bytes} for g in sim.gpus]},
        allow_cpu_only=allow_cpu_only,
    )
    remeasured = rng.random() < 0.5
    if remeasured:
        todo = contenders(meta, records)
        if len(todo) >= 2:
            samples = {}
            for r in todo:
                truth = sim.speed(sim.plan(r.tag, r.num_gpu, r.num_ctx or None)).decode_tok_s
                samples[str(r.number)] = [
                    round(truth * math.exp(rng.gauss(0, noise / 2)), 4) for _ in range(4)
                ]
            stored = {"rounds": 4, "trials": sorted(int(k) for k in samples), "samples": samples}
            records = remeasure.apply(records, stored)
            meta = replace(meta, remeasure=stored)
        else:
            remeasured = False
    return Study(meta, records, noise, jitter, remeasured, cards)


def gib(value: float | None) -> str:
    return f"{(value or 0) / GiB:.2f} GiB"
