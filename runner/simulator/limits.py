"""The API's request-rate limiters: a strict sliding window, or a gateway's token bucket.

``SimConfig.rate_limit`` alone gives ``RateWindow`` (the contract's strict reading of "60 per
minute": at most that many in any window); ``rate_burst`` gives ``TokenBucket`` (a small burst,
then the refill rate). Both only decide: ``admit(now)`` with the event loop's time, no clock or
I/O of their own, so their tests move time by hand. A refused request takes nothing from either,
so a client that waits is admitted again.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from runner.simulator.config import BURST_REFILL_COUNT, SimConfig

#: Slack in the bucket's arithmetic: a request spaced exactly at the refill rate finds its token.
EPSILON = 1e-9


class RateLimiter(Protocol):
    """Admits or refuses API requests; ``limit`` per ``window`` seconds is what the 429 says."""

    limit: int
    window: float

    def admit(self, now: float) -> bool:
        """Whether a request at loop time ``now`` is admitted (and counted)."""
        ...


class RateWindow:
    """At most ``limit`` admitted requests in any ``window`` seconds (a strict sliding window).

    Refused requests are not counted, so a client that waits for the window to pass is
    admitted again.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def admit(self, now: float) -> bool:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


class TokenBucket:
    """A bucket of ``capacity`` tokens, full at first, gaining ``limit / window`` a second up to
    ``capacity``; each admitted request takes one, and a request that finds less than one is
    refused (and takes none).

    So ``capacity`` requests may come at once, and after that one per ``window / limit``
    seconds: a client that sends ``limit`` requests at once, legal under the sliding window,
    is refused once the bucket is empty.
    """

    def __init__(self, capacity: int, limit: int, window: float) -> None:
        if capacity < 1 or limit < 1 or window <= 0:
            raise ValueError("need capacity >= 1, limit >= 1 and a positive window")
        self.capacity = capacity
        self.limit = limit
        self.window = window
        self._tokens = float(capacity)
        self._at: float | None = None  # loop time of the last request; None: full, untouched

    @property
    def refill(self) -> float:
        """Tokens gained per second."""
        return self.limit / self.window

    def tokens(self, now: float) -> float:
        """The tokens in the bucket at ``now``, none taken."""
        if self._at is None:
            return self._tokens
        gained = max(0.0, now - self._at) * self.refill
        return min(float(self.capacity), self._tokens + gained)

    def admit(self, now: float) -> bool:
        self._tokens = self.tokens(now)
        self._at = now if self._at is None else max(self._at, now)
        if self._tokens + EPSILON < 1.0:
            return False
        self._tokens -= 1.0
        return True


def rate_limiter(config: SimConfig) -> RateLimiter | None:
    """The limiter ``config`` asks for: a TokenBucket with ``rate_burst`` (refilled at
    ``rate_limit``, or BURST_REFILL_COUNT, per ``rate_window``), else a RateWindow with
    ``rate_limit``, else None (no limit)."""
    if config.rate_burst is not None:
        limit = config.rate_limit if config.rate_limit is not None else BURST_REFILL_COUNT
        return TokenBucket(config.rate_burst, limit, config.rate_window)
    if config.rate_limit:
        return RateWindow(config.rate_limit, config.rate_window)
    return None
