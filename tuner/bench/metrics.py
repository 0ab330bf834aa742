"""Pure numbers for the benchmark: the 2-D Pareto front and its hypervolume. No simulator, no Optuna.

A point is (decode tok/s, peak VRAM GiB): decode is maximized, memory minimized, as in the study.
The hypervolume is the area a front dominates inside the box from the reference point
(0 tok/s, ref_vram_gib) to the ideal: points at or beyond the reference memory, or at 0 tok/s, add nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from tuner.pareto import pareto_front

Point2 = tuple[float, float]  # (decode tok/s, peak VRAM GiB)


def point_front(points: Iterable[Point2]) -> list[Point2]:
    """The non-dominated points (tuner.pareto: maximize decode, minimize memory), by memory, without repeats."""
    return pareto_front(set(points), speed=lambda p: p[0], memory=lambda p: p[1])


def hypervolume(points: Iterable[Point2], ref_vram_gib: float) -> float:
    """Area dominated by `points` within the reference box (see the module docstring)."""
    inside = [(d, v) for d, v in points if d > 0 and v < ref_vram_gib]
    front = point_front(inside)
    area = 0.0
    for i, (decode, vram) in enumerate(front):
        right = front[i + 1][1] if i + 1 < len(front) else ref_vram_gib
        area += decode * (right - vram)
    return area
