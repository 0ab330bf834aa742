"""The one Pareto front (tuner.pareto): what it keeps, in which order, and that it agrees with the definition."""

from __future__ import annotations

import random

from tuner.pareto import pareto_front


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return pareto_front(points, speed=lambda p: p[0], memory=lambda p: p[1])


def dominated(p: tuple[float, float], points: list[tuple[float, float]]) -> bool:
    return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)


def test_keeps_the_non_dominated_points_by_memory_then_speed() -> None:
    points = [(20.0, 4.0), (10.0, 2.0), (5.0, 3.0), (10.0, 2.5), (25.0, 9.0), (25.0, 8.0)]
    assert front(points) == [(10.0, 2.0), (20.0, 4.0), (25.0, 8.0)]
    assert front([]) == []


def test_ties_on_both_axes_are_all_kept_in_input_order() -> None:
    a, b = ("a", 10.0, 2.0), ("b", 10.0, 2.0)
    items = [a, ("c", 5.0, 2.0), b, ("d", 10.0, 3.0)]
    assert pareto_front(items, speed=lambda i: i[1], memory=lambda i: i[2]) == [a, b]


def test_agrees_with_the_definition_on_random_point_sets() -> None:
    rng = random.Random(7)
    for _ in range(300):
        points = [(float(rng.randint(0, 8)), float(rng.randint(0, 8))) for _ in range(rng.randint(1, 25))]
        expected = sorted((p for p in points if not dominated(p, points)), key=lambda p: (p[1], -p[0]))
        assert front(points) == expected
