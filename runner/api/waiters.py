"""The queue of requests waiting for the window, best first: O(log n) per request.

A waiter's priority is a number (creates, presigns, cancels) or a function of the clock (a
poll's score, which grows as its prediction ages). Numbers go in one heap and are exact.
Functions cannot be kept in order by a heap, since their order may change as time passes, and
reading every one of them at each grant is what made a thousand polls quadratic. So they sit
in a second heap keyed by their last reading, and at each grant only the ``CANDIDATES`` best by
that reading are read again at the clock of the grant: the best of those goes, the others are
put back under their fresh reading. With up to ``CANDIDATES`` functions waiting the choice is
exact; beyond, a waiter whose reading has gone stale rises when it is next read.

Waiters that leave (granted, cancelled, stopped) are marked and dropped when they surface; the
heaps are rebuilt from the live waiters when the marked ones outnumber them, so they never
hold more than twice the waiters.

``examined`` counts the heap entries taken out and the functions read: the work of the queue,
which a test holds to c·n·log n.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

#: Clock-dependent priorities read again at each grant: a few, so the choice among polls
#: follows their current scores without reading every poll waiting.
CANDIDATES = 8

Priority = float | Callable[[float], float]


@dataclass(eq=False)
class Waiter:
    """One request waiting for a place. ``wake`` is set to make its task look again."""

    priority: Priority
    seq: int
    what: str
    granted: bool = False
    gone: bool = False  # granted or left: its heap entry is dropped when it surfaces
    wake: anyio.Event = field(default_factory=anyio.Event)

    def rouse(self) -> None:
        """Make the waiter's task look again (once; ``renew`` before waiting next)."""
        self.wake.set()

    def renew(self) -> anyio.Event:
        """The event to wait on next: a fresh one if the last was already set."""
        if self.wake.is_set():
            self.wake = anyio.Event()
        return self.wake


_Entry = tuple[float, int, Waiter]


class WaiterQueue:
    """Waiters by priority, lowest first (ties: first come first served)."""

    def __init__(self) -> None:
        self._fixed: list[_Entry] = []  # constant priorities
        self._moving: list[_Entry] = []  # functions of the clock, by their last reading
        self._seq = itertools.count()
        self._live = 0
        self._dead = 0  # marked entries still in a heap
        self.examined = 0

    def __len__(self) -> int:
        return self._live

    def add(self, priority: Priority, what: str, now: float) -> Waiter:
        """Queue a new waiter; a function priority is read once now to place it."""
        waiter = Waiter(priority, next(self._seq), what)
        if callable(priority):
            self.examined += 1
            heapq.heappush(self._moving, (priority(now), waiter.seq, waiter))
        else:
            heapq.heappush(self._fixed, (priority, waiter.seq, waiter))
        self._live += 1
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Take a waiter out (it stopped waiting). Removing it twice does nothing."""
        if waiter.gone:
            return
        waiter.gone = True
        self._live -= 1
        self._dead += 1
        if self._dead > max(16, self._live):
            self._compact()

    def pop(self, now: float) -> Waiter | None:
        """Take the best waiter at ``now`` out of the queue (None if there is none)."""
        fixed = self._top(self._fixed)
        candidates: list[_Entry] = []
        while self._moving and len(candidates) < CANDIDATES:
            _, seq, waiter = heapq.heappop(self._moving)
            self.examined += 1
            if waiter.gone:
                self._dead -= 1
                continue
            self.examined += 1
            assert callable(waiter.priority)
            candidates.append((waiter.priority(now), seq, waiter))
        best = min(candidates, default=None)
        if fixed is not None and (best is None or fixed[:2] < best[:2]):
            heapq.heappop(self._fixed)
            best = fixed
        for entry in candidates:
            if entry is not best:
                heapq.heappush(self._moving, entry)
        if best is None:
            return None
        waiter = best[2]
        waiter.gone = True
        self._live -= 1
        return waiter

    def peek(self) -> Waiter | None:
        """A live waiter near the front (by last readings), without taking it out."""
        fixed = self._top(self._fixed)
        moving = self._top(self._moving)
        if fixed is None or (moving is not None and moving[:2] < fixed[:2]):
            return None if moving is None else moving[2]
        return fixed[2]

    def live(self) -> list[Waiter]:
        """Every waiter still waiting (for a stop: each must look at it)."""
        return [entry[2] for entry in self._fixed + self._moving if not entry[2].gone]

    def _top(self, heap: list[_Entry]) -> _Entry | None:
        while heap and heap[0][2].gone:
            heapq.heappop(heap)
            self.examined += 1
            self._dead -= 1
        return heap[0] if heap else None

    def _compact(self) -> None:
        """Drop every marked entry at once: amortised O(1) per waiter that left."""
        for heap in (self._fixed, self._moving):
            self.examined += len(heap)
            heap[:] = [entry for entry in heap if not entry[2].gone]
            heapq.heapify(heap)
        self._dead = 0
