"""Our search (`--sampler auto`): an Optuna sampler that uses what is known about the landscape.

Whether a config fits is monotone in num_gpu (and in num_ctx); speed rises with num_gpu until the CPU spill
ends; memory rises with both; tags differ mostly by bytes per weight. The plan, from the stored trials alone:

1. **The edge**, per tag from the lightest, at the smallest context: the most layers that load. It loads the
   largest num_gpu the learned memory belief (tuner.fitcheck, tuner.margin) gives at least SAFE to fit, and
   learns from it. Where the region predicted not to fit may hold a faster config (one more layer, or every
   layer on the GPU), it **tests the edge with a real load**: the largest num_gpu at least PROBE_MIN likely
   to fit, when it is predicted faster and the failed-load budget (MAX_FAILED_LOADS, at most 2 per edge)
   allows. A failure teaches the belief as much as a success. A load that fails for lack of *host* memory
   moves the edge up (more layers on the GPU need less host memory), never down.
2. **The deployable front** of the tags a user would run (tuner.schema.deployable: fully on the GPU, or at
   least half the best speed): the fewest layers predicted to reach half the best speed, then the gap between
   neighbouring measured points whose rectangle (VRAM gap x speed gap) is largest, until no gap is worth a
   trial. The CPU-only config only where it is predicted deployable.
3. **The largest context that stays fully on the GPU** for the fastest tag that fits whole (for the picks).
4. Then multivariate TPE for whatever budget is left, held to configs that are new, SAFE to fit, not ruled
   out by the host's memory, and predicted deployable; when TPE proposes none (its random start-up
   included), a seeded draw from those. When no such config is left, `exhausted` says so and the study stops
   rather than measure a config twice.

With --serve (space.grouped) the plan runs in one server environment at a time (tuner.servergroups): the
landscape holds that group's trials only, every config proposed is in it, and the next group starts when
the group's share of the budget is used or its plan is done. The server restarts once per group.

Everything is derived from the study's stored trials (COMPLETE, plus RUNNING and WAITING ones so parallel
workers and re-queued trials are never duplicated), so storage, resume, the dashboard and several workers on
one study keep working. No config is proposed twice on any path.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.backend.base import AUTO
from tuner.fitcheck import SAFE, FitCheck
from tuner.landscape import Key, Landscape, loaded, on_gpu, vram
from tuner.pareto import pareto_front
from tuner.records import record_of
from tuner.schema import DEPLOYABLE_FRACTION, TrialRecord
from tuner.servergroups import GroupPlan, ServerKey, key_of
from tuner.servergroups import current as current_group
from tuner.servergroups import plan as plan_groups
from tuner.space import FLASH_ATTN_CHOICES, KV_CACHE_CHOICES, Config, Space

MIN_GAIN = 0.002  # stop splitting gaps whose rectangle is below this share of the deployable front's box
PROBE_MIN = 0.2  # test the edge only where the belief gives at least this chance to fit
PROBE_GAIN = 1.005  # ... and the config is predicted at least this much faster than the edge so far
PROBES_PER_EDGE = 2  # failed loads one edge may cost
FALLBACK_DRAWS = 4  # TPE proposals tried for one that is allowed


def max_failed_loads(budget: int) -> int:
    """Failed loads a study may spend testing edges: about 5% of its simulated time at the benchmark's short
    trials (a failed load costs about half a load; a trial, a load and its generations)."""
    return max(2, budget // 10)


class StructuredSampler(optuna.samplers.BaseSampler):
    def __init__(
        self,
        space: Space,
        fitcheck: FitCheck | None,
        *,
        seed: int = 0,
        vram_limit_bytes: int | None = None,
        gpu_only: bool = False,
        budget: int = 40,
        excluded_tags: frozenset[str] = frozenset(),
    ) -> None:
        self.space = space
        self.excluded = excluded_tags  # tags over --max-quality-loss: never deployable, not searched
        self.fitcheck = fitcheck if fitcheck is not None and fitcheck.active else None
        self.vram_limit = vram_limit_bytes
        self.gpu_only = gpu_only
        self.budget = budget
        self.fallback = optuna.samplers.TPESampler(multivariate=True, n_startup_trials=5, seed=seed)
        self._rng = random.Random(seed)
        self.group: ServerKey | None = None  # the server environment being searched (space.grouped)
        self.groups: GroupPlan | None = None
        if space.grouped:
            home: ServerKey = (
                "on" if space.tune_flash_attn else None,
                "f16" if space.tune_kv_cache else None,
                space.parallel_choices[0] if space.parallel_choices else None,
                space.default_gpus if space.gpu_choices else None,
            )
            # the baseline trial (the engine's defaults) takes one trial of the budget before any group
            self.groups = plan_groups(space.server_points(), home, max(1, budget - 1))

    # -- Optuna's sampler interface -----------------------------------------------------------------
    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        low, high = self.space.log2_range
        out: dict[str, BaseDistribution] = {
            "tag": CategoricalDistribution(list(self.space.tags)),
            "num_gpu": IntDistribution(0, self.space.max_layers),
            "log2_ctx": IntDistribution(low, high),
        }
        if self.space.tune_kv_cache:
            out["kv_cache_type"] = CategoricalDistribution(list(KV_CACHE_CHOICES))
        if self.space.tune_flash_attn:
            out["flash_attn"] = CategoricalDistribution(list(FLASH_ATTN_CHOICES))
        if self.space.parallel_choices:
            out["num_parallel"] = CategoricalDistribution(list(self.space.parallel_choices))
        if self.space.gpu_choices:
            out["gpus"] = CategoricalDistribution(list(self.space.gpu_choices))
        if self.space.batch_choices:
            out["num_batch"] = CategoricalDistribution(list(self.space.batch_choices))
        if self.space.main_gpu_choices:
            out["main_gpu"] = CategoricalDistribution(list(self.space.main_gpu_choices))
        if self.space.thread_choices:
            out["num_thread"] = CategoricalDistribution(list(self.space.thread_choices))
        return out

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued trial (the baseline, a re-queued one)
            return {}
        land = self.landscape(study, trial)
        config = self.next_config(land) or self._fallback(study, trial, land)
        if config is None:  # nothing new is allowed (run_study stops before this): the least bad new config
            config = next(self._candidates(land, strict=False), None) or next(
                (c for c in self.space.all_configs() if land.fresh(c)), None
            )
        if config is None:
            return {}
        return self.space.params(config)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.fallback.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.fallback.after_trial(study, trial, state, values)

    def exhausted(self, study: optuna.Study) -> bool:
        """Nothing new is left where a user would deploy: no config that is new, predicted deployable, SAFE to
        fit and not ruled out by the host's memory, and no uncertain one the failed-load budget may test."""
        land = self.landscape(study, None)
        return self.next_config(land) is None and self._deployable_draw(land) is None

    # -- the stored trials ----------------------------------------------------------------------------
    def landscape(self, study: optuna.Study, trial: FrozenTrial | None) -> Landscape:
        """The stored trials; with server groups, those of the group the next trial belongs to (self.group)."""
        records, taken = _history(study, trial, self.space)
        if self.groups is None:
            return Landscape(self.space, self.fitcheck, records, taken, self.vram_limit, self.gpu_only)
        used = [key_of(r) for r in records if r.num_gpu != AUTO]
        used += [self.space.config(dict(k)).server_key for k in taken]  # type: ignore[arg-type]

        def land_of(p: ServerKey | None) -> Landscape:
            mine = records if p is None else [r for r in records if key_of(r) == p]
            return Landscape(self.space, self.fitcheck, mine, taken, self.vram_limit, self.gpu_only)

        def has_more(p: ServerKey) -> bool:
            self.group = p
            land = land_of(p)
            return self.next_config(land) is not None or self._deployable_draw(land) is not None

        latest = max((r for r in records if r.num_gpu != AUTO), key=lambda r: r.number, default=None)
        self.group = current_group(self.groups, used, has_more, key_of(latest) if latest else None)
        return land_of(self.group)

    # -- the plan -------------------------------------------------------------------------------------
    def next_config(self, land: Landscape) -> Config | None:
        """The next structured config, or None to let TPE choose."""
        ctx0 = self.space.ctx_ladder[0]
        tags = self._tags_by_weight()
        tops: dict[str, int] = {}
        for i, tag in enumerate(tags):  # 1. the edge at the smallest context, lightest tag first
            top, proposal = self._edge(land, tag, ctx0, may_probe=i == 0 or self._competitive(land, tag))
            if proposal is not None:
                return proposal
            if top is not None:
                tops[tag] = top
        if not tops:
            return None
        for tag in self._deployable_tags(land, tops):  # 2. the deployable front
            proposal = self._front(land, tag, ctx0)
            if proposal is not None:
                return proposal
        return self._context_probe(land, tops)  # 3. the largest context fully on the GPU

    def _tags_by_weight(self) -> list[str]:
        tags = [t for t in self.space.tags if t not in self.excluded] or list(self.space.tags)
        if self.fitcheck is None:
            return tags
        weight = {t: (s.weights_bytes if s else 0) for t, s in self.fitcheck.specs.items()}
        return sorted(tags, key=lambda t: (weight.get(t, 0), self.space.tags.index(t)))

    def _config(self, tag: str, num_gpu: int, ctx: int) -> Config:
        if self.group is not None:
            return Config(tag, num_gpu, ctx, *self.group)
        fa = "on" if self.space.tune_flash_attn else None
        kv = "f16" if self.space.tune_kv_cache else None
        return Config(tag, num_gpu, ctx, fa, kv)

    def _competitive(self, land: Landscape, tag: str) -> bool:
        """A heavier tag whose edge could still be deployable: worth a probe of its own."""
        full = self._config(tag, self.space.max_layers, self.space.ctx_ladder[0])
        speed = land.speed(full)
        return speed is None or not land.best or speed >= DEPLOYABLE_FRACTION * land.best

    def _probe_allowed(self, land: Landscape, tag: str, ctx: int) -> bool:
        failed = land.failed_loads()
        mine = [r for r in failed if r.tag == tag and r.num_ctx == ctx]
        return len(failed) < max_failed_loads(self.budget) and len(mine) < PROBES_PER_EDGE

    def _edge(self, land: Landscape, tag: str, ctx: int, may_probe: bool) -> tuple[int | None, Config | None]:
        """(the established top, or None) and the next config to establish it."""
        top, gpu_fail, host_fail = land.bracket(tag, ctx)
        high = min(gpu_fail - 1, self.space.max_layers)
        low = max(top, host_fail)
        cands = [self._config(tag, n, ctx) for n in range(high, low, -1)]
        if self.gpu_only:
            cands = [c for c in cands if c.num_gpu == self.space.max_layers]
        if any(land.key(c) in land.taken for c in cands):  # another worker is on this edge: leave it to them
            return (top if top >= 0 else None), None
        cands = [c for c in cands if land.fresh(c) and land.host(c) != "no"]
        if not cands:
            return (top if top >= 0 else None), None
        if land.p_fit(cands[0]) is None:  # nothing predicted: bisect between what loads and what fails
            if top < 0 and gpu_fail > self.space.max_layers:
                return None, cands[0]
            mid = (max(low, 0) + min(gpu_fail, self.space.max_layers + 1)) // 2
            return None, min(cands, key=lambda c: abs(c.num_gpu - mid))
        safe = _first_at_least(land, cands, SAFE)  # fit is monotone in num_gpu: bisect, most layers first
        if safe is not None:
            return None, safe
        if may_probe and self._probe_allowed(land, tag, ctx):
            likely = _first_at_least(land, cands, 0.5) or _first_at_least(land, cands, PROBE_MIN)
            if likely is not None and (top < 0 or self._faster(land, likely, self._config(tag, top, ctx))):
                return None, likely
        return (top if top >= 0 else None), None

    def _faster(self, land: Landscape, c: Config, than: Config) -> bool:
        a, b = land.speed(c), land.speed(than)
        return a is None or b is None or a >= PROBE_GAIN * b

    def _deployable_tags(self, land: Landscape, tops: dict[str, int]) -> list[str]:
        out = []
        for tag in self._tags_by_weight():
            if tag not in tops:
                continue
            best_of_tag = max(
                (r.decode_tok_s or 0 for r in land.measured_at(tag, self.space.ctx_ladder[0])), default=0
            )
            if not land.best or best_of_tag >= DEPLOYABLE_FRACTION * land.best:
                out.append(tag)
        return out

    def _front(self, land: Landscape, tag: str, ctx: int) -> Config | None:
        """The lower end of the deployable range, then the widest gap on it, then the CPU-only anchor (all of
        it needs the estimator: without a prediction there is no speed model, and no GPU the probe can see)."""
        if self.gpu_only or self.fitcheck is None:
            return None
        points = land.measured_at(tag, ctx)
        if not points or not land.best:
            return None
        floor = DEPLOYABLE_FRACTION * land.best
        above = [r for r in points if (r.decode_tok_s or 0) >= floor]
        below = [r for r in points if (r.decode_tok_s or 0) < floor]
        if above:
            lowest = min(above, key=lambda r: r.num_gpu)
            bottom = max((r.num_gpu for r in below if r.num_gpu < lowest.num_gpu), default=-1)
            if (lowest.decode_tok_s or 0) > 1.05 * floor and lowest.num_gpu - bottom > 1:
                target = self._lowest_deployable(land, tag, ctx, lowest.num_gpu, bottom)
                if target is not None:
                    return target
        gap = self._widest_gap(land, tag, ctx, floor)
        if gap is not None:
            return gap
        anchor = self._config(tag, 0, ctx)
        speed = land.speed(anchor)
        if speed is not None and speed >= floor and land.fresh(anchor) and land.host(anchor) != "no":
            return anchor
        return None

    def _lowest_deployable(
        self, land: Landscape, tag: str, ctx: int, below: int, bottom: int
    ) -> Config | None:
        """The fewest layers (between `bottom` and `below`, exclusive) predicted to reach half the best speed."""
        floor = DEPLOYABLE_FRACTION * land.best
        target = below - 1
        for n in range(below - 1, bottom, -1):
            speed = land.speed(self._config(tag, n, ctx))
            if speed is None or speed < floor:
                break
            target = n
        if not land.slope_known(tag):  # the speed model still runs on its prior: step far enough to learn it
            target = min(target, max(bottom + 1, below - max(2, -(-self.space.max_layers // 5))))
        for n in range(target, below):  # the nearest new one that is safe
            c = self._config(tag, n, ctx)
            if land.fresh(c) and land.host(c) != "no":
                p = land.p_fit(c)
                if p is None or p >= SAFE:
                    return c
        return None

    def _widest_gap(self, land: Landscape, tag: str, ctx: int, floor: float) -> Config | None:
        points = [(r.num_gpu, vram(r), r.decode_tok_s or 0.0) for r in land.measured_at(tag, ctx)]
        points = [p for p in points if p[2] >= 0.9 * floor]
        if len(points) < 2:
            return None
        front = pareto_front(points, speed=lambda p: p[2], memory=lambda p: p[1])
        span_v = max(p[1] for p in front) - min(p[1] for p in front) or 1.0
        span_s = max(p[2] for p in front) - min(p[2] for p in front) or 1.0
        mine = sorted({(p[0], p[1], p[2]) for p in points})
        best, best_gain = None, MIN_GAIN
        for (n_a, v_a, s_a), (n_b, v_b, s_b) in zip(mine, mine[1:]):
            if n_b - n_a < 2:
                continue
            gain = abs(v_b - v_a) / span_v * max(s_b - s_a, 0.0) / span_s
            c = self._config(tag, (n_a + n_b + 1) // 2, ctx)
            if gain > best_gain and land.fresh(c) and land.host(c) != "no":
                p = land.p_fit(c)
                if p is None or p >= SAFE:
                    best, best_gain = c, gain
        return best

    def _context_probe(self, land: Landscape, tops: dict[str, int]) -> Config | None:
        """The largest context that stays fully on the GPU, for the fastest tag that fits whole."""
        full = [t for t in self._tags_by_weight() if tops.get(t, -1) >= self.space.max_layers]
        if not full:
            return None
        tag, top, ladder = full[0], self.space.max_layers, list(self.space.ctx_ladder)
        rows = [r for r in land.done if r.tag == tag and r.num_gpu == top and r.num_ctx in ladder]
        on = [ladder.index(r.num_ctx) for r in rows if loaded(r) and on_gpu(r)]
        off = [ladder.index(r.num_ctx) for r in rows if not (loaded(r) and on_gpu(r))]
        lo = max(on, default=-1)
        hi = min((i for i in off if i > lo), default=len(ladder))
        cands = [self._config(tag, top, ladder[i]) for i in range(hi - 1, lo, -1)]
        cands = [c for c in cands if land.fresh(c) and land.host(c) != "no"]
        if not cands:
            return None
        p = {c.num_ctx: land.p_fit(c) for c in cands}
        if any(v is None for v in p.values()):
            mid = len(ladder) - 1 if hi == len(ladder) else (lo + hi) // 2
            return min(cands, key=lambda c: abs(ladder.index(c.num_ctx) - mid))
        safe = [c for c in cands if (p[c.num_ctx] or 0) >= SAFE]
        if safe:
            return safe[0]
        if self._probe_allowed(land, tag, cands[0].num_ctx):
            likely = [c for c in cands if (p[c.num_ctx] or 0) >= 0.5]
            return likely[0] if likely else None
        return None

    # -- after the plan: TPE, held to what a user would deploy ---------------------------------------
    def _allowed(self, land: Landscape, c: Config, strict: bool = True, p_min: float = SAFE) -> bool:
        """New, predicted deployable (when `strict`), at least `p_min` likely to fit, not ruled out by host
        memory (cheapest test first); never a tag over the quality limit while another tag is within it."""
        if not land.fresh(c) or (self.gpu_only and c.num_gpu < self.space.max_layers):
            return False
        if self.group is not None and c.server_key != self.group:
            return False
        if c.tag in self.excluded and len(self.excluded) < len(self.space.tags):
            return False
        if strict and not land.deployable(c):
            return False
        p = land.p_fit(c)
        return (p is None or p >= p_min) and land.host(c) != "no"

    def _fallback(self, study: optuna.Study, trial: FrozenTrial, land: Landscape) -> Config | None:
        space = self.infer_relative_search_space(study, trial)
        for _ in range(FALLBACK_DRAWS):
            params = self.fallback.sample_relative(study, trial, space)
            if not {"tag", "num_gpu", "log2_ctx"} <= set(params):
                break  # TPE's random start-up: it would sample each parameter on its own, unscreened
            c = self.space.config(params)
            if self._allowed(land, c):
                return c
        return self._deployable_draw(land)

    def _deployable_draw(self, land: Landscape) -> Config | None:
        """A seeded draw among the new configs a user would deploy that are SAFE to fit; else, while the
        failed-load budget lasts, the deployable config likeliest to fit of those it could test."""
        safe = next(self._candidates(land, strict=True), None)
        if safe is not None or len(land.failed_loads()) >= max_failed_loads(self.budget):
            return safe
        uncertain = [
            c for c in self._candidates(land, strict=True, p_min=PROBE_MIN) if (land.p_fit(c) or 1.0) < SAFE
        ]
        return max(uncertain, key=lambda c: land.p_fit(c) or 0.0, default=None)

    def _candidates(self, land: Landscape, strict: bool, p_min: float = SAFE) -> Iterator[Config]:
        """Allowed new configs in a seeded random order (with `strict`, only where a user would deploy: every
        config of a tag that reaches half the best speed, every-layer configs of the others)."""
        configs = list(self.space.all_configs())
        if self.group is not None:
            configs = [c for c in configs if c.server_key == self.group]
        if strict and land.best:
            tops = {t: self.space.max_layers for t in self.space.tags}
            keep = set(self._deployable_tags(land, tops))
            configs = [c for c in configs if c.tag in keep or c.num_gpu == self.space.max_layers]
        order = random.Random(self._rng.random()).sample(configs, len(configs))
        return (c for c in order if self._allowed(land, c, strict, p_min))


def _first_at_least(land: Landscape, cands: Sequence[Config], p_min: float) -> Config | None:
    """The first of `cands` (ordered from most to least memory) whose P(fit) is at least `p_min`, by bisection:
    P(fit) only grows down the list."""

    def ok(i: int) -> bool:
        return (land.p_fit(cands[i]) or 0.0) >= p_min

    lo, hi = 0, len(cands) - 1
    if not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return cands[lo]


def _history(
    study: optuna.Study, trial: FrozenTrial | None, space: Space
) -> tuple[list[TrialRecord], set[Key]]:
    """The finished trials' records, and the params of the running and queued ones (never proposed again)."""
    records: list[TrialRecord] = []
    taken: set[Key] = set()
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=states):
        if trial is not None and t.number == trial.number:
            continue
        if t.state == TrialState.COMPLETE:
            records.append(record_of(t))
            continue
        params = dict(t.params) or dict(t.system_attrs.get("fixed_params") or {})
        if {"tag", "num_gpu", "log2_ctx"} <= set(params) and int(params["num_gpu"]) != AUTO:
            taken.add(tuple(sorted(space.params(space.config(params)).items())))
    return records, taken
