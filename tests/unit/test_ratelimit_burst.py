"""The burst stage in front of the strict window, on looptime's virtual clock.

With ``burst``, requests go at most ``burst`` at once and then at the window's average rate;
the window still caps every window, priorities still decide who goes, and a request that is
abandoned, cancelled or held by a Retry-After takes no token it does not use.

The clock ticks in binary fractions (2**-20 s) and every refill rate here is a power of two,
so aiolimiter's float arithmetic is exact. That is not cosmetic: aiolimiter drains its level
in float steps, and a level left a rounding error (1e-16) above a token re-arms its timer at
the very same instant. A real clock moves on by then; a virtual one only moves when nothing
is due, so it would spin there for ever (the per-test ``timeout`` below then stops it).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

import anyio
import pytest

from runner.api.ratelimit import PRIORITY_CREATE, PRIORITY_POLL, Priority, RateLimiter
from runner.config import Limits
from runner.errors import ConfigError, StopRequested

pytestmark = [pytest.mark.looptime(resolution=2**-20), pytest.mark.timeout(10)]

#: No test here may wait this long on the virtual clock; a stuck wait fails instead of hanging.
DEADLINE = 3600.0


class Requests:
    """Requests through one limiter; records when each was let go (seconds from the start)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.start = anyio.current_time()
        self.sent: list[tuple[str, float]] = []

    @property
    def times(self) -> list[float]:
        return [at for _, at in self.sent]

    def now(self) -> float:
        return anyio.current_time() - self.start

    async def send(
        self, name: str = "", priority: Priority = PRIORITY_POLL, abandon: anyio.Event | None = None
    ) -> None:
        async with self.limiter.slot(priority, abandon=abandon):
            self.sent.append((name, self.now()))

    async def all_at_once(self, count: int) -> None:
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                for number in range(count):
                    tg.start_soon(self.send, str(number))


def most_within(times: list[float], length: float) -> int:
    """The most requests let go within ``length`` seconds of one another."""
    return max(sum(1 for t in times if start <= t < start + length) for start in times)


async def test_a_burst_goes_at_most_burst_at_once_then_one_per_average_interval() -> None:
    """60 per 60 s with burst 5: of 20 requests at once, 5 go at once, then one a second."""
    requests = Requests(RateLimiter(60, 60.0, burst=5))
    await requests.all_at_once(20)
    expected = [0.0] * 5 + [float(n) for n in range(1, 16)]
    assert requests.times == pytest.approx(expected, abs=1e-3)
    assert most_within(requests.times, 0.5) == 5


async def test_without_a_burst_the_window_lets_everything_it_allows_go_at_once() -> None:
    requests = Requests(RateLimiter(60, 60.0))
    await requests.all_at_once(20)
    assert requests.times == [0.0] * 20


@pytest.mark.parametrize(("limit", "window", "burst"), [(10, 10.0, 5), (8, 64.0, 2), (4, 1.0, 4)])
async def test_the_window_stays_strict_behind_the_burst_stage(
    limit: int, window: float, burst: int
) -> None:
    """The bucket refills at the window's average rate, yet never lets more than ``limit`` go
    in any window (after a burst the bucket alone would allow ``burst`` extra)."""
    requests = Requests(RateLimiter(limit, window, burst=burst))
    await requests.all_at_once(4 * limit)
    times = requests.times
    assert most_within(times, window) <= limit
    assert most_within(times, 1e-3) <= burst
    interval = window / limit  # the bucket: burst at once, then one per interval at most
    for number, at in enumerate(times):
        assert number < burst + at / interval + 1e-6


@pytest.mark.parametrize("seed", range(12))
async def test_under_random_traffic_both_limits_hold_and_every_request_goes(seed: int) -> None:
    """Requests arriving at random, answered after random latencies, now and then a
    Retry-After: every request is sent, never more than ``limit`` in any window, and never
    more than ``burst`` plus what the bucket refilled in any stretch of time."""
    rng = random.Random(seed)
    limit, window = rng.choice([(60, 60.0), (10, 10.0), (4, 2.0), (3, 12.0)])
    burst = rng.choice([1, 2, 5])
    limiter = RateLimiter(limit, window, burst=burst)
    requests = Requests(limiter)

    async def request(arrival: float, latency: float, pause: float) -> None:
        await anyio.sleep(arrival)
        async with limiter.slot(rng.random()):
            requests.sent.append(("", requests.now()))
            await anyio.sleep(latency)
            if pause:
                limiter.pause(pause)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            for _ in range(40):
                pause = rng.uniform(0.0, 3.0) if rng.random() < 0.05 else 0.0
                tg.start_soon(request, rng.uniform(0.0, 30.0), rng.uniform(0.0, 0.7), pause)
    times = sorted(requests.times)
    assert len(times) == limiter.sent == 40
    assert most_within(times, window) <= limit
    interval = window / limit
    for first, start in enumerate(times):
        for last in range(first, len(times)):
            assert last - first + 1 <= burst + (times[last] - start) / interval + 1e-6


async def test_the_token_goes_to_the_best_waiter_when_it_comes() -> None:
    """A create that starts waiting after two polls still goes first when the next token
    comes; a poll's score is read then, not when it queued."""
    requests = Requests(RateLimiter(60, 60.0, burst=1))
    scores = {"poll-low": 0.1, "poll-high": 0.9}
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            await requests.send("first")  # the only token until 1 s
            tg.start_soon(requests.send, "poll-low", lambda _now: -scores["poll-low"])
            tg.start_soon(requests.send, "poll-high", lambda _now: -scores["poll-high"])
            await anyio.sleep(0.5)
            tg.start_soon(requests.send, "create", PRIORITY_CREATE)
            await anyio.sleep(0.1)
            scores["poll-low"] = 0.95
    assert requests.sent == [
        ("first", 0.0),
        ("create", pytest.approx(1.0, abs=1e-3)),
        ("poll-low", pytest.approx(2.0, abs=1e-3)),
        ("poll-high", pytest.approx(3.0, abs=1e-3)),
    ]


async def test_a_stop_ends_a_wait_for_a_token_at_once_and_leaves_the_token() -> None:
    """A create waiting for the bucket when a stop comes is not sent, at that instant; the
    token it was waiting for goes to the next request, on time."""
    limiter = RateLimiter(60, 60.0, burst=1)
    requests = Requests(limiter)
    stop = anyio.Event()
    outcome: list[tuple[str, float]] = []

    async def create() -> None:
        try:
            await requests.send("create", PRIORITY_CREATE, abandon=stop)
        except StopRequested:
            outcome.append(("not sent", requests.now()))

    with anyio.fail_after(DEADLINE):
        await requests.send("first")
        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            await anyio.sleep(0.5)
            stop.set()
            limiter.notify()
        await requests.send("after")
    assert outcome == [("not sent", pytest.approx(0.5, abs=1e-3))]
    assert requests.sent == [("first", 0.0), ("after", pytest.approx(1.0, abs=1e-3))]
    assert limiter.sent == 2


async def test_a_cancelled_wait_for_a_token_hands_the_wait_to_the_next_waiter() -> None:
    limiter = RateLimiter(60, 60.0, burst=1)
    requests = Requests(limiter)

    async def given_up() -> None:
        with anyio.move_on_after(0.3):
            await requests.send("given up")

    with anyio.fail_after(DEADLINE):
        await requests.send("first")
        async with anyio.create_task_group() as tg:
            tg.start_soon(given_up)  # waits for the token first, then is cancelled
            await anyio.sleep(0.1)
            tg.start_soon(requests.send, "next")
    assert requests.sent == [("first", 0.0), ("next", pytest.approx(1.0, abs=1e-3))]


async def test_tokens_are_not_gathered_during_a_retry_after_to_burst_past_it() -> None:
    """Waiters held by a Retry-After take no tokens meanwhile: when it ends, at most ``burst``
    go at once (the bucket refilled, as the server's has) and the rest one per interval."""
    limiter = RateLimiter(60, 60.0, burst=2)
    requests = Requests(limiter)
    with anyio.fail_after(DEADLINE):
        await requests.send("a")
        await requests.send("b")  # the bucket is empty until 1 s
        limiter.pause(10.0)
        await requests.all_at_once(4)
    assert requests.times == pytest.approx([0.0, 0.0, 10.0, 10.0, 11.0, 12.0], abs=1e-3)


async def test_a_retry_after_cancels_a_wait_for_a_token_so_no_token_is_lost() -> None:
    """A token the bucket would have handed over during a Retry-After, when nothing may go,
    is not taken: the first request after the pause goes the moment it ends."""
    limiter = RateLimiter(60, 60.0, burst=2)
    requests = Requests(limiter)
    with anyio.fail_after(DEADLINE):
        await requests.send("a")
        await requests.send("b")  # the bucket's next token comes at 1 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(requests.send, "c")
            await anyio.sleep(0.5)
            limiter.pause(0.75)  # until 1.25 s
    # Had c's wait taken the token at 1 s, it would have found the window paused, lost the
    # token, and waited for the next one at 2 s.
    assert requests.sent[-1] == ("c", pytest.approx(1.25, abs=1e-3))


async def test_a_pause_in_the_instant_a_token_comes_costs_at_most_that_token() -> None:
    """The one race the burst stage loses: the bucket hands a token over in the same instant
    a Retry-After arrives. The request then waits for the pause to end (1.5 s) or, if the
    token was already counted, for the next one (2 s); nothing else goes wrong."""
    limiter = RateLimiter(60, 60.0, burst=1)
    requests = Requests(limiter)
    with anyio.fail_after(DEADLINE):
        await requests.send("a")  # the next token comes at 1 s
        async with anyio.create_task_group() as tg:
            tg.start_soon(requests.send, "c")
            await anyio.sleep(0.5)
            asyncio.get_running_loop().call_at(requests.start + 1.0, limiter.pause, 0.5)
    assert requests.sent[-1][1] in (pytest.approx(1.5, abs=1e-3), pytest.approx(2.0, abs=1e-3))
    assert limiter.sent == 2


async def test_the_burst_stage_takes_nothing_from_the_windows_spare_share() -> None:
    limiter = RateLimiter(10, 10.0, burst=2)
    async with limiter.slot(), limiter.slot():
        pass
    assert limiter.spare() == pytest.approx(0.8)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimiter(60, 60.0, burst=0),
        lambda: RateLimiter(60, 60.0, burst=-3),
        lambda: RateLimiter(60, 60.0, burst=5, clock=lambda: 0.0),
    ],
    ids=["zero", "negative", "with-a-clock"],
)
def test_the_limiter_refuses_a_burst_it_cannot_honour(make: Callable[[], RateLimiter]) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("burst", [0, -1, 2.5, True, "5", math.inf])
def test_limits_refuse_a_burst_that_is_not_a_whole_number_of_requests(burst: object) -> None:
    with pytest.raises(ConfigError):
        Limits(burst=burst)  # type: ignore[arg-type]


def test_limits_take_no_burst_by_default_and_any_whole_number_of_requests() -> None:
    assert Limits().burst is None
    assert Limits(burst=1).burst == 1
    assert Limits(burst=60).burst == 60
