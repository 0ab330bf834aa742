"""The speed/memory Pareto front, defined once. Pure.

The report's picks, our search (tuner.search) and the search benchmark's scoring (tuner.bench) all ask the
same question: which configs does no other config beat? A config is on the front when no other one is at
least as fast with at most as much memory and strictly better on one of the two. Configs equal on both are
all kept: a tie is not dominance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def pareto_front(items: Iterable[T], *, speed: Callable[[T], float], memory: Callable[[T], float]) -> list[T]:
    """The items on the front (maximize `speed`, minimize `memory`), by memory ascending then speed
    descending; exact ties keep their input order. One sort and one sweep: O(n log n)."""
    ordered = sorted(items, key=lambda item: (memory(item), -speed(item)))
    front: list[T] = []
    best = float("-inf")
    for item in ordered:
        s = speed(item)
        if s > best:
            front.append(item)
            best = s
        elif front and s == speed(front[-1]) and memory(item) == memory(front[-1]):
            front.append(item)  # equal on both axes to a front item: not dominated either
    return front
