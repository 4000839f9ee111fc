"""When to poll a prediction, and how long to back off: pure functions, table-tested.

The request budget (60 a minute by default) is shared by every prediction in flight, so an
even share of it sets the pace: with 10 in flight and 60/60, each is polled about every 10 s.
No prediction is polled more often than ``poll_min`` (the service's status is quantised to
about 5 s), and none before ``poll_min`` has passed since its create.
"""

from __future__ import annotations

import random


def poll_interval(*, in_flight: int, rate_limit: int, rate_window: float, poll_min: float) -> float:
    """Seconds between two polls of one prediction: its even budget share, at least poll_min."""
    share = max(1, in_flight) * rate_window / rate_limit
    return max(poll_min, share)


def next_poll_at(
    *,
    now: float,
    submitted_at: float,
    last_poll_at: float | None,
    in_flight: int,
    rate_limit: int,
    rate_window: float,
    poll_min: float,
) -> float:
    """The monotonic time at which a prediction should next be polled (never before ``now``)."""
    interval = poll_interval(
        in_flight=in_flight, rate_limit=rate_limit, rate_window=rate_window, poll_min=poll_min
    )
    if last_poll_at is None:
        return max(now, submitted_at + poll_min)
    return max(now, last_poll_at + interval)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: a uniform draw in [base/2, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return rng.uniform(min(base / 2, ceiling), ceiling)
