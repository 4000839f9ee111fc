"""The simulator's request-rate limiters, driven with explicit times (no clock, no sleeping):
the ``rate_burst`` token bucket's arithmetic, which limiter a config asks for, and ``scaled``."""

from __future__ import annotations

import pytest

from runner.simulator import SimConfig, SimStats
from runner.simulator.account import Account
from runner.simulator.limits import RateWindow, TokenBucket, rate_limiter


def admitted(limiter: RateWindow | TokenBucket, times: list[float]) -> list[bool]:
    return [limiter.admit(t) for t in times]


def test_a_full_bucket_admits_its_capacity_at_once_then_one_per_refill_interval() -> None:
    bucket = TokenBucket(capacity=3, limit=2, window=1.0)  # refills 2 a second
    assert bucket.refill == 2.0
    assert admitted(bucket, [0.0, 0.0, 0.0, 0.0]) == [True, True, True, False]
    assert not bucket.admit(0.25)  # half a token
    assert bucket.admit(0.5)  # the refused request at 0.25 took nothing: a whole token now
    assert not bucket.admit(0.5)
    assert bucket.tokens(0.75) == pytest.approx(0.5)


def test_the_bucket_refills_up_to_its_capacity_and_no_further() -> None:
    bucket = TokenBucket(capacity=3, limit=2, window=1.0)
    assert admitted(bucket, [0.0] * 3) == [True] * 3
    assert bucket.tokens(100.0) == 3.0  # a long quiet spell leaves it full, not fuller
    assert admitted(bucket, [100.0] * 4) == [True, True, True, False]


def test_requests_spaced_exactly_at_the_refill_rate_are_never_refused() -> None:
    """Even from an empty bucket, and with a refill interval (0.3/7 s) that is not exact in
    binary floating point."""
    bucket = TokenBucket(capacity=1, limit=7, window=0.3)
    interval = 0.3 / 7
    assert all(admitted(bucket, [i * interval for i in range(500)]))
    assert not bucket.admit(499 * interval + interval / 2)


def test_a_burst_legal_under_the_window_is_refused_by_the_bucket() -> None:
    """60 at once are within "60 per minute in any window"; a bucket of 10 admits 10 of them,
    then one a second."""
    at_once = [0.0] * 60
    assert sum(admitted(RateWindow(60, 60.0), at_once)) == 60
    bucket = TokenBucket(capacity=10, limit=60, window=60.0)
    assert sum(admitted(bucket, at_once)) == 10
    assert admitted(bucket, [0.5, 1.0, 1.5, 2.0]) == [False, True, False, True]


def test_a_clock_that_runs_back_gains_no_tokens() -> None:
    bucket = TokenBucket(capacity=1, limit=1, window=1.0)
    assert bucket.admit(10.0)
    assert not bucket.admit(5.0)
    assert not bucket.admit(10.5)  # half a token since 10.0, not 5.5 s worth
    assert bucket.admit(11.0)


@pytest.mark.parametrize(
    ("capacity", "limit", "window"), [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.0), (1, 1, -1.0)]
)
def test_a_bucket_refuses_nonsense(capacity: int, limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(capacity, limit, window)


def test_the_config_picks_the_limiter() -> None:
    assert rate_limiter(SimConfig()) is None
    window = rate_limiter(SimConfig(rate_limit=5, rate_window=10.0))
    assert isinstance(window, RateWindow) and (window.limit, window.window) == (5, 10.0)
    bucket = rate_limiter(SimConfig(rate_limit=5, rate_window=10.0, rate_burst=2))
    assert isinstance(bucket, TokenBucket)
    assert (bucket.capacity, bucket.limit, bucket.window) == (2, 5, 10.0)
    default = rate_limiter(SimConfig(rate_burst=4))  # no rate_limit: 60 per 60 s
    assert isinstance(default, TokenBucket)
    assert (default.capacity, default.refill) == (4, 1.0)


def test_scaling_keeps_the_burst_and_speeds_up_the_refill() -> None:
    """``rate_burst`` is a count, not a time: ``scaled(10)`` leaves it, and the shorter window
    refills the bucket ten times faster."""
    config = SimConfig(rate_limit=60, rate_window=60.0, rate_burst=5)
    fast = config.scaled(10)
    assert (fast.rate_burst, fast.rate_limit, fast.rate_window) == (5, 60, 6.0)
    slow_bucket, fast_bucket = rate_limiter(config), rate_limiter(fast)
    assert isinstance(slow_bucket, TokenBucket) and isinstance(fast_bucket, TokenBucket)
    assert fast_bucket.refill == pytest.approx(10 * slow_bucket.refill)
    unlimited = SimConfig(rate_burst=5).scaled(10)  # 60 per the scaled window
    bucket = rate_limiter(unlimited)
    assert isinstance(bucket, TokenBucket) and bucket.refill == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"rate_burst": 0}, "rate_burst"), ({"rate_burst": -1}, "rate_burst"),
     ({"rate_burst": 3, "rate_window": 0.0}, "rate_window")],
)  # fmt: skip
def test_the_config_refuses_a_nonsense_burst(changes: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SimConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("burst", [None, 1])
def test_the_account_refuses_over_the_rate_with_one_429_body_either_way(burst: int | None) -> None:
    stats = SimStats()
    account = Account(SimConfig(rate_limit=1, rate_window=2.0, rate_burst=burst), stats)
    assert account.rate_refusal(0.0) is None
    assert account.rate_refusal(1.0) == {
        "status": 429,
        "error": "too many requests",
        "details": "Rate limit exceeded: at most 1 requests per 2 seconds",
    }
    assert stats.refused_rate == 1
    assert account.rate_refusal(2.0) is None  # the window has passed / a token has come back
    assert stats.refused_rate == 1
