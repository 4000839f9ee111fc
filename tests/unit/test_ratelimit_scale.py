"""The window and the queue of waiters stay O(log n) per request with a thousand waiting.

Work is counted, not timed: ``RequestWindow.examined`` (answer times looked at),
``WaiterQueue.examined`` (heap entries taken out and clock-dependent priorities read) and
``RateLimiter.wakeups`` (waiters woken). A window that rebuilds its list of answer times on
every look, or a queue that reads every waiter per grant and wakes them all per change, does
hundreds of times the work allowed here.
"""

from __future__ import annotations

import math
import random

import anyio
import pytest

from runner.api.ratelimit import PRIORITY_CREATE, PRIORITY_OTHER, RateLimiter
from runner.api.waiters import CANDIDATES, WaiterQueue

pytestmark = [pytest.mark.looptime, pytest.mark.timeout(60)]

WAITERS = 1000
PER_WAITER = 10
REQUESTS = WAITERS * PER_WAITER


async def test_ten_thousand_requests_from_a_thousand_waiters_cost_n_log_n() -> None:
    limiter = RateLimiter(200, 10.0)
    rng = random.Random(7)
    start = anyio.current_time()
    order: list[float] = []

    def poll_score(submitted: float) -> object:
        return lambda now: -min(1.0, (now - submitted) / 300.0)  # grows with age, as a poll's

    async def client(number: int) -> None:
        for turn in range(PER_WAITER):
            kind = (number + turn) % 4
            priority: object = (
                PRIORITY_CREATE if kind == 0 else PRIORITY_OTHER if kind == 1 else None
            )
            if priority is None:
                priority = poll_score(anyio.current_time() - rng.uniform(0, 300))
            async with limiter.slot(priority):  # type: ignore[arg-type]
                order.append(anyio.current_time())
                await anyio.sleep(rng.uniform(0.05, 2.0))  # the answer's latency
            await anyio.sleep(rng.uniform(0, 1.0))

    with anyio.fail_after(10 * REQUESTS):
        async with anyio.create_task_group() as tg:
            for number in range(WAITERS):
                tg.start_soon(client, number)

    assert limiter.sent == REQUESTS == len(order)
    bound = REQUESTS * math.log2(REQUESTS)
    assert limiter.window.examined <= 3 * bound
    assert limiter.waiters.examined <= 2 * bound
    assert limiter.wakeups <= 4 * REQUESTS
    # The window was the bottleneck (waiters queued), and it held: never more than 200 in
    # any 10 s (answers take time, so starts alone are a weaker check that must hold too).
    elapsed = anyio.current_time() - start
    assert elapsed >= (REQUESTS / 200 - 1) * 10.0
    j = 0
    for i, at in enumerate(order):
        while order[j] <= at - 10.0:
            j += 1
        assert i - j + 1 <= 200


def test_constant_priorities_come_out_in_order_and_ties_first_come_first_served() -> None:
    queue = WaiterQueue()
    values = [3.0, -1.0, 3.0, 0.5, -1.0, 7.0]
    waiters = [queue.add(v, str(i), now=0.0) for i, v in enumerate(values)]
    out = [queue.pop(0.0) for _ in values]
    assert [w.what for w in out if w] == ["1", "4", "3", "0", "2", "5"]
    assert queue.pop(0.0) is None and len(queue) == 0
    assert all(w.gone for w in waiters)


def test_clock_priorities_are_read_at_the_grant_among_the_candidates() -> None:
    """With no more functions waiting than CANDIDATES the choice is exact at the grant's
    clock, whatever their readings were when they queued."""
    queue = WaiterQueue()
    slopes = [0.5, -1.0, 2.0, 0.0, -0.25][:CANDIDATES]
    for i, slope in enumerate(slopes):
        queue.add(lambda now, s=slope: s * now, str(i), now=-10.0)  # the order at -10 reverses
    best = queue.pop(10.0)
    assert best is not None and best.what == str(slopes.index(min(slopes)))
    constant = queue.add(-100.0, "create", now=10.0)
    assert queue.pop(10.0) is constant


def test_waiters_that_leave_are_dropped_and_the_heaps_stay_small() -> None:
    queue = WaiterQueue()
    for round_ in range(100):
        batch = [queue.add(float(i), f"{round_}-{i}", now=0.0) for i in range(50)]
        for waiter in batch[1:]:
            queue.remove(waiter)
        queue.remove(batch[1])  # twice: nothing more happens
    assert len(queue) == 100
    assert len(queue._fixed) <= 2 * 100 + 16
    assert [w.what for w in (queue.pop(0.0) for _ in range(3)) if w] == ["0-0", "1-0", "2-0"]
