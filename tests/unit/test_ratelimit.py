"""The strict request window and the limiter's priorities, from tables.

The limiter's tests run on looptime's virtual clock: waits of a window take no real time.
"""

from __future__ import annotations

import math

import anyio
import pytest

from runner.api.ratelimit import PRIORITY_CREATE, PRIORITY_POLL, RateLimiter, RequestWindow
from runner.errors import StopRequested
from runner.events import Event, Events, Paused, RequestRefused, RequestSent

pytestmark = pytest.mark.looptime


def drive(window: RequestWindow, starts: int, latency: float = 0.0) -> list[float]:
    """Start ``starts`` requests as early as the window allows; return their start times."""
    now = 0.0
    times = []
    for _ in range(starts):
        now = window.available_at(now)
        assert math.isfinite(now)
        window.begin(now)
        times.append(now)
        window.end(now + latency)
    return times


def max_in_any_window(times: list[float], length: float) -> int:
    return max(sum(1 for t in times if start <= t < start + length) for start in times)


@pytest.mark.parametrize(
    ("limit", "length", "latency"),
    [(60, 60.0, 0.0), (60, 60.0, 0.3), (5, 1.0, 0.01), (1, 2.0, 0.0)],
)
def test_never_more_than_limit_in_any_window_including_the_first(
    limit: int, length: float, latency: float
) -> None:
    times = drive(RequestWindow(limit, length), 4 * limit + 3, latency)
    assert times[:limit] == [0.0] * limit  # the first window allows a burst of `limit`, no more
    assert times[limit] >= length
    assert max_in_any_window(times, length) <= limit
    # counting a request until its answer keeps even latency-shifted windows strict
    assert max_in_any_window([t + latency for t in times], length) <= limit


def test_bursts_after_an_idle_spell_stay_strict() -> None:
    window = RequestWindow(10, 10.0)
    times = drive(window, 10)  # a burst at 0
    now = 100.0  # idle, then another burst: a leaky bucket would let 2N through here
    for _ in range(25):
        now = window.available_at(now)
        window.begin(now)
        times.append(now)
        window.end(now)
    assert max_in_any_window(times, 10.0) == 10


def test_open_requests_hold_their_place_until_answered() -> None:
    window = RequestWindow(2, 10.0)
    window.begin(0.0)
    window.begin(0.0)
    assert window.available_at(5.0) == math.inf  # both still open: no end time yet
    window.end(6.0)
    assert window.available_at(6.0) == 16.0
    window.end(7.0)
    assert window.available_at(20.0) == 20.0


def test_retry_after_pause_holds_every_request() -> None:
    window = RequestWindow(10, 1.0)
    window.pause(30.0)
    assert window.available_at(0.0) == 30.0
    window.pause(5.0)  # a shorter pause never shortens a longer one
    assert window.available_at(0.0) == 30.0


def test_a_429_halves_the_pace_and_answers_recover_it_gradually() -> None:
    window = RequestWindow(60, 60.0)
    window.begin(0.0)
    window.end(0.1, refused=True)
    assert window.allowed == 30.0
    steps = 0
    while window.allowed < 60.0:
        window.begin(0.2)
        window.end(0.2)
        steps += 1
    assert steps == 120  # recovery is gradual: a quarter request of pace per answer
    # while lowered, fewer requests fit in one window
    low = RequestWindow(60, 60.0)
    low.begin(0.0)
    low.end(0.0, refused=True)
    starts = drive(low, 40)
    assert sum(1 for t in starts if t < 60.0) < 60


@pytest.mark.parametrize(("limit", "length"), [(0, 1.0), (1, 0.0)])
def test_window_rejects_nonsense(limit: int, length: float) -> None:
    with pytest.raises(ValueError):
        RequestWindow(limit, length)


async def test_creates_go_before_polls_and_polls_by_score_at_grant_time() -> None:
    limiter = RateLimiter(1, 0.05)
    order: list[str] = []
    scores = {"poll-low": 0.1, "poll-high": 0.9}

    async def request(name: str, priority: object) -> None:
        async with limiter.slot(priority):  # type: ignore[arg-type]
            order.append(name)

    async with anyio.create_task_group() as tg, limiter.slot(PRIORITY_POLL):  # the only slot
        tg.start_soon(request, "poll-low", lambda _now: -scores["poll-low"])
        tg.start_soon(request, "poll-high", lambda _now: -scores["poll-high"])
        await anyio.lowlevel.checkpoint()
        tg.start_soon(request, "create", PRIORITY_CREATE)
        await anyio.lowlevel.checkpoint()
        scores["poll-low"] = 0.95  # scores are read when a slot is granted, not when queued
    assert order == ["create", "poll-low", "poll-high"]
    assert limiter.sent == 4


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    limiter = RateLimiter(1, 0.05)
    async with limiter.slot():
        with anyio.move_on_after(0.01):
            async with limiter.slot():
                pytest.fail("the slot was taken")
    async with limiter.slot():  # the queue is not stuck behind the cancelled waiter
        pass
    assert limiter.sent == 2


async def test_the_limiter_lets_requests_go_when_the_window_allows_not_before() -> None:
    """Two per 10 s, answered at once: pairs go at 0, 10 and 20 s, each as soon as allowed."""
    limiter = RateLimiter(2, 10.0)
    start = anyio.current_time()
    times: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            times.append(anyio.current_time() - start)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(request)
    assert times == pytest.approx([0.0, 0.0, 10.0, 10.0, 20.0, 20.0], abs=1e-3)


async def test_a_retry_after_holds_waiters_until_it_ends() -> None:
    limiter = RateLimiter(10, 1.0)
    start = anyio.current_time()
    limiter.pause(30.0)
    async with limiter.slot():
        waited = anyio.current_time() - start
    assert waited == pytest.approx(30.0, abs=1e-3)


async def test_a_refused_request_is_counted_and_lowers_the_pace() -> None:
    limiter = RateLimiter(10, 1.0)
    async with limiter.slot() as slot:
        slot.refused = True
    assert limiter.refused == 1 and limiter.window.allowed == 5.0


async def test_a_waiter_abandoned_by_a_stop_gives_up_without_taking_a_place() -> None:
    """A create waiting for the window when a stop is asked for must never be sent."""
    limiter = RateLimiter(1, 1000.0)
    stop = anyio.Event()
    outcome: list[str] = []

    async def create() -> None:
        try:
            async with limiter.slot(PRIORITY_CREATE, abandon=stop):
                outcome.append("sent")
        except StopRequested:
            outcome.append("not sent")

    # The only place in a 1000 s window is taken by the first slot.
    with anyio.fail_after(5):
        async with limiter.slot(PRIORITY_POLL), anyio.create_task_group() as tg:
            tg.start_soon(create)
            await anyio.sleep(0.01)
            assert outcome == []  # waiting for the window
            stop.set()
            limiter.notify()
    assert outcome == ["not sent"]
    assert limiter.sent == 1


async def test_the_window_reports_each_request_sent_each_429_and_each_pause() -> None:
    """Subscribers (the live view, the status file) learn what the window does as it does it:
    a request let go when it goes, a refusal when its answer comes, a pause with its reason."""
    heard: list[Event] = []
    limiter = RateLimiter(2, 10.0, events=Events((heard.append,)))
    async with limiter.slot(what="GET /a"):
        pass
    async with limiter.slot(what="POST /b") as slot:
        slot.refused = True
    limiter.pause(5.0, "Retry-After on 429")
    async with limiter.slot(what="GET /c"):
        pass
    sent = [(e.what, e.at) for e in heard if isinstance(e, RequestSent)]
    # 2 per 10 s: /c waits for /a to leave the window (and the 429 halved the pace to 1)
    assert [what for what, _ in sent] == ["GET /a", "POST /b", "GET /c"]
    assert sent[0][1] == sent[1][1] == 0.0 and sent[2][1] >= 10.0
    assert [e.what for e in heard if isinstance(e, RequestRefused)] == ["POST /b"]
    assert [(e.seconds, e.at, e.why) for e in heard if isinstance(e, Paused)] == [
        (5.0, 0.0, "Retry-After on 429")
    ]
    assert limiter.sent == len(sent) and limiter.refused == 1
