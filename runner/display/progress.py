"""The run's progress as the events tell it (pure: no I/O, time passed in).

``Progress`` starts from the plan the checks made (every item's stage: items already done
count as done) and follows the run's events (``runner.events``): each item's stage, what is in
flight against the cap, the requests in the request window against its limit, the spend
against ``--budget``, pauses and 429s. ``snapshot(now)`` is what a display shows, with an ETA
from the run times the batch has learned (``runner.walltime``). ``apply`` is called by a
subscriber for every event, synchronously, in the scheduler's loop: it only updates counters
(amortised O(1), no I/O), and returns the line a display should print for a 429 or a pause.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from runner import walltime
from runner.events import (
    Event,
    ItemChanged,
    Paused,
    RequestRefused,
    RequestSent,
    SpendChanged,
    Uploading,
)
from runner.jobs import JobState
from runner.money import ZERO, usd
from runner.store.plan import Action, Plan


class Stage(enum.StrEnum):
    """Where an item stands, as the display counts it (in the order it shows them)."""

    PENDING = "pending"  # not created yet (it may be waiting for a slot or the window)
    UPLOADING = "uploading"  # its image is being uploaded
    SUBMITTED = "submitted"  # a create was sent, its answer not recorded yet (or looked up)
    RUNNING = "running"  # a prediction in flight on the server
    DOWNLOADING = "downloading"  # the prediction succeeded; its video is being fetched
    DONE = "done"  # the video is on disk
    FAILED = "failed"  # ended in failure (for now: a later run may pick it up)


#: The stages that hold a prediction on the server (or may: a create on the wire).
IN_FLIGHT = frozenset({Stage.SUBMITTED, Stage.RUNNING})

_OF_STATE = {
    JobState.PENDING: Stage.PENDING,
    JobState.SUBMITTING: Stage.SUBMITTED,
    JobState.SUBMITTED: Stage.RUNNING,
    JobState.SUCCEEDED: Stage.DOWNLOADING,
    JobState.DOWNLOADED: Stage.DONE,
    JobState.FAILED: Stage.FAILED,
}

_OF_ACTION = {
    Action.SUBMIT: Stage.PENDING,
    Action.POLL: Stage.RUNNING,
    Action.RECHECK: Stage.RUNNING,
    Action.RECONCILE: Stage.SUBMITTED,
    Action.DOWNLOAD: Stage.DOWNLOADING,
    Action.DONE: Stage.DONE,
    Action.FAILED: Stage.FAILED,
}


def stage_of(state: JobState) -> Stage:
    """The stage an item is in once a record of ``state`` is written."""
    return _OF_STATE[state]


@dataclass(frozen=True)
class Snapshot:
    """What the run looks like at one moment: everything a display shows."""

    total: int
    counts: Mapping[Stage, int]  # every stage, zeros included
    in_flight: int  # predictions (a duplicate shares its first item's)
    concurrency: int
    window_used: int  # requests sent in the last ``rate_window`` seconds
    rate_limit: int
    rate_window: float
    refused: int  # requests refused with a 429 so far
    spent: Decimal  # settled, the batch's (earlier runs included)
    reserved: Decimal  # estimates held for predictions in flight
    budget: Decimal | None
    elapsed: float
    eta: float  # seconds until the items left are done, at the learned pace
    runtime: float  # the run time the ETA assumes
    learned: int  # how many of this run's successes taught it
    paused_for: float  # seconds every request is still held (0: none)
    pause_why: str

    @property
    def done(self) -> int:
        return self.counts[Stage.DONE]

    @property
    def failed(self) -> int:
        return self.counts[Stage.FAILED]

    @property
    def finished(self) -> bool:
        """Nothing is left to do in this run: every item is done or failed."""
        return self.done + self.failed == self.total


class Progress:
    """A run's progress, from its plan and its events; ``now`` is the request window's clock
    (the event loop's), the clock ``RequestSent.at`` is on."""

    def __init__(
        self,
        plan: Plan,
        *,
        now: float,
        concurrency: int,
        rate_limit: int,
        rate_window: float,
        expected_runtime: float,
        budget: Decimal | float | None = None,
        spent: Decimal = ZERO,
        reserved: Decimal = ZERO,
    ) -> None:
        self.started = now
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.expected_runtime = expected_runtime
        self.budget = None if budget is None else usd(budget)
        self.spent = spent
        self.reserved = reserved
        self._stage: dict[str, Stage] = {}
        self._copies: dict[str, list[str]] = {}  # an item → its duplicates (they follow it)
        self._since: dict[str, float] = {}  # in flight since (for the ETA)
        self._runtimes: dict[str, float] = {}  # this run's successes: item → predict_time
        self._sent: deque[float] = deque()  # when each request of the last window went
        self.refused = 0
        self._paused_until = 0.0
        self._pause_why = ""
        for step in plan.steps:
            if step.action is Action.DUPLICATE and step.duplicate_of is not None:
                self._copies.setdefault(step.duplicate_of, []).append(step.item.id)
        for step in plan.steps:
            if step.action is not Action.DUPLICATE:
                stage = _OF_ACTION[step.action]
                for item_id in (step.item.id, *self._copies.get(step.item.id, ())):
                    self._stage[item_id] = stage
                if stage in IN_FLIGHT:
                    self._since[step.item.id] = now
        self._counts = Counter(self._stage.values())  # every item, duplicates included
        self._work = Counter(self._stage[item_id] for item_id in self._sources(plan))

    def apply(self, event: Event, now: float) -> str | None:
        """Follow ``event`` (at ``now``); the line to print above the progress for a 429 or a
        new pause of every request, else None."""
        if isinstance(event, ItemChanged):
            self._item(event, now)
        elif isinstance(event, Uploading):
            if not event.done:
                self._move(event.item_id, Stage.UPLOADING)
            elif self._stage.get(event.item_id) is Stage.UPLOADING:
                self._move(event.item_id, Stage.PENDING)
        elif isinstance(event, SpendChanged):
            self.spent, self.reserved = event.spent, event.reserved
        elif isinstance(event, RequestSent):
            self._sent.append(event.at)
            self._forget_sent(event.at)
        elif isinstance(event, RequestRefused):
            self.refused += 1
            return f"{event.what}: refused with a 429 (too many requests); the runner slows down"
        elif isinstance(event, Paused):
            return self._pause(event)
        return None

    def _item(self, event: ItemChanged, now: float) -> None:
        if event.item_id not in self._stage:
            return  # not an item of the plan
        stage = stage_of(event.state)
        self._move(event.item_id, stage)
        if stage in IN_FLIGHT:
            self._since.setdefault(event.item_id, now)
        else:
            self._since.pop(event.item_id, None)
        seconds = usd(event.record.get("predict_time"))
        if event.state is JobState.SUCCEEDED and seconds is not None and seconds > 0:
            self._runtimes[event.item_id] = float(seconds)

    @staticmethod
    def _sources(plan: Plan) -> list[str]:
        return [step.item.id for step in plan.steps if step.action is not Action.DUPLICATE]

    def _move(self, item_id: str, stage: Stage) -> None:
        old = self._stage.get(item_id)
        if old is None:
            return  # not an item of the plan
        self._work[old] -= 1
        self._work[stage] += 1
        for moved in (item_id, *self._copies.get(item_id, ())):
            self._counts[self._stage[moved]] -= 1
            self._counts[stage] += 1
            self._stage[moved] = stage

    def _pause(self, event: Paused) -> str | None:
        """A pause said once: not again while a pause for the same reason is on."""
        new = event.at >= self._paused_until or event.why != self._pause_why
        self._paused_until = max(self._paused_until, event.at + event.seconds)
        self._pause_why = event.why
        if not new:
            return None
        why = f": {event.why}" if event.why else ""
        return f"every request paused for {walltime.duration(event.seconds)}{why}"

    def _forget_sent(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.rate_window:
            self._sent.popleft()

    def runtime(self) -> float:
        """The mean run time of this run's successes (their ``predict_time``), or the expected
        run time before the first."""
        if not self._runtimes:
            return self.expected_runtime
        return sum(self._runtimes.values()) / len(self._runtimes)

    def snapshot(self, now: float) -> Snapshot:
        """The run at ``now``; O(items in flight)."""
        self._forget_sent(now)
        counts = {stage: self._counts[stage] for stage in Stage}
        runtime = self.runtime()
        # Duplicates follow their first item: the work left is the first items'.
        waiting = self._work[Stage.PENDING] + self._work[Stage.UPLOADING]
        running = [runtime - (now - since) for since in self._since.values()]
        eta = walltime.wall_time(
            waiting=waiting,
            running=running,
            concurrency=self.concurrency,
            runtime=runtime,
            requests=walltime.requests_needed(to_submit=waiting, in_flight=len(running)),
            rate_limit=self.rate_limit,
            rate_window=self.rate_window,
        )
        return Snapshot(
            total=len(self._stage),
            counts=counts,
            in_flight=len(running),
            concurrency=self.concurrency,
            window_used=len(self._sent),
            rate_limit=self.rate_limit,
            rate_window=self.rate_window,
            refused=self.refused,
            spent=self.spent,
            reserved=self.reserved,
            budget=self.budget,
            elapsed=now - self.started,
            eta=eta,
            runtime=runtime,
            learned=len(self._runtimes),
            paused_for=max(self._paused_until - now, 0.0),
            pause_why=self._pause_why,
        )
