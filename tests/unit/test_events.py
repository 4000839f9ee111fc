"""The engine's events: every subscriber hears every event, in order; the log hears lines."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from runner.events import Event, Events, ItemChanged, Said, SpendChanged, to_log
from runner.jobs import JobState


def test_every_subscriber_hears_every_event_in_the_order_emitted() -> None:
    first: list[Event] = []
    second: list[Event] = []
    events = Events((first.append,))
    events.subscribe(second.append)
    sent = [
        ItemChanged("a", JobState.SUBMITTING, {"event": "submitting"}),
        SpendChanged(Decimal("0.43"), Decimal(0)),
        Said(logging.INFO, "a: submitted as p1", "a"),
    ]
    for event in sent:
        events.emit(event)
    assert first == sent and second == sent


def test_the_log_subscriber_writes_lines_only(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test-events")
    write = to_log(logger)
    with caplog.at_level(logging.INFO, logger="test-events"):
        write(ItemChanged("a", JobState.SUBMITTED, {}))
        write(SpendChanged(Decimal(1), Decimal(0)))
        write(Said(logging.WARNING, "a: 100% done, says the server"))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "a: 100% done, says the server")
    ]


def test_a_subscriber_that_raises_is_dropped_and_the_others_hear_why() -> None:
    """A live view that breaks (a closed terminal) must not end a batch that costs money."""
    heard: list[Event] = []
    calls: list[Event] = []

    def broken(event: Event) -> None:
        calls.append(event)
        raise BrokenPipeError("the terminal went away")

    events = Events((broken, heard.append))
    events.emit(SpendChanged(Decimal(1), Decimal(0)))
    events.emit(SpendChanged(Decimal(2), Decimal(0)))
    assert len(calls) == 1  # dropped after its failure
    [said] = [e for e in heard if isinstance(e, Said)]
    assert said.level == logging.ERROR and "BrokenPipeError: the terminal went away" in said.text
    assert [e for e in heard if isinstance(e, SpendChanged)] == [
        SpendChanged(Decimal(1), Decimal(0)),
        SpendChanged(Decimal(2), Decimal(0)),
    ]
