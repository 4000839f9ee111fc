"""What the engine tells the world, as typed events: an item's record written (its new state),
the batch's spend changed, a line for the user. Subscribers turn them into what is shown: the
log (``to_log``), and whatever a caller subscribes (``check_and_run(on_event=...)``).

The ledger is not a subscriber: a record must be on disk, fsynced, before the step it precedes
(the create it announces), so the engine awaits the writer itself and emits ``ItemChanged``
once the record is down. Subscribers are called in order, synchronously, and must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.jobs import JobState


@dataclass(frozen=True)
class ItemChanged:
    """An item's record was written: its new state and the record as written."""

    item_id: str
    state: JobState
    record: Mapping[str, Any]


@dataclass(frozen=True)
class SpendChanged:
    """What the batch has spent (settled) and holds reserved (in flight), in USD."""

    spent: Decimal
    reserved: Decimal


@dataclass(frozen=True)
class Said:
    """A line for the user: at a logging level, about one item or (None) the run."""

    level: int
    text: str
    item_id: str | None = None


Event = ItemChanged | SpendChanged | Said
Subscriber = Callable[[Event], None]


class Events:
    """The engine's outlet: ``emit`` hands each event to every subscriber, in order."""

    def __init__(self, subscribers: tuple[Subscriber, ...] = ()) -> None:
        self._subscribers = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber(event)


def to_log(logger: logging.Logger) -> Subscriber:
    """The subscriber that writes each ``Said`` to ``logger`` (state and spend stay silent:
    the ledger and the summary hold them)."""

    def write(event: Event) -> None:
        if isinstance(event, Said):
            logger.log(event.level, "%s", event.text)

    return write
