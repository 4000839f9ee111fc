"""How long an unreachable API is waited for (``runner.api.outage``), on a clock moved by hand."""

from __future__ import annotations

import logging
import random

import pytest

from runner.api import outage
from runner.api.outage import Outage
from runner.errors import ApiUnavailableError, TransportError

REFUSED = TransportError("cannot connect to http://api: connection refused", sent=False)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_api_never_reached_is_given_up_after_at_start() -> None:
    clock = Clock()
    waits = Outage(after=300.0, at_start=20.0, clock=clock, backoff=lambda n: 4.0)
    assert waits.wait(REFUSED, 1) == 4.0
    clock.now += 18.0
    assert waits.wait(REFUSED, 2) == 2.0  # never past the limit
    clock.now += 2.0
    with pytest.raises(ApiUnavailableError, match="unreachable for 20 s \\(the limit is 20 s\\)"):
        waits.wait(REFUSED, 3)


def test_once_the_api_answered_an_outage_may_last_after() -> None:
    clock = Clock()
    waits = Outage(after=300.0, at_start=20.0, clock=clock, backoff=lambda n: 1.0)
    waits.reached("http://api")
    waits.wait(REFUSED, 1)
    clock.now += 299.0
    assert waits.wait(REFUSED, 2) == 1.0
    clock.now += 1.0
    with pytest.raises(ApiUnavailableError, match="the limit is 300 s"):
        waits.wait(REFUSED, 3)


def test_an_answer_ends_the_outage_and_the_next_one_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="runner")
    clock = Clock()
    waits = Outage(after=10.0, at_start=10.0, clock=clock, backoff=lambda n: 0.0)
    waits.wait(REFUSED, 1)
    clock.now += 9.0
    waits.wait(REFUSED, 2)
    waits.reached("http://api")
    clock.now += 100.0
    assert waits.wait(REFUSED, 1) == 0.0  # a new outage: its clock starts now
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"{REFUSED}; retrying for up to 10 s"),
        (logging.INFO, "the API at http://api answers again (unreachable for 9.0 s)"),
        (logging.WARNING, f"{REFUSED}; retrying for up to 10 s"),
    ]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (12, 30.0)])
def test_the_default_backoff_is_jittered_from_a_quarter_second_to_a_doubling_ceiling(
    attempt: int, ceiling: float
) -> None:
    rng = random.Random(7)
    draws = [outage.unreachable_wait(attempt, rng=rng) for _ in range(200)]
    assert all(0.25 <= draw <= ceiling for draw in draws)
    assert max(draws) > ceiling * 0.9  # the ceiling is reached, not just a bound
