"""The memory margin as a belief, not a ratchet. Pure (numpy only).

The estimator knows a config's weights and KV cache per GPU exactly; its compute buffers and CUDA context
are a guess. What a GPU really holds is modelled as

    weights + KV + c x compute + context + d        (+ noise)

with two unknowns shared by the study's configs: `c`, a factor on the compute buffers, and `d`, bytes more
(or less) than the estimator's CUDA context per GPU. The belief is a grid of (c, d) with a prior (c around 1,
d around +128 MiB, wide enough for the real H100's 0.75 and +384 MiB and for twice the simulator's default
error) and weights updated by the study's own trials, both ways:

* a load that was measured: each GPU's peak pins c x compute + d (a Student-t likelihood, so one odd reading
  does not dominate); two loads with different compute buffers separate c from d;
* a load that failed for lack of GPU memory: at least one GPU needed more than it had (a soft step).

P(fit) of a config is the belief's weight on (c, d) under which every GPU it uses fits (and, with
--vram-limit, its total stays under the limit), with the noise of one reading. The margin a report shows is
the factor on compute + context that the belief's 95th percentile implies for that config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuner.units import MiB

C_GRID = np.geomspace(0.4, 2.6, 48)  # compute factor
D_GRID = np.arange(-320, 1600, 40) * MiB  # context offset, bytes
PRIOR_C, PRIOR_C_LOG_SD = 1.05, 0.30
PRIOR_D, PRIOR_D_SD = 128 * MiB, 320 * MiB
NOISE_BYTES = 48 * MiB  # one reading: the probe's peak, and what the model's form misses
NOISE_SHARE = 0.04  # ... plus this share of the guessed part
T_DOF = 4.0  # Student-t degrees of freedom for measured loads


@dataclass(frozen=True)
class GpuGuess:
    """One GPU of one config: what the estimator predicts, split into the exact and the guessed part."""

    fixed: int  # weights + KV cache, exact
    compute: int  # the estimator's compute buffers
    context: int  # the estimator's CUDA context
    free: int = 0  # free memory on that GPU


def _noise(g: GpuGuess) -> float:
    return float(NOISE_BYTES + NOISE_SHARE * (g.compute + g.context))


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / np.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz-Stegun 7.1.26 (error below 1.5e-7): numpy has no erf and scipy is not a dependency."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


class MarginBelief:
    """A posterior over (compute factor c, context offset d) on a fixed grid."""

    def __init__(self) -> None:
        self.c, self.d = np.meshgrid(C_GRID, D_GRID, indexing="ij")
        log_prior = -0.5 * (
            (np.log(self.c / PRIOR_C) / PRIOR_C_LOG_SD) ** 2 + ((self.d - PRIOR_D) / PRIOR_D_SD) ** 2
        )
        self._log = log_prior - log_prior.max()
        self._weights: np.ndarray | None = None
        self.loads = 0
        self.failures = 0

    @property
    def weights(self) -> np.ndarray:
        if self._weights is None:
            w = np.exp(self._log - self._log.max())
            self._weights = w / w.sum()
        return self._weights

    def _need(self, g: GpuGuess) -> np.ndarray:
        """What the GPU holds under each (c, d), bytes."""
        return g.fixed + self.c * g.compute + g.context + self.d

    def observe_load(self, gpus: Sequence[GpuGuess], measured: Sequence[int]) -> None:
        """A load whose peak per GPU was measured."""
        for g, m in zip(gpus, measured):
            if g.fixed + g.compute + g.context <= 0:
                continue  # a GPU the config did not use
            z = (m - self._need(g)) / _noise(g)
            self._log = self._log - 0.5 * (T_DOF + 1) * np.log1p(z * z / T_DOF)
        self._weights = None
        self.loads += 1

    def observe_failure(self, gpus: Sequence[GpuGuess]) -> None:
        """A load that failed for lack of GPU memory: some GPU needed more than its free memory."""
        fits = self._fit_probability(gpus)
        self._log = self._log + np.log(np.clip(1.0 - fits, 1e-9, 1.0))
        self._weights = None
        self.failures += 1

    def _fit_probability(self, gpus: Sequence[GpuGuess], limit: int | None = None) -> np.ndarray:
        p = np.ones_like(self.c)
        total = np.zeros_like(self.c)
        spread = 0.0
        for g in gpus:
            if g.fixed + g.compute + g.context <= 0:
                continue
            need = self._need(g)
            p = p * _norm_cdf((g.free - need) / _noise(g))
            total = total + need
            spread += _noise(g) ** 2
        if limit is not None:
            p = p * _norm_cdf((limit - total) / max(np.sqrt(spread), 1.0))
        return p

    def p_fit(self, gpus: Sequence[GpuGuess], limit: int | None = None) -> float:
        """The probability that every GPU the config uses fits (and the total stays under `limit`)."""
        return float((self.weights * self._fit_probability(gpus, limit)).sum())

    def margin(self, gpus: Sequence[GpuGuess], q: float = 0.95) -> float:
        """The factor on compute + context at the belief's q-quantile, on the GPU that guesses the most."""
        used = [g for g in gpus if g.compute + g.context > 0]
        if not used:
            return 1.0
        g = max(used, key=lambda g: g.compute + g.context)
        guessed = (self.c * g.compute + g.context + self.d).ravel()
        order = np.argsort(guessed)
        cum = np.cumsum(self.weights.ravel()[order])
        value = guessed[order][min(int(np.searchsorted(cum, q)), len(cum) - 1)]
        return float(value / (g.compute + g.context))

    def mean(self) -> tuple[float, float]:
        """The belief's mean (c, d in bytes)."""
        w = self.weights
        return float((w * self.c).sum()), float((w * self.d).sum())
