"""A thousand in flight: polls of predictions created together are spread over the quantum,
a request nobody waits ahead of goes without joining the queue, and the run's session has a
connection for every request the window lets go."""

from __future__ import annotations

import collections
from pathlib import Path

import anyio
import pytest

from runner.api.ratelimit import PRIORITY_CREATE, RateLimiter
from runner.api.transport import MIN_CONNECTIONS, connection_limit
from runner.config import Limits
from runner.engine import policy
from runner.events import Event, Events, PollDue, RequestSent
from tests.fakes import Script
from tests.unit.test_scheduler import _threads_the_clock_waits_for as _threads  # noqa: F401
from tests.unit.test_scheduler import fake, make_items, run

POLL_MIN = 5.0


def test_the_poll_offset_is_the_ids_own_and_within_the_spread() -> None:
    ids = [f"pred-{n:05d}" for n in range(2000)]
    offsets = [policy.poll_offset(pid, 1000, POLL_MIN) for pid in ids]
    assert offsets == [policy.poll_offset(pid, 1000, POLL_MIN) for pid in ids]  # stable
    assert all(0.0 <= offset < policy.MAX_SPREAD * POLL_MIN for offset in offsets)
    # about even: no tenth of the spread holds more than twice its share
    tenths = collections.Counter(int(10 * o / (policy.MAX_SPREAD * POLL_MIN)) for o in offsets)
    assert len(tenths) == 10 and max(tenths.values()) < 2 * len(ids) / 10


@pytest.mark.parametrize(("cap", "widest"), [(1, 0.008), (10, 0.08), (100, 0.8), (5000, 0.8)])
def test_a_small_batch_spreads_its_polls_over_less_of_the_quantum(cap: int, widest: float) -> None:
    offsets = [policy.poll_offset(f"p{n}", cap, POLL_MIN) for n in range(500)]
    assert max(offsets) <= widest * POLL_MIN
    assert max(offsets) > 0.9 * widest * POLL_MIN


@pytest.mark.looptime
@pytest.mark.timeout(20)
@pytest.mark.parametrize("keys", [1, 4])
async def test_predictions_created_at_once_are_not_all_polled_at_once(
    tmp_path: Path, keys: int
) -> None:
    """200 predictions created in the same instant (virtual clock, no latency): the engine's
    first polls fall due at each one's own offset after the grid point (on the tick nearest
    it), spread over most of a quantum, where without the offset all 200 would be due in the
    same instant. The spread is the whole run's: with four keys of 50 each, as with one of 200
    (before: each key's 50, which spread them over half as much)."""
    count = 200
    limits = Limits(concurrency=count // keys, rate_limit=100_000, rate_window=60.0)
    apis = [
        fake(limits, script=lambda input, attempt: Script(runtime=20.0), prefix=f"key{n}")
        for n in range(keys)
    ]
    heard: list[Event] = []
    items = make_items(count)
    await run(tmp_path, items, apis[0], limits=limits, more=apis[1:], listen=heard.append)
    created = {one.id: one.created for api in apis for one in api.runs.values()}
    assert len(created) == count
    assert len(set(created.values())) == 1, "the creates were all made in the same instant"
    first: dict[str, float] = {}
    for event in heard:
        if isinstance(event, PollDue):
            first.setdefault(event.prediction_id, event.due)
    assert set(first) == set(created)
    grid = (1 + policy.GRID_OFFSET) * limits.poll_min  # the first poll's age without spread
    for pid, due in first.items():
        offset = policy.poll_offset(pid, count, limits.poll_min)
        assert due == pytest.approx(
            policy.on_tick(created[pid] + grid + offset, limits.poll_min), abs=1e-6
        )
    dues = sorted(first.values())
    assert dues[-1] - dues[0] > 0.6 * policy.MAX_SPREAD * limits.poll_min
    # in no hundredth of a quantum are more than a tenth of them due
    buckets = collections.Counter(int(100 * (due - dues[0]) / limits.poll_min) for due in dues)
    assert max(buckets.values()) <= count // 10


@pytest.mark.looptime
async def test_a_request_nobody_waits_ahead_of_goes_without_joining_the_queue() -> None:
    """With the window free and no one waiting, a request is let go at once: its priority is
    never read and the queue does no work. Behind a request holding the only place, the next
    one waits in the queue as before, and goes when the place frees."""
    sent: list[Event] = []
    limiter = RateLimiter(1, 10.0, events=Events((sent.append,)))
    reads = 0

    def priority(now: float) -> float:
        nonlocal reads
        reads += 1
        return 0.0

    async with limiter.slot(priority, what="GET /a") as slot:
        assert slot.granted_at == anyio.current_time()
    assert reads == 0 and limiter.waiters.examined == 0 and limiter.wakeups == 0
    assert [e for e in sent if isinstance(e, RequestSent)] == [RequestSent("GET /a", 0.0)]
    # the window (1 per 10 s) is full now: the next request queues, reads its priority
    async with limiter.slot(priority, what="GET /b") as slot:
        assert slot.granted_at == pytest.approx(10.0)
    assert reads >= 1 and limiter.sent == 2


@pytest.mark.looptime
async def test_a_create_queued_behind_a_poll_still_goes_first() -> None:
    """The fast path is taken only when nobody waits: a poll arriving while a create waits
    queues behind it."""
    limiter = RateLimiter(1, 1.0)
    order: list[str] = []

    async def request(what: str, priority: float, delay: float) -> None:
        await anyio.sleep(delay)
        async with limiter.slot(priority, what=what):
            order.append(what)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request, "first", 0.0, 0.0)
        tg.start_soon(request, "create", PRIORITY_CREATE, 0.1)
        tg.start_soon(request, "poll", 0.0, 0.2)
    assert order == ["first", "create", "poll"]


@pytest.mark.parametrize(
    ("concurrency", "rate_limit", "connections"),
    [(10, 60, MIN_CONNECTIONS), (1000, 1_000_000, 2000), (1000, 60, 120), (1, 1, 32)],
)
def test_the_session_has_a_connection_for_each_request_the_window_lets_go(
    concurrency: int, rate_limit: int, connections: int
) -> None:
    assert connection_limit(concurrency, rate_limit) == connections
