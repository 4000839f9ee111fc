"""The strict request window shared by every API call.

"60 requests per minute" is read strictly: no more than N requests in *any* window of the
configured length, the first one included. A leaky bucket (aiolimiter) that starts empty lets
nearly 2N through in the first window and again after every idle spell, so it cannot give that
guarantee; this module keeps the log of the last N requests instead.

A request occupies the window from the moment it is sent until ``window`` seconds after its
answer came back: the server counts it at some instant in between, and network latency must
not let two requests that were a full window apart on our clock land closer on the server's.

Waiters are served by priority (lower first), then in arrival order, so a create waiting for
a slot goes before polls that were queued earlier.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

#: Priorities: creating fills an idle in-flight slot, worth more than any poll.
PRIORITY_CREATE = 0
PRIORITY_POLL = 10
PRIORITY_OTHER = 5


class RequestWindow:
    """Pure bookkeeping of the sliding window: when may the next request start?

    Times are floats from one monotonic clock; nothing here sleeps or reads a clock.
    """

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a request window needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._open = 0  # requests sent and not yet answered: they count until answered + window
        self._ends: list[float] = []  # answer times of finished requests still inside a window
        self.paused_until = -math.inf

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        self._ends = [t for t in self._ends if t > cutoff]

    def available_at(self, now: float) -> float:
        """The earliest time >= now at which one more request may start (inf: after an answer)."""
        self._prune(now)
        start = max(now, self.paused_until)
        used = self._open + len(self._ends)
        if used < self.limit:
            return start
        # Must wait for (used - limit + 1) finished requests to leave the window.
        need = used - self.limit + 1
        if need > len(self._ends):
            return math.inf
        self._ends.sort()
        return max(start, self._ends[need - 1] + self.window)

    def begin(self, now: float) -> None:
        """Record that a request starts now. The caller checked ``available_at(now) <= now``."""
        self._open += 1

    def end(self, now: float) -> None:
        """Record that a request begun earlier got its answer (or failed) now."""
        self._open -= 1
        self._ends.append(now)

    def pause(self, until: float) -> None:
        """Start no request before ``until`` (a server's Retry-After)."""
        self.paused_until = max(self.paused_until, until)

    @property
    def in_use(self) -> int:
        return self._open + len(self._ends)


class RequestBudget:
    """The async face of RequestWindow: ``async with budget.slot(priority): <one request>``."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._window = RequestWindow(limit, window)
        self._clock = clock or anyio.current_time
        self._waiters: list[tuple[int, int, anyio.Event]] = []
        self._seq = itertools.count()
        self._changed = anyio.Event()
        self.sent = 0

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (a ``Retry-After``)."""
        self._window.pause(self._clock() + seconds)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @asynccontextmanager
    async def slot(self, priority: int = PRIORITY_OTHER) -> AsyncIterator[None]:
        """Wait until this request may be sent under the window and ahead of lesser priorities."""
        entry = (priority, next(self._seq), anyio.Event())
        heapq.heappush(self._waiters, entry)
        try:
            while True:
                changed = self._changed
                now = self._clock()
                if self._waiters[0] is entry:
                    at = self._window.available_at(now)
                    if at <= now:
                        break
                    with anyio.move_on_after(at - now if math.isfinite(at) else math.inf):
                        await changed.wait()
                else:
                    await changed.wait()
        except BaseException:
            self._waiters.remove(entry)
            heapq.heapify(self._waiters)
            self._notify()
            raise
        heapq.heappop(self._waiters)
        self._window.begin(now)
        self.sent += 1
        self._notify()
        try:
            yield
        finally:
            self._window.end(self._clock())
            self._notify()
