"""The strict request window, from tables; no sleeping apart from one ordering test."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest

from runner.budget import PRIORITY_CREATE, PRIORITY_POLL, RequestBudget, RequestWindow


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
    # The first window allows exactly `limit` at once (a burst), never more.
    assert times[:limit] == [0.0] * limit
    assert times[limit] >= length
    # Counting a request at its answer time keeps even latency-shifted windows strict.
    assert max_in_any_window(times, length) <= limit
    assert max_in_any_window([t + latency for t in times], length) <= limit


def test_open_requests_hold_their_place_until_answered() -> None:
    window = RequestWindow(2, 10.0)
    window.begin(0.0)
    window.begin(0.0)
    assert window.available_at(5.0) == math.inf  # both still open: no end time yet
    window.end(6.0)
    assert window.available_at(6.0) == 16.0
    window.end(7.0)
    assert window.available_at(20.0) == 20.0


def test_pause_holds_every_request() -> None:
    window = RequestWindow(10, 1.0)
    window.pause(30.0)
    assert window.available_at(0.0) == 30.0
    window.pause(5.0)  # a shorter pause never shortens a longer one
    assert window.available_at(0.0) == 30.0


@pytest.mark.parametrize(("limit", "length"), [(0, 1.0), (1, 0.0)])
def test_window_rejects_nonsense(limit: int, length: float) -> None:
    with pytest.raises(ValueError):
        RequestWindow(limit, length)


async def test_creates_are_served_before_polls_that_queued_earlier() -> None:
    budget = RequestBudget(1, 0.05)
    order: list[str] = []

    async def request(name: str, priority: int) -> None:
        async with budget.slot(priority):
            order.append(name)

    async with anyio.create_task_group() as tg, budget.slot(PRIORITY_POLL):  # the only slot
        tg.start_soon(request, "poll-1", PRIORITY_POLL)
        tg.start_soon(request, "poll-2", PRIORITY_POLL)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(request, "create", PRIORITY_CREATE)
        await anyio.lowlevel.checkpoint()
    assert order == ["create", "poll-1", "poll-2"]
    assert budget.sent == 4


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    budget = RequestBudget(1, 0.05)
    async with budget.slot():
        with anyio.move_on_after(0.01):
            async with budget.slot():
                pytest.fail("the slot was taken")
    async with budget.slot():  # the queue is not stuck behind the cancelled waiter
        pass
    assert budget.sent == 2
