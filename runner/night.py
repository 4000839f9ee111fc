"""The night shift (pure): a run that must end by a deadline, what fits before it, the per-run
caps, and the order items go in.

- ``--until 06:00`` (the next 06:00 local time) or ``--until 2026-11-24T06:00+01:00``, and
  ``--max-wall 7h30m``: the run's deadline (``deadline_of``: the earlier of the two).
- An item is created only if it is expected to finish and be downloaded by the deadline
  (``fits``): the run time estimate is a high quantile (``FIT_QUANTILE``) of the run times the
  batch has learned for its model (the prior around ``--expected-runtime`` before any), plus
  one poll step to see the end and the download. Predictions still running at the deadline are
  waited for up to ``--grace`` (default: the p95 run time), then left for the next run.
- The plan's forecast (``forecast``) schedules the items to submit, in the order the run takes
  them, on the in-flight slots of every key and within the request window, and counts those
  whose create would still fit: how many finish tonight, what they cost, and how many nights
  the rest take at this pace.
- ``--max-items N`` and ``--max-spend USD`` cap what this run creates (resumed predictions do
  not count): a nightly allowance beside the batch-wide ``--budget``.
- ``--order shortest-first`` and the items' ``priority:`` (``submit_order``).

A run that stops for the night with work left exits ``EXIT_NOT_FINISHED`` (``runner.report``).
"""

from __future__ import annotations

import enum
import heapq
import math
import re
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as clock_time
from decimal import Decimal
from typing import TypeVar

from runner.errors import ConfigError

#: The run time an item is fitted with: this quantile of its model's learned run times.
FIT_QUANTILE = 0.9
#: An item's typical run time (how long it holds its slot; what shortest-first sorts by).
TYPICAL_QUANTILE = 0.5
#: The run time the grace after a deadline waits by default: this quantile.
GRACE_QUANTILE = 0.95
#: A download's expected length before one has been timed, as a share of the expected run
#: time (10 s for 200 s: a Hailuo MP4 is a few MB).
DOWNLOAD_SHARE = 0.05

_HHMM = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class Order(enum.StrEnum):
    """In which order a run creates its items (a higher ``priority:`` goes first in both)."""

    MANIFEST = "manifest"
    SHORTEST_FIRST = "shortest-first"


class NightStop(enum.StrEnum):
    """What ended a run's submitting for the night (``summary.json``'s ``night.stopped_by``)."""

    DEADLINE = "deadline"  # the next item could not finish by --until / --max-wall
    MAX_ITEMS = "max_items"  # --max-items items were submitted
    MAX_SPEND = "max_spend"  # the next create could take this run over --max-spend


@dataclass(frozen=True)
class Night:
    """This run's deadline and allowance (all None: a run without them)."""

    deadline: datetime | None = None  # aware
    #: How long predictions still running at the deadline are waited for; None: the p95 run
    #: time learned (the prior's before any).
    grace: float | None = None
    cancel_at_deadline: bool = False
    max_items: int | None = None
    max_spend: Decimal | None = None
    order: Order = Order.MANIFEST

    @property
    def capped(self) -> bool:
        """Whether anything here may stop a run before its batch is done."""
        return self.deadline is not None or self.max_items is not None or self.max_spend is not None


# -- parsing --------------------------------------------------------------------------------


def parse_duration(text: str, option: str = "--max-wall") -> float:
    """``7h30m``, ``45m``, ``90s``, ``1d``, ``1.5h`` or plain seconds (``600``): seconds, above
    0. ConfigError naming ``option`` otherwise."""
    spoken = text.strip().lower().replace(" ", "")
    try:
        seconds = float(spoken)
    except ValueError:
        match = _DURATION.fullmatch(spoken)
        if not spoken or match is None or not any(match.groupdict().values()):
            raise ConfigError(
                f"{option} must be a duration such as 7h30m, 45m, 90s or seconds, not {text!r}"
            ) from None
        seconds = sum(
            float(value) * _UNIT_SECONDS[unit]
            for unit, value in match.groupdict().items()
            if value is not None
        )
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 1e9:
        raise ConfigError(f"{option} must be a duration above 0 (and below 31 years), not {text!r}")
    return seconds


def local_at(day: date, at: clock_time, zone: tzinfo | None = None) -> datetime:
    """``at`` on ``day`` in ``zone`` (None: this machine's local time, daylight saving
    included, as the C library knows it), as an aware datetime."""
    naive = datetime.combine(day, at)
    if zone is not None:
        return naive.replace(tzinfo=zone)
    stamp = _time.mktime((*naive.timetuple()[:8], -1))  # -1: the library decides DST
    return datetime.fromtimestamp(stamp, UTC).astimezone()


def parse_until(text: str, now: datetime, zone: tzinfo | None = None) -> datetime:
    """The deadline ``--until TEXT`` names, seen at ``now`` (aware): ``HH:MM`` (or
    ``HH:MM:SS``) is the next such time in ``zone`` (None: local time) strictly after ``now``,
    so ``06:00`` at 22:00 is tomorrow morning and at 05:00 this morning; an ISO 8601 date-time
    must carry its UTC offset (``2026-11-24T06:00+01:00``, ``...Z``). ConfigError for anything
    else, or a date-time already past."""
    spoken = text.strip()
    match = _HHMM.fullmatch(spoken)
    if match is not None:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ConfigError(f"--until {text!r} is not a time of day (00:00 to 23:59)")
        at = clock_time(hour, minute, second)
        today = now.astimezone(zone).date() if zone is not None else now.astimezone().date()
        for days in range(3):  # tomorrow's, unless today's is still ahead (DST may skip one)
            candidate = local_at(today + timedelta(days=days), at, zone)
            if candidate > now:
                return candidate
        raise ConfigError(f"--until {text!r}: no such local time in the next days")
    try:
        moment = datetime.fromisoformat(spoken)
    except ValueError:
        raise ConfigError(
            f"--until must be a time of day (06:00) or an ISO 8601 date-time with its offset "
            f"(2026-11-24T06:00+01:00), not {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(
            f"--until {text!r} has no UTC offset: add one (+01:00, Z), or give a time of day "
            "such as 06:00 for the next one in local time"
        )
    if moment <= now:
        raise ConfigError(f"--until {text!r} is already past")
    return moment


def deadline_of(
    until: datetime | None, max_wall: float | None, started: datetime
) -> datetime | None:
    """The run's deadline: the earlier of ``until`` and ``started`` + ``max_wall``."""
    ends = [moment for moment in (until,) if moment is not None]
    if max_wall is not None:
        ends.append(started + timedelta(seconds=max_wall))
    return min(ends, default=None)


def next_night_argv(argv: Sequence[str]) -> list[str]:
    """The command line for the next night: ``argv`` as given, except that an ``--until``
    naming a date-time (which will be past by then) names the same time a day later. A time
    of day (``--until 06:00``) or ``--max-wall`` already means the next night's."""
    out = list(argv)

    def later(value: str) -> str:
        if _HHMM.fullmatch(value.strip()):
            return value
        try:
            return (datetime.fromisoformat(value.strip()) + timedelta(days=1)).isoformat()
        except ValueError:
            return value

    for i, arg in enumerate(out):
        if arg == "--until" and i + 1 < len(out):
            out[i + 1] = later(out[i + 1])
        elif arg.startswith("--until="):
            out[i] = "--until=" + later(arg.split("=", 1)[1])
    return out


# -- what fits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pace:
    """What a created item needs until its video is on disk, and how fast items can start."""

    slots: int  # predictions in flight at once, over every key
    see_end: float  # from a prediction's end to the poll that sees it (one poll step)
    download: float  # a video's download
    #: Seconds of request window each new item needs at least (its create and one poll, at
    #: the rate limit of every key together): items cannot start faster than one per this.
    start_gap: float = 0.0


def finish_at(start: float, runtime: float, pace: Pace) -> float:
    """When an item created at ``start`` with a run time of ``runtime`` is on disk."""
    return start + runtime + pace.see_end + pace.download


def fits(*, now: float, deadline: float, runtime: float, pace: Pace) -> bool:
    """Whether an item created now, with a run time estimate of ``runtime`` (a high quantile
    of its model's run times), is expected on disk by ``deadline`` (same clock as ``now``)."""
    return finish_at(now, runtime, pace) <= deadline


@dataclass(frozen=True)
class Forecast:
    """What fits before a deadline, by ``forecast``."""

    items: int  # of the items to submit, how many are created and finish in time
    spend: Decimal  # their estimated price
    rest: int  # the items to submit left for later nights
    nights: int | None  # more nights the rest takes at this pace (None: none fits a night)


@dataclass(frozen=True)
class Planned:
    """One item to submit, as the forecast sees it."""

    runtime: float  # its expected (typical) run time
    fit_runtime: float  # its run time for the fit decision (a high quantile)
    price: Decimal


def forecast(
    items: Sequence[Planned],
    *,
    seconds: float,
    pace: Pace,
    running: Sequence[float] = (),
    max_items: int | None = None,
    max_spend: Decimal | None = None,
) -> Forecast:
    """How many of ``items`` (in the order the run creates them) finish within ``seconds``
    from now. Each takes the first free slot of ``pace.slots`` (a prediction ``running`` now
    holds its slot for the seconds it still needs); the k-th cannot start before k ×
    ``pace.start_gap`` (the request window); it is created only if ``fits`` with its
    ``fit_runtime``, as the run decides, and then holds its slot for its typical ``runtime``.
    As the run, it stops at the first item that does not fit (or past ``max_items`` or
    ``max_spend``). ``nights`` is the nights the rest needs if each fits as many."""
    free = sorted(max(left, 0.0) for left in running)[: pace.slots]
    free = [0.0] * (pace.slots - len(free)) + free
    heapq.heapify(free)
    count, spend = 0, Decimal(0)
    for k, item in enumerate(items):
        if max_items is not None and count >= max_items:
            break
        if max_spend is not None and spend + item.price > max_spend:
            break
        start = max(free[0], k * pace.start_gap)
        if not fits(now=start, deadline=seconds, runtime=item.fit_runtime, pace=pace):
            break
        heapq.heapreplace(free, start + item.runtime + pace.see_end)
        count += 1
        spend += item.price
    rest = len(items) - count
    nights = None if count == 0 else math.ceil(rest / count)
    return Forecast(count, spend, rest, 0 if rest == 0 else nights)


# -- order ----------------------------------------------------------------------------------

T = TypeVar("T")


def submit_order(
    steps: Sequence[T],
    order: Order,
    *,
    priority: Callable[[T], int],
    expected: Callable[[T], float],
) -> list[T]:
    """``steps`` in the order a run creates them: a higher ``priority`` first; among equals,
    with ``Order.SHORTEST_FIRST`` the shortest ``expected`` run time first; then as given
    (manifest order). Stable, so without priorities and in manifest order nothing moves."""
    if order is Order.SHORTEST_FIRST:
        keys = [(-priority(step), expected(step)) for step in steps]
    else:
        keys = [(-priority(step), 0.0) for step in steps]
    ranked = sorted(range(len(steps)), key=keys.__getitem__)
    return [steps[i] for i in ranked]
