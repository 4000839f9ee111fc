"""What a run tells the world, as typed events, from every layer to every subscriber.

- the engine: an item's record written (``ItemChanged``), the batch's spend changed
  (``SpendChanged``), an item's image upload started or ended (``Uploading``);
- the engine's poll schedule: a poll due now (``PollDue``), which its ``RequestSent`` follows;
- the request window (``runner.api.ratelimit``): a request sent (``RequestSent``), one refused
  with a 429 (``RequestRefused``), every request held for a while (``Paused``: a Retry-After,
  an API that cannot be reached);
- any layer: a line for the user (``Said``).

One ``Events`` hub per run carries them; its subscribers turn them into what is shown: the log
(``to_log``), and whatever a caller subscribes (``check_and_run(on_event=...)``: the live view,
a status file). Subscribers are called in order, synchronously, and must not block; one that
raises is dropped, and the others hear why.

The ledger is not a subscriber: a record must be on disk, fsynced, before the step it precedes
(the create it announces), so the engine awaits the writer itself and emits ``ItemChanged``
once the record is down.
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
class Uploading:
    """An item's image upload started (``done`` False) or ended, uploaded or not (True). No
    record marks it: the ledger's ``uploaded`` is no state of the item, and a failed upload
    may leave the item pending without one."""

    item_id: str
    done: bool = False


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


@dataclass(frozen=True)
class RequestSent:
    """The request window let a request go (``what``: its method and path) at ``at``, on the
    window's clock (the event loop's)."""

    what: str
    at: float


@dataclass(frozen=True)
class PollDue:
    """The engine's poll schedule (``runner.engine.policy.next_poll_at``) made prediction
    ``prediction_id`` of item ``item_id`` due for a poll at ``due``, on the window's clock, and
    the poll now asks the request window for its place: the ``RequestSent`` of its
    ``GET /v1/prediction/<id>`` that follows says when it went. The difference is the poll's
    lag (what ``make bench`` measures at a thousand in flight)."""

    item_id: str
    prediction_id: str
    due: float


@dataclass(frozen=True)
class RequestRefused:
    """The API refused a request with a 429 (the window lowers its pace)."""

    what: str
    at: float


@dataclass(frozen=True)
class Paused:
    """No request goes for ``seconds`` from ``at`` (until ``at + seconds``): ``why`` says
    what asked for it."""

    seconds: float
    at: float
    why: str


Event = (
    ItemChanged | SpendChanged | Said | RequestSent | RequestRefused | Paused | Uploading | PollDue
)
Subscriber = Callable[[Event], None]


class Events:
    """A run's outlet: ``emit`` hands each event to every subscriber, in order."""

    def __init__(self, subscribers: tuple[Subscriber, ...] = ()) -> None:
        self._subscribers = list(subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to each subscriber. One that raises is dropped, and the others hear
        why: a broken display or status file must not end a batch that costs money (the
        ledger, which keeps the money safe, is no subscriber)."""
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception as exc:
                self._subscribers.remove(subscriber)
                self.say(
                    logging.ERROR,
                    "%r stopped listening to the run: it failed with %s: %s",
                    subscriber,
                    type(exc).__name__,
                    exc,
                )

    def say(self, level: int, message: str, *args: object, item_id: str | None = None) -> None:
        """Emit a line for the user: ``message % args``."""
        self.emit(Said(level, message % args if args else message, item_id))


def to_log(logger: logging.Logger) -> Subscriber:
    """The subscriber that writes each ``Said`` to ``logger`` at its level, and every request
    decision at DEBUG (``-v``): each request sent, refused or paused (item states and spend
    stay silent: the ledger and the summary hold them)."""

    def write(event: Event) -> None:
        if isinstance(event, Said):
            logger.log(event.level, "%s", event.text)
        elif isinstance(event, RequestSent):
            logger.debug("%s: sent (the request window let it go)", event.what)
        elif isinstance(event, RequestRefused):
            logger.debug("%s: refused with a 429; the request window slows down", event.what)
        elif isinstance(event, Paused):
            logger.debug("every request paused for %.1f s: %s", event.seconds, event.why)

    return write


def logged(logger: logging.Logger) -> Events:
    """A hub whose one subscriber is ``logger``: for a part used on its own (a client in a
    script, a test), which then logs just as it would in a run."""
    return Events((to_log(logger),))
