"""A thousand in flight on one core: the clock read a few times per request is the event
loop's own, polls due within a tick go together, and the collector's young passes are spaced
out while a run goes."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from runner import clock
from runner.config import Limits
from runner.engine import policy
from runner.engine.scheduler import YOUNG_OBJECTS
from runner.events import Event, PollDue
from tests.fakes import Script
from tests.unit.test_scheduler import _threads_the_clock_waits_for as _threads  # noqa: F401
from tests.unit.test_scheduler import fake, make_items, run


@pytest.mark.looptime
async def test_the_quick_clock_is_the_event_loops_clock() -> None:
    """Read on looptime's virtual clock: ``clock.now`` is what ``anyio.current_time`` says,
    and ``clock.sleep`` waits exactly as long on it."""
    assert clock.now() == anyio.current_time()
    await clock.sleep(12.5)
    assert clock.now() == anyio.current_time() == pytest.approx(12.5)
    await clock.sleep(0)
    assert clock.now() == pytest.approx(12.5)


async def test_the_quick_sleep_refuses_what_anyio_sleep_refuses() -> None:
    for seconds in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            await clock.sleep(seconds)
        with pytest.raises(ValueError):
            await anyio.sleep(seconds)


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


async def thresholds_during_a_run(tmp_path: Path) -> set[tuple[int, int, int]]:
    """The collector's thresholds each time the engine reported something, over a small run."""
    seen: set[tuple[int, int, int]] = set()
    limits = Limits(concurrency=5, rate_limit=100_000, rate_window=60.0)
    api = fake(limits, script=lambda input, attempt: Script(runtime=20.0))
    ran = await run(
        tmp_path, make_items(5), api, limits=limits, listen=lambda _: seen.add(gc.get_threshold())
    )
    assert len(ran.outcome.jobs) == 5 and seen
    return seen


@pytest.mark.looptime
@pytest.mark.timeout(20)
async def test_a_run_spaces_the_collectors_young_passes_and_restores_them(
    tmp_path: Path, thresholds: tuple[int, int, int]
) -> None:
    """Before: 700 new objects between young passes during the run, as outside it."""
    gc.set_threshold(700, 10, 10)
    assert await thresholds_during_a_run(tmp_path) == {(YOUNG_OBJECTS, 10, 10)}
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.looptime
@pytest.mark.timeout(20)
async def test_a_collector_switched_off_stays_off_during_a_run(
    tmp_path: Path, thresholds: tuple[int, int, int]
) -> None:
    gc.set_threshold(0, 10, 10)
    assert await thresholds_during_a_run(tmp_path) == {(0, 10, 10)}
    assert gc.get_threshold() == (0, 10, 10)


@pytest.mark.parametrize(
    ("at", "due"),
    [
        (0.0, 0.0),  # on a tick: stays
        (3 * 0.2, 0.6),  # on a tick, though (3 * 0.2) / 0.2 is 3.0000000000000004 in floats
        (5.509318, 5.6),  # up to the nearest
        (5.69, 5.6),  # down to the nearest
        (1e6 + 0.01, 1e6),
    ],
)
def test_a_poll_falls_due_on_the_nearest_tick(at: float, due: float) -> None:
    """Ticks of a 25th of a 5 s quantum: 0.2 s."""
    assert policy.on_tick(at, 5.0) == pytest.approx(due, abs=1e-9)


def test_polls_due_within_a_tick_share_it_and_none_moves_more_than_half_a_tick() -> None:
    """A thousand due times spread over a quantum fall on its 25 ticks (and the one that ends
    it), none more than half a tick from its time, as many earlier as later."""
    poll_min = 0.5
    half = policy.TICK * poll_min / 2
    times = [1000.0 + poll_min * (n + 0.5) / 1000 for n in range(1000)]
    moves = [policy.on_tick(t, poll_min) - t for t in times]
    assert all(abs(move) <= half + 1e-9 for move in moves)
    assert len({policy.on_tick(t, poll_min) for t in times}) == 26
    assert abs(sum(moves)) < half  # no drift: a schedule of polls does not slide later


@pytest.mark.looptime
@pytest.mark.timeout(20)
async def test_every_poll_of_a_run_falls_due_on_a_tick(tmp_path: Path) -> None:
    """Over a run on the virtual clock, every poll falls due on a tick, and a prediction's
    polls stay at least a quantum less half a tick apart."""
    heard: list[Event] = []
    limits = Limits(concurrency=50, rate_limit=100_000, rate_window=60.0)
    api = fake(limits, script=lambda input, attempt: Script(runtime=200.0))
    await run(tmp_path, make_items(50), api, limits=limits, listen=heard.append)
    tick = policy.TICK * limits.poll_min
    dues: dict[str, list[float]] = {}
    for event in heard:
        if isinstance(event, PollDue):
            dues.setdefault(event.prediction_id, []).append(event.due)
    assert len(dues) == 50
    for times in dues.values():
        assert all(abs(t / tick - round(t / tick)) < 1e-6 for t in times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and min(gaps) >= limits.poll_min - tick / 2 - 1e-6
