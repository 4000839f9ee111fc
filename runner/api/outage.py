"""How long an API that cannot be reached is waited for: one account's outage, on a clock.

A request that provably never left (the connection could not be made) is tried again after a
jittered back-off, as long as the outage has lasted less than its limit: ``after`` once the
API has answered at least once, ``at_start`` before (an API never reached is more likely a
wrong base or no network than a blip). Time comes from an injected clock, so tests move it by
hand.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from functools import partial

from runner.api.answers import backoff
from runner.errors import ApiUnavailableError, TransportError
from runner.events import Events, logged

log = logging.getLogger("runner")

#: Back-off while the API is unreachable: jittered, from 0.5 s doubling to 30 s.
UNREACHABLE_WAIT_BASE = 0.5
UNREACHABLE_WAIT_MAX = 30.0


class Outage:
    """The outage in progress, if any, and the waits before each retry within it."""

    def __init__(
        self,
        *,
        after: float,
        at_start: float,
        clock: Callable[[], float],
        backoff: Callable[[int], float] | None = None,
        events: Events | None = None,
    ) -> None:
        """``backoff(n)`` is the wait before the n-th retry (n >= 1), by default jittered
        from UNREACHABLE_WAIT_BASE doubling to UNREACHABLE_WAIT_MAX. An outage's start and
        end are said to ``events`` (None: to the log)."""
        self._after = after
        self._at_start = at_start
        self._clock = clock
        self._backoff = backoff or partial(unreachable_wait, rng=random.Random())
        self._events = events or logged(log)
        self._answered = False  # the API answered at least once
        self._since: float | None = None

    def wait(self, exc: TransportError, attempt: int) -> float:
        """Count the ``attempt``-th try in a row that never left (``exc`` says why); the
        seconds to hold every request before the next. Raises ApiUnavailableError once the
        outage has lasted its limit. The first of an outage is said at WARNING."""
        now = self._clock()
        limit = self._after if self._answered else self._at_start
        if self._since is None:
            self._since = now
            self._events.say(logging.WARNING, "%s; retrying for up to %g s", exc, limit)
        lasted = now - self._since
        if lasted >= limit:
            raise ApiUnavailableError(
                f"{exc}; the API has been unreachable for {lasted:.0f} s (the limit is {limit:g} s)"
            )
        return max(0.0, min(self._backoff(attempt), limit - lasted))

    def reached(self, shown: str) -> None:
        """The API at ``shown`` answered: an outage in progress ends (said at INFO)."""
        self._answered = True
        if self._since is not None:
            lasted = self._clock() - self._since
            self._since = None
            self._events.say(
                logging.INFO, "the API at %s answers again (unreachable for %.1f s)", shown, lasted
            )


def unreachable_wait(attempt: int, *, rng: random.Random) -> float:
    """The jittered wait before the ``attempt``-th retry of an unreachable API (1: ~0.5 s)."""
    return backoff(attempt - 1, base=UNREACHABLE_WAIT_BASE, cap=UNREACHABLE_WAIT_MAX, rng=rng)
