"""What a study's trials say about its landscape, for the search (tuner.search). Pure.

* which configs are taken (finished, running or queued: never proposed again), by the full config
  (tag, num_gpu, num_ctx, and flash attention / KV cache type where those are tuned);
* how likely a config is to fit the GPUs (tuner.fitcheck's learned belief) and the host's memory (learned
  from host-memory failures: a config needing at least what one that failed needed fails too; one needing no
  more than what one that loaded needed loads);
* how fast a placement will decode: per tag, seconds per token grow linearly with the bytes a token reads
  from layers left on the CPU (t = a + b x cpu_bytes), fitted to the tag's measured loads, with b shared by
  the tags (it is the host's memory bandwidth) and a prior of 40 GB/s effective before two loads differ;
* what a user would deploy (tuner.schema.deployable), against the fastest feasible config measured so far.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tuner.backend.base import AUTO
from tuner.estimate.llamacpp import CPU
from tuner.fitcheck import FitCheck, host_failure
from tuner.schema import DEPLOYABLE_FRACTION, TrialRecord, fully_on_gpu
from tuner.space import Config, Space

Key = tuple[object, ...]
PRIOR_HOST_BYTES_PER_S = 40e9  # effective host memory bandwidth before two loads of a tag tell it


def loaded(r: TrialRecord) -> bool:
    return r.state == "COMPLETE" and not r.oom and not r.predicted_skip and r.decode_tok_s is not None


def on_gpu(r: TrialRecord) -> bool:
    """Entirely in GPU memory (on a machine without a GPU, size_vram is 0: loaded is enough)."""
    return fully_on_gpu(r.gpu_fraction) or not r.size_vram_bytes


def vram(r: TrialRecord) -> float:
    return float(r.peak_vram_bytes if r.peak_vram_bytes is not None else (r.size_vram_bytes or 0))


@dataclass
class Landscape:
    space: Space
    fitcheck: FitCheck | None
    records: Sequence[TrialRecord]  # finished trials
    taken: set[Key] = field(default_factory=set)  # params of running and queued trials (tuner.search keys)
    vram_limit: int | None = None
    gpu_only: bool = False

    def __post_init__(self) -> None:
        self.done = [r for r in self.records if r.state == "COMPLETE"]
        self.seen = set(self.taken) | {self.key(self.config_of(r)) for r in self.done if r.num_gpu != AUTO}
        self._p: dict[Key, float | None] = {}
        self._speed_fit: dict[str, tuple[float, float]] | None = None
        self._host: tuple[int | None, int | None] | None = None
        self._known: set[str] = set()
        feasible = [r.decode_tok_s for r in self.done if r.feasible and r.decode_tok_s]
        self.best = max(feasible, default=0.0)

    # -- identity ----------------------------------------------------------------------------------
    def config_of(self, r: TrialRecord) -> Config:
        return Config(
            r.tag,
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

    def key(self, c: Config) -> Key:
        """What makes two trials the same config: the params the space gives it."""
        return tuple(sorted(self.space.params(c).items()))

    def fresh(self, c: Config | None) -> bool:
        return c is not None and self.key(c) not in self.seen

    # -- memory ------------------------------------------------------------------------------------
    def p_fit(self, c: Config) -> float | None:
        """P(it loads and stays under --vram-limit), from the learned belief; None without a prediction."""
        k = self.key(c)
        if k not in self._p:
            self._p[k] = None if self.fitcheck is None else self.fitcheck.p_fit(c, self.done, self.vram_limit)
        return self._p[k]

    def host(self, c: Config) -> str:
        """'no' (needs at least what a host failure needed), 'yes' (no more than a load needed), or 'maybe'."""
        need = self.fitcheck.host_need(c) if self.fitcheck is not None else None
        if need is None:
            return "maybe"
        ok, failed = self._host_bounds()
        if failed is not None and need >= failed:
            return "no"
        if failed is None or (ok is not None and need <= ok):
            return "yes"
        return "maybe"

    def _host_bounds(self) -> tuple[int | None, int | None]:
        """(the most host memory a load needed, the least a host failure needed)."""
        if self._host is None:
            ok: list[int] = []
            failed: list[int] = []
            for r in self.done:
                need = (
                    self.fitcheck.host_need(self.config_of(r))
                    if self.fitcheck and r.num_gpu != AUTO
                    else None
                )
                if need is None:
                    continue
                if loaded(r):
                    ok.append(need)
                elif r.oom and host_failure(r.error):
                    failed.append(need)
            self._host = (max(ok, default=None), min(failed, default=None))
        return self._host

    def failed_loads(self) -> list[TrialRecord]:
        """Trials whose load failed for lack of memory (GPU or host), not the ones predicted not to fit."""
        return [r for r in self.done if r.oom and not r.predicted_skip and r.num_gpu != AUTO]

    # -- the edge of a tag at a context ------------------------------------------------------------------
    def bracket(self, tag: str, ctx: int) -> tuple[int, int, int]:
        """(the most layers that loaded, the fewest that failed above it for any reason but host memory, the
        most that failed on the host) at (tag, ctx); -1 / max_layers + 1 / -1 where unknown."""
        mine = [r for r in self.done if r.tag == tag and r.num_ctx == ctx and r.num_gpu != AUTO]
        top = max((r.num_gpu for r in mine if loaded(r)), default=-1)
        gpu = min(
            (
                r.num_gpu
                for r in mine
                if r.oom and not r.predicted_skip and not host_failure(r.error) and r.num_gpu > top
            ),
            default=self.space.max_layers + 1,
        )
        host = max((r.num_gpu for r in mine if r.oom and host_failure(r.error)), default=-1)
        return top, gpu, host

    # -- speed -----------------------------------------------------------------------------------------
    def cpu_bytes(self, c: Config) -> float | None:
        """Bytes of weights a token reads from layers left on the CPU, for `c` as the estimator places it."""
        if self.fitcheck is None:
            return None
        p, spec = self.fitcheck.predict(c), self.fitcheck.specs.get(c.tag)
        if p is None or spec is None:
            return None
        devices = p.allocation.devices
        total = sum(b for b, d in zip(spec.layer_bytes, devices) if d == CPU)
        if devices and devices[-1] == CPU:
            total += spec.output_bytes
        return float(total)

    def _fits(self) -> dict[str, tuple[float, float]]:
        """Per tag (a, b) of seconds per token = a + b x cpu_bytes."""
        if self._speed_fit is not None:
            return self._speed_fit
        points: dict[str, list[tuple[float, float]]] = {}
        for r in self.done:
            if loaded(r) and r.num_gpu != AUTO and r.decode_tok_s:
                x = self.cpu_bytes(self.config_of(r))
                if x is not None:
                    points.setdefault(r.tag, []).append((x, 1.0 / r.decode_tok_s))
        spread = self._spread()
        slopes = [_slope(pts) for tag, pts in points.items() if _spans(pts, spread.get(tag, 0.0))]
        b = sorted(slopes)[len(slopes) // 2] if slopes else 1.0 / PRIOR_HOST_BYTES_PER_S
        b = max(b, 1.0 / 2000e9)  # never faster than any host could read
        fits = {}
        for tag, pts in points.items():
            own = _slope(pts) if _spans(pts, spread.get(tag, 0.0)) else b
            own = max(own, 1.0 / 2000e9)
            a = min(t - own * x for x, t in pts)  # the fastest reading of the tag anchors it
            fits[tag] = (max(a, 1e-6), own)
        self._speed_fit = fits
        self._known = {tag for tag, pts in points.items() if _spans(pts, spread.get(tag, 0.0))}
        return fits

    def slope_known(self, tag: str) -> bool:
        """Whether the tag's loads span enough CPU bytes to tell how speed falls with layers on the CPU."""
        self._fits()
        return tag in self._known

    def _spread(self) -> dict[str, float]:
        """Per tag, the bytes of its repeating layers: a slope is fitted only across a real share of them."""
        if self.fitcheck is None:
            return {}
        return {t: float(sum(s.layer_bytes)) for t, s in self.fitcheck.specs.items() if s is not None}

    def speed(self, c: Config) -> float | None:
        """Predicted decode tok/s of `c` (None before a load of its tag)."""
        fit, x = self._fits().get(c.tag), self.cpu_bytes(c)
        if fit is None or x is None:
            return None
        a, b = fit
        return 1.0 / (a + b * x)

    def deployable(self, c: Config) -> bool:
        """Predicted fully on the GPU, or predicted at least DEPLOYABLE_FRACTION of the best (True when
        nothing can be predicted yet)."""
        if self.fitcheck is not None:
            p = self.fitcheck.predict(c)
            if p is not None and p.fully_on_gpu:
                return True
        s = self.speed(c)
        return s is None or not self.best or s >= DEPLOYABLE_FRACTION * self.best

    def measured_at(self, tag: str, ctx: int) -> list[TrialRecord]:
        return [r for r in self.done if r.tag == tag and r.num_ctx == ctx and loaded(r) and r.num_gpu != AUTO]


def _spans(points: Sequence[tuple[float, float]], layer_bytes: float) -> bool:
    """Loads whose CPU bytes differ by at least 15% of the model: one layer apart, noise would set the slope."""
    xs = [x for x, _ in points]
    return len(xs) >= 2 and max(xs) - min(xs) >= 0.15 * layer_bytes > 0


def _slope(points: Iterable[tuple[float, float]]) -> float:
    pts = list(points)
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var else 0.0
