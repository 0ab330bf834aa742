"""Concurrent requests on one runner: OLLAMA_NUM_PARALLEL slots, the pending queue, batched decoding.

What Ollama does (server/sched.go and llm/llama_server.go, read at v0.12.10 and v0.32.15):
- a request for a runner that is loaded and needs no reload is handed that runner at once; it then waits
  for one of the runner's `numParallel` slots on a semaphore (`s.sem.Acquire`), with no limit on waiters;
- a request that needs the scheduler (the model is not loaded, or must reload) goes on `pendingReqCh`, a
  channel of OLLAMA_MAX_QUEUE (default 512) entries; when it is full the request fails at once with 503
  `server busy, please try again.  maximum pending requests exceeded` (ErrMaxQueue, two spaces).

The board keeps, per runner, when each busy slot frees (simulated seconds, the same clock as the API), and
when the runner's load finishes. It sleeps nothing: it says how long a request waits and how many streams
share the batch when it starts.

Batched decoding: streams that share a batch each decode more slowly than one alone, while the sum grows
sublinearly. The simulator's assumption (not a measurement) is aggregate = single x n ** BATCH_EXPONENT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_QUEUE_DEFAULT = 512  # envconfig.MaxQueue default, v0.12.10 and v0.32.15
QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
BATCH_EXPONENT = 0.7  # simulator assumption: aggregate decode speed grows as n ** 0.7 with n streams


class QueueFull(Exception):
    """More requests pending for the scheduler than OLLAMA_MAX_QUEUE."""


@dataclass(frozen=True)
class Admission:
    start_at: float  # when the request gets a slot (>= its arrival)
    sharing: int  # streams decoding together when it starts, itself included

    def slowdown(self) -> float:
        """How much slower each token is than with one stream alone."""
        n = max(1, self.sharing)
        return float(n / n**BATCH_EXPONENT)


@dataclass
class _Runner:
    ready_at: float = 0.0  # when its load finishes
    slots: int = 0  # this runner's slots (0: the server's OLLAMA_NUM_PARALLEL; 1 for forced one-slot models)
    busy_until: list[float] = field(default_factory=list)  # one entry per busy slot
    pending: list[float] = field(default_factory=list)  # arrival ... ready_at of requests waiting on a load


class SlotBoard:
    def __init__(self, num_parallel: int, max_queue: int = MAX_QUEUE_DEFAULT) -> None:
        if num_parallel < 1:
            raise ValueError(f"Invalid num_parallel {num_parallel!r}: at least 1.")
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self._runners: dict[str, _Runner] = {}
        self.peak_busy = 0  # the most slots busy at once, any runner (/sim/state)
        self.rejected = 0

    def loading(self, tag: str, now: float, load_s: float, slots: int = 0) -> None:
        """A (re)load of `tag` starts now and takes load_s: its `slots` (0 = num_parallel) are empty until then."""
        self._runners[tag] = _Runner(ready_at=now + load_s, slots=slots)

    def forget(self, tag: str) -> None:
        self._runners.pop(tag, None)

    def admit(self, tag: str, now: float, *, loads: bool = False) -> Admission:
        """A request arriving now: when it gets a slot and how many streams it shares the batch with.

        `loads`: this request started the load (the scheduler took it off the queue to load for it).
        Raises QueueFull when it would wait on a load behind OLLAMA_MAX_QUEUE others.
        """
        r = self._runners.setdefault(tag, _Runner(ready_at=now))
        if now < r.ready_at and not loads:  # the model is loading: the request sits in the scheduler's queue
            r.pending = [t for t in r.pending if t > now]
            if len(r.pending) >= self.max_queue:
                self.rejected += 1
                raise QueueFull(QUEUE_FULL_MESSAGE)
            r.pending.append(r.ready_at)
        start = max(now, r.ready_at)
        busy = sorted(t for t in r.busy_until if t > start)
        slots = r.slots or self.num_parallel
        if len(busy) >= slots:  # every slot taken: wait on the semaphore for the first to free
            start = busy[len(busy) - slots]
            busy = [t for t in busy if t > start]
        r.busy_until = busy
        return Admission(start_at=start, sharing=len(busy) + 1)

    def occupy(self, tag: str, until: float) -> None:
        """The admitted request holds its slot until `until`."""
        r = self._runners.setdefault(tag, _Runner())
        r.busy_until.append(until)
        self.peak_busy = max(self.peak_busy, len(r.busy_until))
