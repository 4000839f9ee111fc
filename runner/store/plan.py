"""The resume plan: manifest items minus what the ledger already knows (pure).

Each item gets one action. An item's identity is its key, so reordering the manifest or
renaming an id changes nothing; editing a prompt makes a new key and a new render.
"""

from __future__ import annotations

import collections
import enum
import fnmatch
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from runner.config import RetryFailed, retries
from runner.jobs import JobState
from runner.manifest import Item
from runner.night import Order, submit_order
from runner.store.ledger import KeyState

#: The error code recorded when a succeeded prediction's video could not be fetched.
DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
#: Failures recorded by the runner while the prediction may still exist on the server: it ran
#: past --item-timeout (cancel is best effort), the server stopped knowing it for a long time,
#: or polls kept being refused. A later run asks the server about it before anything else.
TIMEOUT = "timeout"
LOST = "LOST"
POLL_ERROR = "POLL_ERROR"
RECHECK_CODES = frozenset({TIMEOUT, LOST, POLL_ERROR, "NOT_FOUND"})
#: A prediction cancelled at a night's deadline (--cancel-at-deadline): it was not billed, and
#: the item is submitted again by the next run without --retry-failed.
NIGHT_CANCELLED = "cancelled_at_deadline"


class Action(enum.StrEnum):
    SUBMIT = "submit"  # nothing on the server yet: upload if needed, create, poll, download
    POLL = "poll"  # a prediction id is recorded: poll it again, never create again
    RECONCILE = "reconcile"  # a create was sent but its answer not recorded: look it up first
    DOWNLOAD = "download"  # succeeded, but the file is missing or does not verify
    DONE = "done"  # the file is on disk and matches the ledger
    RECHECK = "recheck"  # given up on while it may still exist: ask the server first
    FAILED = "failed"  # failed in an earlier run; only --retry-failed submits it again
    DUPLICATE = "duplicate"  # same key as an earlier item: rendered once, for that item
    LEFT = "left"  # has work, but --only/--limit leave it out of this run: untouched


#: The actions that send a request or write a record.
WORK = frozenset({Action.SUBMIT, Action.POLL, Action.RECONCILE, Action.RECHECK, Action.DOWNLOAD})


@dataclass(frozen=True, slots=True)  # one per item: 100,000 in a large batch
class Step:
    item: Item
    action: Action
    state: KeyState
    duplicate_of: str | None = None


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    def count(self, action: Action) -> int:
        """How many steps have ``action`` (all actions are counted at the first call: a
        printout asks for each of them, and a batch has 100,000 steps)."""
        return self._counts.get(action, 0)

    @functools.cached_property
    def _counts(self) -> Mapping[Action, int]:
        return collections.Counter(step.action for step in self.steps)

    @property
    def selected(self) -> bool:
        """Whether --only/--limit left some items out of this run."""
        return any(step.action is Action.LEFT for step in self.steps)


def make_plan(
    items: Sequence[Item],
    states: Mapping[str, KeyState],
    *,
    file_ok: Mapping[str, bool],
    retry_failed: RetryFailed = False,
) -> Plan:
    """One step per item. ``file_ok[key]`` says whether a downloaded item's file verified."""
    steps: list[Step] = []
    first_with_key: dict[str, str] = {}
    for item in items:
        state = states.get(item.key) or KeyState(key=item.key, item=item.id)
        if item.key in first_with_key:
            steps.append(Step(item, Action.DUPLICATE, state, duplicate_of=first_with_key[item.key]))
            continue
        first_with_key[item.key] = item.id
        steps.append(Step(item, _action(state, file_ok.get(item.key, False), retry_failed), state))
    return Plan(tuple(steps))


def to_submit(plan: Plan, order: Order, typical: Callable[[str], float]) -> list[Step]:
    """The steps to create, in the order a run creates them (``night.submit_order``);
    ``typical(model)``: that model's typical run time, asked once per model."""
    once = functools.cache(typical)
    return submit_order(
        [step for step in plan.steps if step.action is Action.SUBMIT],
        order,
        priority=lambda step: step.item.priority,
        expected=lambda step: once(step.item.model),
    )


def past_runtimes(plan: Plan) -> Iterator[tuple[str, float]]:
    """(model, seconds) of every success the ledger records a run time for: what earlier runs
    learned of each model's run times."""
    for step in plan.steps:
        state = step.state
        if state.predict_time and state.state in (JobState.SUCCEEDED, JobState.DOWNLOADED):
            yield step.item.model, state.predict_time


def picks_up(state: KeyState) -> bool:
    """Whether a plain run (no ``--retry-failed``) takes up this failed item again by itself,
    at no cost: a paid video downloaded again, a prediction given up on asked about again."""
    return state.state is JobState.FAILED and _action(state, False, False) is not Action.FAILED


def _action(state: KeyState, file_ok: bool, retry_failed: RetryFailed) -> Action:
    if state.state is JobState.DOWNLOADED:
        return Action.DONE if file_ok else Action.DOWNLOAD
    if state.state is JobState.SUCCEEDED:
        return Action.DOWNLOAD
    if state.state is JobState.SUBMITTED:
        return Action.POLL
    if state.state is JobState.SUBMITTING:
        return Action.RECONCILE
    if state.state is JobState.FAILED and state.error_code == DOWNLOAD_FAILED and state.output_url:
        return Action.DOWNLOAD  # the video was paid for: fetching it again costs nothing
    if (
        state.state is JobState.FAILED
        and state.error_code in RECHECK_CODES
        and state.prediction_id is not None
    ):
        return Action.RECHECK  # it may have finished (and been billed) after we gave up
    if state.state is JobState.FAILED and state.error_code == NIGHT_CANCELLED:
        return Action.SUBMIT  # stopped for the night, not a failure of the item
    if state.state is JobState.FAILED:
        return Action.SUBMIT if retries(retry_failed, state.error_code) else Action.FAILED
    return Action.SUBMIT


def unmatched(ids: Sequence[str], only: Sequence[str]) -> list[str]:
    """The ``--only`` patterns (ids or globs) that match none of ``ids``."""
    return [pattern for pattern in only if not any(fnmatch.fnmatchcase(i, pattern) for i in ids)]


def select(plan: Plan, only: Sequence[str] = (), limit: int | None = None) -> Plan:
    """The plan with the work of the items ``only`` names (ids or globs; none: every item),
    the first ``limit`` of them in manifest order, and every other item's work LEFT as it is.
    Items without work (done, failed, duplicates) keep their action: the summary still shows
    the whole batch."""
    if not only and limit is None:
        return plan  # every item's work is taken
    taken = 0
    steps = []
    for step in plan.steps:
        if step.action in WORK:
            wanted = not only or any(fnmatch.fnmatchcase(step.item.id, p) for p in only)
            if wanted and (limit is None or taken < limit):
                taken += 1
            else:
                step = replace(step, action=Action.LEFT)
        steps.append(step)
    return Plan(tuple(steps))
