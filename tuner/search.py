"""Our search (`--sampler auto`): an Optuna sampler that uses what is known about the landscape.

* Whether a config fits is monotone in num_gpu and num_ctx, and the estimator predicts the edge: per tag,
  the first load is the largest num_gpu predicted to fit at the smallest context (with the margin the study
  has learned, tuner.fitcheck); a failure moves the edge down (bisection where nothing is predicted).
* Speed rises with num_gpu and memory rises with num_gpu and num_ctx, so the speed/VRAM front lies at the
  smallest context: after the edges, one CPU-only anchor, then the gap between neighbouring measured points
  whose rectangle (VRAM gap x speed gap) is largest is split in two, until no gap is worth a trial.
* For the picks, one probe of the largest context predicted to stay fully on the GPU for the fastest tag.
* Then multivariate TPE for whatever budget is left (and for --tune-flash-attn / --tune-kv-cache).

Everything is derived from the study's stored trials (COMPLETE, plus RUNNING ones so parallel workers do
not duplicate), so storage, resume, the dashboard and several workers on one study keep working. Configs
predicted not to fit are never proposed; configs already measured are never proposed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.backend.base import AUTO
from tuner.fitcheck import FitCheck
from tuner.pareto import pareto_front
from tuner.records import record_of
from tuner.schema import TrialRecord, fully_on_gpu
from tuner.space import Config, Space

MIN_GAIN = 0.002  # stop splitting gaps whose rectangle is below this share of the front's bounding box
FALLBACK_DRAWS = 20  # TPE proposals tried for one that is new and predicted to fit


class StructuredSampler(optuna.samplers.BaseSampler):
    def __init__(
        self,
        space: Space,
        fitcheck: FitCheck | None,
        *,
        seed: int = 0,
        vram_limit_bytes: int | None = None,
        gpu_only: bool = False,
        excluded_tags: frozenset[str] = frozenset(),
    ) -> None:
        self.space = space
        self.excluded = excluded_tags  # tags over --max-quality-loss: never deployable, not searched
        self.fitcheck = fitcheck if fitcheck is not None and fitcheck.active else None
        self.vram_limit = vram_limit_bytes
        self.gpu_only = gpu_only
        self.fallback = optuna.samplers.TPESampler(multivariate=True, n_startup_trials=5, seed=seed)
        self._plan: dict[int, Config] = {}

    # -- Optuna's sampler interface -----------------------------------------------------------------
    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        low, high = self.space.log2_range
        return {
            "tag": CategoricalDistribution(list(self.space.tags)),
            "num_gpu": IntDistribution(0, self.space.max_layers),
            "log2_ctx": IntDistribution(low, high),
        }

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued trial (the baseline, a re-queued one)
            return {}
        records, running = _history(study, trial)
        config = self.next_config(records, running)
        if config is None:  # structure exhausted: multivariate TPE, skipping what is measured or cannot fit
            return self._fallback(study, trial, records, running)
        self._plan[trial.number] = config
        params = self.space.params(config)
        return {k: params[k] for k in ("tag", "num_gpu", "log2_ctx")}

    def _fallback(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        records: Sequence[TrialRecord],
        running: set[tuple[str, int, int]],
    ) -> dict[str, Any]:
        space = self.fallback.infer_relative_search_space(study, trial)
        seen = {(r.tag, r.num_gpu, r.num_ctx) for r in records} | running
        margin = self.fitcheck.margin(records) if self.fitcheck else 1.0
        params: dict[str, Any] = {}
        for _ in range(FALLBACK_DRAWS):
            params = self.fallback.sample_relative(study, trial, space)
            if not {"tag", "num_gpu", "log2_ctx"} <= set(params):
                return params  # TPE still in its random start-up: it samples each parameter on its own
            c = Config(str(params["tag"]), int(params["num_gpu"]), 2 ** int(params["log2_ctx"]))
            if (c.tag, c.num_gpu, c.num_ctx) not in seen and self._allowed(c, margin):
                return params
        return params

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if param_name == "kv_cache_type" and trial.number in self._plan:
            return "f16"  # the structured phase measures the default cache; TPE explores the rest later
        if param_name == "flash_attn" and trial.number in self._plan:
            return "on"
        return self.fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.fallback.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._plan.pop(trial.number, None)
        self.fallback.after_trial(study, trial, state, values)

    # -- the plan -------------------------------------------------------------------------------------
    def next_config(
        self, records: Sequence[TrialRecord], running: set[tuple[str, int, int]]
    ) -> Config | None:
        """The next structured config, or None to let TPE choose."""
        done = [r for r in records if r.state == "COMPLETE" and r.num_gpu != AUTO]
        seen = {(r.tag, r.num_gpu, r.num_ctx) for r in done} | running
        ctx0 = self.space.ctx_ladder[0]
        tags = self._tags_by_weight()
        margin = self.fitcheck.margin(records) if self.fitcheck else 1.0

        def fresh(c: Config | None) -> Config | None:
            return c if c is not None and (c.tag, c.num_gpu, c.num_ctx) not in seen else None

        tops: dict[str, int] = {}
        for tag in tags:  # 1. the largest num_gpu that loads at the smallest context, per tag
            top, proposal = self._edge(tag, ctx0, done, margin)
            if fresh(proposal):
                return proposal
            if top is not None:
                tops[tag] = top
        if not tops:
            return None
        if not self.gpu_only:  # 2. the CPU-only anchor of the lightest tag
            anchor = fresh(Config(tags[0], 0, ctx0))
            if anchor and self._allowed(anchor, margin):
                return anchor
        probe = fresh(self._context_probe(tops, done, margin))  # 3. the largest context fully on GPU
        if probe:
            return probe
        if not self.gpu_only:  # 4. split the most valuable gap on the front
            gap = fresh(self._widest_gap(tops, done, ctx0, seen))
            if gap:
                return gap
        return None

    def _tags_by_weight(self) -> list[str]:
        tags = [t for t in self.space.tags if t not in self.excluded] or list(self.space.tags)
        if self.fitcheck is None:
            return tags
        weight = {t: (s.weights_bytes if s else 0) for t, s in self.fitcheck.specs.items()}
        return sorted(tags, key=lambda t: (weight.get(t, 0), self.space.tags.index(t)))

    def _allowed(self, c: Config, margin: float) -> bool:
        """Not a tag over the quality limit, predicted to fit (with the margin), and under --vram-limit;
        True when nothing is predicted."""
        if c.tag in self.excluded and len(self.excluded) < len(self.space.tags):
            return False
        if self.fitcheck is None:
            return True
        p = self.fitcheck.predict(c)
        if p is None:
            return True
        if not p.fits(self.fitcheck.free, margin):
            return False
        return self.vram_limit is None or sum(p.need_bytes(margin)) <= self.vram_limit

    def _predicted_top(self, tag: str, ctx: int, margin: float) -> int | None:
        if self.fitcheck is None or self.fitcheck.specs.get(tag) is None:
            return None
        lo, hi = 0, self.space.max_layers
        if self._allowed(Config(tag, hi, ctx), margin):
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._allowed(Config(tag, mid, ctx), margin) else (lo, mid)
        return lo

    def _edge(
        self, tag: str, ctx: int, done: Sequence[TrialRecord], margin: float
    ) -> tuple[int | None, Config | None]:
        """(the established top, or None) and the next config to establish it."""
        mine = [r for r in done if r.tag == tag and r.num_ctx == ctx]
        ok = [r.num_gpu for r in mine if _loaded(r)]
        low = max(ok, default=-1)
        upper = min(
            (r.num_gpu for r in mine if not _loaded(r) and r.num_gpu > low), default=self.space.max_layers + 1
        )
        predicted = self._predicted_top(tag, ctx, margin)
        hi = min(upper - 1, self.space.max_layers if predicted is None else predicted)
        if low >= hi:
            return low, None
        if predicted is None and upper <= self.space.max_layers:
            return None, Config(tag, (max(low, 0) + upper) // 2, ctx)  # bisection without a prediction
        return None, Config(tag, hi, ctx)

    def _context_probe(
        self, tops: dict[str, int], done: Sequence[TrialRecord], margin: float
    ) -> Config | None:
        """Bisect the context ladder for the largest context that stays fully on the GPU (first full tag);
        with a prediction, try the largest context predicted to fit first."""
        full = [t for t, n in tops.items() if n >= self.space.max_layers]
        if not full:
            return None
        tag, top, ladder = full[0], self.space.max_layers, list(self.space.ctx_ladder)
        rows = [r for r in done if r.tag == tag and r.num_gpu == top and r.num_ctx in ladder]
        on = [ladder.index(r.num_ctx) for r in rows if _loaded(r) and _on_gpu(r)]
        off = [ladder.index(r.num_ctx) for r in rows if not (_loaded(r) and _on_gpu(r))]
        lo = max(on, default=-1)
        hi = min((i for i in off if i > lo), default=len(ladder))
        if hi - lo <= 1:
            return None
        if self.fitcheck is not None:
            allowed = [i for i in range(lo + 1, hi) if self._allowed(Config(tag, top, ladder[i]), margin)]
            return Config(tag, top, ladder[max(allowed)]) if allowed else None
        mid = len(ladder) - 1 if hi == len(ladder) else (lo + hi) // 2
        return Config(tag, top, ladder[mid])

    def _widest_gap(
        self, tops: dict[str, int], done: Sequence[TrialRecord], ctx: int, seen: set[tuple[str, int, int]]
    ) -> Config | None:
        points = []
        for tag in tops:
            for r in done:
                if r.tag == tag and r.num_ctx == ctx and _loaded(r) and r.decode_tok_s:
                    points.append((tag, r.num_gpu, _vram(r), r.decode_tok_s))
        if len(points) < 2:
            return None
        front = pareto_front(points, speed=lambda p: p[3], memory=lambda p: p[2])
        span_v = max(p[2] for p in points) - min(p[2] for p in points) or 1.0
        span_s = max(p[3] for p in points) - min(p[3] for p in points) or 1.0
        best, best_gain = None, MIN_GAIN
        for tag in {p[0] for p in front}:
            mine = sorted({(p[1], p[2], p[3]) for p in points if p[0] == tag})
            for (n_a, v_a, s_a), (n_b, v_b, s_b) in zip(mine, mine[1:]):
                if n_b - n_a < 2:
                    continue
                gain = abs(v_b - v_a) / span_v * max(s_b - s_a, 0.0) / span_s
                mid = (n_a + n_b + 1) // 2
                if gain > best_gain and (tag, mid, ctx) not in seen:
                    best, best_gain = Config(tag, mid, ctx), gain
        return best


def _history(study: optuna.Study, trial: FrozenTrial) -> tuple[list[TrialRecord], set[tuple[str, int, int]]]:
    records, running = [], set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number == trial.number:
            continue
        if t.state == TrialState.COMPLETE:
            records.append(record_of(t))
        elif {"tag", "num_gpu", "log2_ctx"} <= set(t.params):
            running.add((str(t.params["tag"]), int(t.params["num_gpu"]), 2 ** int(t.params["log2_ctx"])))
    return records, running


def _loaded(r: TrialRecord) -> bool:
    return r.state == "COMPLETE" and not r.oom and not r.predicted_skip and r.decode_tok_s is not None


def _on_gpu(r: TrialRecord) -> bool:
    """Entirely in GPU memory (on a machine without a GPU, size_vram is 0: loaded is enough)."""
    return fully_on_gpu(r.gpu_fraction) or not r.size_vram_bytes


def _vram(r: TrialRecord) -> float:
    return float(r.peak_vram_bytes if r.peak_vram_bytes is not None else (r.size_vram_bytes or 0))
