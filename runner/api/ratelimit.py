"""The strict request window shared by every API call.

"60 requests per minute" is read strictly: no more than N requests in *any* window of the
configured length, the first one included. A leaky bucket (aiolimiter) that starts empty lets
nearly 2N through in the first window and again after every idle spell, so it cannot give that
guarantee; this module keeps the log of the last N requests instead.

A request occupies the window from the moment it is sent until ``window`` seconds after its
answer came back: the server counts it at some instant in between, and network latency must
not let two requests that were a full window apart on our clock land closer on the server's.

After a 429 the window lowers its own pace (halves the requests it allows per window) and
recovers it gradually with every answered request; a ``Retry-After`` holds every request.

Waiters are served by priority, lowest first, evaluated at the moment a request may go: a
create waiting for a slot goes before any poll, and among polls the one most likely to find
its prediction finished goes first. Priorities may be numbers or functions of the clock
(``runner.api.waiters``: a heap, functions read again among a few best candidates).

Every request costs O(log n) in the number of waiters and O(1) amortised in the window: the
answer times are a deque in clock order, and only the waiter granted is woken; one waiter, the
leader, watches the clock (or waits for a burst token) on behalf of the others.

A server whose own limiter is a token bucket with a small burst refuses what the window
allows at once (60 requests in the same second). For it, an optional smoothing stage stands
in front of the window: a leaky bucket (aiolimiter) of ``burst`` requests that drains at the
window's average rate, so requests go at most ``burst`` at once and then evenly. The bucket
only spaces requests out; the window alone still decides how many go in any window.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Callable

import anyio
from aiolimiter import AsyncLimiter

from runner import clock as loop_clock
from runner.api.waiters import Priority as Priority
from runner.api.waiters import Waiter, WaiterQueue
from runner.config import Limits
from runner.errors import StopRequested
from runner.events import Events, Paused, RequestRefused, RequestSent, logged

#: Creating fills an idle in-flight slot: worth more than anything else.
PRIORITY_CREATE = -2.0e9
#: Presign, cancel, executions and model lookups: they unblock a slot or a decision.
PRIORITY_OTHER = -1.0e9
#: A poll with no better estimate; the scheduler passes scores in [-1, 0] instead.
PRIORITY_POLL = 0.0

#: How much of the pace one 429 takes away, and how much each answered request gives back.
BACKOFF_FACTOR = 0.5
RECOVERY_PER_ANSWER = 0.25


class RequestWindow:
    """Pure bookkeeping of the sliding window: when may the next request start?

    Times are floats from one monotonic clock; nothing here sleeps or reads a clock.
    """

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a request window needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.allowed = float(limit)  # lowered after a 429, recovered gradually
        self._open = 0  # requests sent and not yet answered: they count until answered + window
        # Answer times of finished requests still inside a window, oldest first: answers come
        # in clock order, so they join on the right and leave on the left.
        self._ends: deque[float] = deque()
        self.paused_until = -math.inf
        self.examined = 0  # answer times looked at: the window's work, held to O(1) per request

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        ends = self._ends
        self.examined += 1
        while ends and ends[0] <= cutoff:
            ends.popleft()
            self.examined += 1

    def available_at(self, now: float) -> float:
        """The earliest time >= now at which one more request may start (inf: after an answer)."""
        self._prune(now)
        start = max(now, self.paused_until)
        cap = max(1, int(self.allowed))
        used = self._open + len(self._ends)
        if used < cap:
            return start
        need = used - cap + 1  # finished requests that must leave the window first
        if need > len(self._ends):
            return math.inf
        return max(start, self._ends[need - 1] + self.window)

    def begin(self, now: float) -> None:
        """Record that a request starts now. The caller checked ``available_at(now) <= now``."""
        self._open += 1

    def end(self, now: float, *, refused: bool = False) -> None:
        """Record that a request begun earlier got its answer (or failed) now.

        ``refused`` (a 429) halves the pace; any other answer gives a little of it back.
        """
        self._open -= 1
        if self._ends and now < self._ends[-1]:  # a clock that went back: keep the order
            bisect.insort(self._ends, now)
        else:
            self._ends.append(now)
        if refused:
            self.allowed = max(1.0, self.allowed * BACKOFF_FACTOR)
        else:
            self.allowed = min(float(self.limit), self.allowed + RECOVERY_PER_ANSWER)

    def pause(self, until: float) -> None:
        """Start no request before ``until`` (a server's Retry-After)."""
        self.paused_until = max(self.paused_until, until)

    def spare(self, now: float) -> float:
        """The share of the window's requests still free now (0 to 1)."""
        self._prune(now)
        return max(0.0, 1.0 - (self._open + len(self._ends)) / max(1.0, self.allowed))


class Slot:
    """One granted request; tell it whether the server refused it with a 429."""

    def __init__(self, granted_at: float) -> None:
        self.refused = False
        self.granted_at = granted_at  # when the request was let go, on the limiter's clock


class RateLimiter:
    """The async face of RequestWindow: ``async with limiter.slot(priority) as s: <request>``.

    ``burst`` (None: off) adds the smoothing stage: a request also needs a token from an
    ``AsyncLimiter(burst, burst * window / limit)``, which holds ``burst`` tokens and refills
    at ``limit`` per ``window``. A token is asked for only while the window has a place free,
    by one waiter on behalf of all, and is spent at once on the best waiter of that moment: so
    priorities hold, and a pause or a stop cancels the wait before a token is taken for a
    request that will not go. The bucket reads the event loop's clock (asyncio only), so it
    cannot take another ``clock``. Raises ValueError for a ``burst`` below 1 or one given
    with a ``clock``.

    ``events`` hears every request let go (``RequestSent``), refused with a 429
    (``RequestRefused``) and every pause (``Paused``); the API client that sends through
    this limiter says its lines there too. None: a hub that only logs.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
        events: Events | None = None,
    ) -> None:
        self.window = RequestWindow(limit, window)
        self.events = events or logged(logging.getLogger("runner"))
        self._bucket: AsyncLimiter | None = None
        if burst is not None:
            if burst < 1:
                raise ValueError("a burst needs to be at least 1 request")
            if clock is not None:
                raise ValueError("the burst stage runs on the event loop's clock, not another")
            self._bucket = AsyncLimiter(burst, burst * window / limit)
        self._clock = clock or loop_clock.now
        self.waiters = WaiterQueue()
        self.sent = 0
        self.refused = 0
        # The one waiter that watches the clock (sleeps until the window frees a place, or
        # waits for a burst token) on behalf of all; the others sleep until granted.
        self._leader: Waiter | None = None
        self._token_wait: anyio.CancelScope | None = None  # the one wait for a bucket token
        self.wakeups = 0  # waiters woken: O(1) per request, never all of them per change

    @classmethod
    def for_limits(cls, limits: Limits, events: Events | None = None) -> RateLimiter:
        """The window ``limits`` say (``--rate``, ``--burst``), reporting to ``events``: one
        per API key."""
        return cls(limits.rate_limit, limits.rate_window, burst=limits.burst, events=events)

    def _rouse(self, waiter: Waiter) -> None:
        self.wakeups += 1
        waiter.rouse()

    def _changed(self) -> None:
        """A place may have freed up: grant what the window allows (without the burst stage;
        with it the leader spends tokens), and wake the leader to look at the clock again."""
        if self._bucket is None:
            self._grant(math.inf)
        self._wake_leader()

    def _wake_leader(self) -> None:
        leader = self._leader
        if leader is None or leader.gone:
            self._leader = None
            leader = self.waiters.peek()  # it takes the lead when it wakes
        if leader is not None:
            self._rouse(leader)

    def _recall_token(self) -> None:
        """Cancel the wait for a burst token: the request it was for is held back now."""
        if self._token_wait is not None:
            self._token_wait.cancel()

    def notify(self) -> None:
        """Wake every waiter to look again (e.g. after a stop was asked for: see ``abandon``)."""
        self._recall_token()
        for waiter in self.waiters.live():
            self._rouse(waiter)

    def spare(self) -> float:
        """The share of the window's requests still free now (0 to 1).

        The burst stage takes no part: it spaces requests out but never lowers how many a
        window holds.
        """
        return self.window.spare(self._clock())

    def pause(self, seconds: float, why: str = "") -> None:
        """Hold every request for ``seconds`` from now (``why``: a ``Retry-After``, an API that
        cannot be reached)."""
        now = self._clock()
        self.window.pause(now + seconds)
        self.events.emit(Paused(seconds, now, why))
        self._recall_token()
        self._wake_leader()

    def _grant(self, tokens: float) -> float:
        """Grant the window's free places to the best waiters, at most ``tokens`` of them, and
        wake each waiter granted (only those).

        Returns when to look again; a time not after now means a place is free and waits for
        a burst token.
        """
        at = math.inf
        while len(self.waiters):
            now = self._clock()
            at = self.window.available_at(now)
            if at > now or tokens < 1:
                break
            best = self.waiters.pop(now)
            assert best is not None
            self.window.begin(now)
            self.sent += 1
            tokens -= 1
            best.granted = True
            self._rouse(best)
            self.events.emit(RequestSent(best.what, now))
            at = math.inf
        return at

    async def _take_token(self, bucket: AsyncLimiter) -> None:
        """Wait for the bucket's next token, then grant it to the best waiter at once.

        A stop or a pause cancels the wait (``_recall_token``) before the bucket counts the
        token, so none is taken for a request held back by them. A token can still find no
        place and be lost: after a 429 lowered the pace, or to a pause in the very instant
        the bucket hands it over. Losing one errs on the side of fewer requests.
        """
        with anyio.CancelScope() as scope:
            self._token_wait = scope
            try:
                await bucket.acquire()
            finally:
                self._token_wait = None
            self._grant(tokens=1)

    def slot(
        self,
        priority: Priority = PRIORITY_POLL,
        *,
        abandon: anyio.Event | None = None,
        what: str = "",
    ) -> Turn:
        """``async with limiter.slot(...) as slot``: wait until this request (``what``: its
        method and path, for the events) may be sent under the window and ahead of lesser
        priorities; the request counts in the window until the ``async with`` ends.

        If ``abandon`` is set while waiting (and ``notify`` is called), the wait ends with
        StopRequested and no place is taken: a create waiting here when a stop is asked for is
        never sent.

        A request that finds nobody waiting and a place free goes at once, without joining
        the queue (its priority is not even read): with a generous window, as at a thousand
        in flight under a high rate, most requests do.
        """
        return Turn(self, priority, abandon, what)

    def _go_now(self, abandon: anyio.Event | None, what: str) -> float | None:
        """Let a request go at once if nobody waits and a place is free: when it went (None:
        it has to queue)."""
        now = self._clock()
        if (
            self._bucket is None
            and not len(self.waiters)
            and (abandon is None or not abandon.is_set())
            and self.window.available_at(now) <= now
        ):
            self.window.begin(now)
            self.sent += 1
            self.events.emit(RequestSent(what, now))
            return now
        return None

    def _done(self, slot: Slot, what: str) -> None:
        """A request let go got its answer (or failed): it leaves the open ones."""
        now = self._clock()
        self.window.end(now, refused=slot.refused)
        self.refused += slot.refused
        if slot.refused:
            self.events.emit(RequestRefused(what, now))
        self._changed()

    async def _queue(self, priority: Priority, abandon: anyio.Event | None, what: str) -> None:
        """Join the waiters and return once granted a place (``slot``'s wait)."""
        tokens = math.inf if self._bucket is None else 0  # grants that need no bucket token
        waiter = self.waiters.add(priority, what, self._clock())
        try:
            while not waiter.granted:
                if abandon is not None and abandon.is_set():
                    raise StopRequested("the run is stopping: the request was not sent")
                wake = waiter.renew()
                at = self._grant(tokens)
                if waiter.granted:
                    break
                if self._leader is None or self._leader.gone:
                    self._leader = waiter
                if self._leader is not waiter:
                    await wake.wait()  # until granted, handed the lead, or told to look
                    continue
                if at <= self._clock() and self._bucket is not None:
                    if self._token_wait is None:
                        await self._take_token(self._bucket)
                        continue
                    at = math.inf  # a token is already being waited for
                delay = at - self._clock()
                with anyio.move_on_after(delay if math.isfinite(delay) else math.inf):
                    await wake.wait()
        except BaseException:
            if waiter.granted:  # granted, then cancelled before sending: count it
                self.window.end(self._clock())
            else:
                self.waiters.remove(waiter)
            self._leave(waiter, freed=waiter.granted)
            raise
        self._leave(waiter, freed=False)

    def _leave(self, waiter: Waiter, *, freed: bool) -> None:
        """A waiter stops waiting: if it led (watched the clock or waited for a token), the
        next waiter takes the lead; if it gave back a place (``freed``), grant it."""
        if self._leader is waiter:
            self._leader = None
            self._wake_leader()
        if freed:
            self._changed()


class Turn:
    """One request's turn in a RateLimiter's window (``RateLimiter.slot``): entering waits for
    it and gives the Slot, leaving ends it. A class rather than an ``asynccontextmanager``,
    whose generator and protocol cost about as much as the window's own work on every
    request."""

    __slots__ = ("_abandon", "_limiter", "_priority", "_slot", "_what")

    def __init__(
        self, limiter: RateLimiter, priority: Priority, abandon: anyio.Event | None, what: str
    ) -> None:
        self._limiter = limiter
        self._priority = priority
        self._abandon = abandon
        self._what = what
        self._slot: Slot | None = None

    async def __aenter__(self) -> Slot:
        limiter = self._limiter
        granted = limiter._go_now(self._abandon, self._what)
        if granted is None:
            await limiter._queue(self._priority, self._abandon, self._what)
            granted = limiter._clock()
        self._slot = Slot(granted)
        return self._slot

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._slot is not None
        self._limiter._done(self._slot, self._what)
