"""With `--serve`, trials run one server environment at a time, so the server restarts once per group. Pure.

A server environment (Config.server_key) is the flash attention, KV cache type, OLLAMA_NUM_PARALLEL and GPU
subset a trial needs; any change restarts `ollama serve`. The search (tuner.search) therefore works through
the groups in turn: `plan` orders them (the one nearest the server's defaults first, then those that change
one knob, then two...; among those, the KV type, the slots, the GPUs, then flash attention, in turn) and
gives each a share of the budget (the baseline trial, in the defaults, is not part of any); `current` says, from the stored trials alone,
which group the next trial belongs to: the first whose share is not used up and whose search still has a
config to try (a group that runs out passes its unused share on). Resume, several workers and a re-run all
derive the same group from storage, so a study never goes back to an environment it finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tuner.schema import TrialRecord

ServerKey = tuple[str | None, str | None, int | None, str | None]  # flash_attn, kv_cache_type, parallel, gpus
MIN_PER_GROUP = 2  # trials a group needs at least (a load at the edge and one more): fewer groups if short


def key_of(r: TrialRecord) -> ServerKey:
    return (r.flash_attn, r.kv_cache_type, r.num_parallel, r.gpus)


def distance(p: ServerKey, home: ServerKey) -> int:
    """How many knobs differ from `home`."""
    return sum(1 for a, b in zip(p, home) if a != b)


@dataclass(frozen=True)
class GroupPlan:
    points: tuple[ServerKey, ...]  # the groups visited, in order
    quotas: tuple[int, ...]  # trials each may take (before passing on what it leaves)
    left_out: tuple[ServerKey, ...]  # groups the budget is too small for


def plan(points: Sequence[ServerKey], home: ServerKey, budget: int) -> GroupPlan:
    """Order the groups by distance from `home` (the server's defaults: flash attention on, f16 cache, the
    fewest slots, every GPU), keep as many as the budget gives MIN_PER_GROUP trials, split the budget."""
    ordered = sorted(
        points,
        key=lambda p: (distance(p, home), _turn(p, points, home), _priority(p, home), points.index(p)),
    )
    visit = max(1, min(len(ordered), budget // MIN_PER_GROUP))
    kept, left = ordered[:visit], ordered[visit:]
    share, extra = divmod(max(budget, visit), visit)
    quotas = tuple(share + (1 if i < extra else 0) for i in range(visit))
    return GroupPlan(tuple(kept), quotas, tuple(left))


def current(
    gp: GroupPlan,
    used: Iterable[ServerKey],
    has_more: Callable[[ServerKey], bool],
    last: ServerKey | None = None,
) -> ServerKey | None:
    """The group the next trial belongs to; None when no group has anything left (the search may then go
    anywhere).

    `used`: the server key of every trial stored or running (the baseline's default environment counts for
    no group); `has_more(p)`: whether the search still has a config to try in group p. When every share is
    used (a resumed study with a larger budget, a short one rounding), the running environment `last` goes
    on while it has more, then the groups in order: no restart that the budget does not pay for."""
    counts = Counter(used)
    spare = 0
    for p, quota in zip(gp.points, gp.quotas):
        allowed = quota + spare
        if counts[p] < allowed and has_more(p):
            return p
        spare = max(0, allowed - counts[p])
    if last is not None and last in gp.points and has_more(last):
        return last
    return next((p for p in gp.points if has_more(p)), None)


def _turn(p: ServerKey, points: Sequence[ServerKey], home: ServerKey) -> int:
    """Among groups as far from home, take each set of changed knobs in turn (fa off, q8_0, 2 slots, then
    q4_0, 4 slots...): a short budget sees every knob move before any one knob's whole range."""
    changed = tuple(i for i, (a, b) in enumerate(zip(p, home)) if a != b)
    same = [q for q in points if tuple(i for i, (a, b) in enumerate(zip(q, home)) if a != b) == changed]
    return same.index(p)


KNOB_PRIORITY = (3, 0, 1, 2)  # by ServerKey position: the KV type first, then slots, GPUs, flash attention


def _priority(p: ServerKey, home: ServerKey) -> int:
    """Which changed knob comes first at the same distance and turn: the KV cache type and the slots are what
    users ask about most; flash attention is on by default where it is supported."""
    return min((KNOB_PRIORITY[i] for i, (a, b) in enumerate(zip(p, home)) if a != b), default=0)


def restarts(keys: Sequence[ServerKey]) -> int:
    """Server starts a sequence of trials needs after the first: one per change of environment."""
    return sum(1 for a, b in zip(keys, keys[1:]) if a != b)
