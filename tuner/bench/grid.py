"""The `grid` strategy: a llama-bench-style sweep as an Optuna sampler.

The order is what a person scripting llama-bench would run: for each tag, for each context ascending,
num_gpu descending from every layer (max_layers) to 0. Each trial gets the first config of that order
that no earlier trial of the study has tried; past the end of the grid it starts over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from tuner.space import Space

Params = dict[str, Any]


def grid_order(space: Space) -> list[Params]:
    """The sweep order as Optuna params (tag, num_gpu, log2_ctx)."""
    return [
        {"tag": tag, "num_gpu": n, "log2_ctx": int(math.log2(ctx))}
        for tag in space.tags
        for ctx in space.ctx_ladder
        for n in range(space.max_layers, -1, -1)
    ]


def _key(params: Params) -> tuple[Any, ...]:
    return (params.get("tag"), params.get("num_gpu"), params.get("log2_ctx"))


class GridOrderSampler(optuna.samplers.BaseSampler):
    """Returns the next unvisited config of `grid_order(space)`; other params are sampled at random."""

    def __init__(self, space: Space, seed: int | None = None) -> None:
        self._order = grid_order(space)
        self._planned: dict[int, Params] = {}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def _plan(self, study: optuna.Study, trial: FrozenTrial) -> Params:
        if trial.number not in self._planned:
            visited = {_key(t.params) for t in study.get_trials(deepcopy=False) if t.number != trial.number}
            fresh = [p for p in self._order if _key(p) not in visited]
            self._planned[trial.number] = fresh[0] if fresh else self._order[trial.number % len(self._order)]
        return self._planned[trial.number]

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        plan = self._plan(study, trial)
        if param_name in plan:
            return plan[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._planned.pop(trial.number, None)
