"""Settling a create whose answer was lost: did it make a prediction, and which?

Creates are not idempotent. When a create's answer never arrived (a crash between the request
and its ``submitted`` record, a timeout, a reset, a 5xx), the runner looks the prediction up
with ``GET /v1/executions`` (same model, created in a window around the attempt), fetches each
candidate to compare its echoed ``input`` with what was sent, and attaches to the match. Only a
lookup that answers and shows no such prediction frees the item to be submitted again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from runner.api.port import Api
from runner.engine import policy
from runner.engine.base import Job, RunContext, mono_from_iso
from runner.errors import ApiError
from runner.events import Events
from runner.jobs import JobState, valid_id
from runner.manifest import Item
from runner.store.ledger import KeyState

#: Failed executions lookups a lost create gets before it is left undecided.
RECONCILE_UNANSWERED_LOOKS = 3
#: How far around the recorded attempt to look: covers clock skew and slow answers.
WINDOW_BEFORE = timedelta(minutes=10)
WINDOW_AFTER = timedelta(minutes=30)


class Verdict(enum.StrEnum):
    FOUND = "found"  # the lost create made this prediction: attach to it
    ABSENT = "absent"  # the server shows no such prediction: submitting again is safe
    UNDECIDED = "undecided"  # the server offers no way to tell: leave it to the operator
    UNANSWERED = "unanswered"  # a lookup failed (a 5xx, a reset): ask again before deciding


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def window(ts: str | None, now: datetime) -> tuple[str, str]:
    """The ``from``/``to`` bounds to search around an attempt made at ``ts`` (ISO 8601)."""
    try:
        at = datetime.fromisoformat((ts or "").replace("Z", "+00:00"))
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        start, end = at - WINDOW_BEFORE, min(now, at + WINDOW_AFTER)
    except (ValueError, OverflowError):  # unreadable, or too near year 1 or 9999
        start, end = now - WINDOW_BEFORE, now
    return _rfc3339(start), _rfc3339(end + timedelta(minutes=1))


def same_input(sent: Mapping[str, Any], echoed: Mapping[str, Any]) -> bool:
    """Whether the server's echo matches what was sent (it may add defaults we did not send)."""
    return all(echoed.get(name) == value for name, value in sent.items())


async def find_prediction(
    client: Api,
    item: Item,
    state: KeyState,
    uploads: Mapping[str, str],
    *,
    exclude: Collection[str | None] = (),
    events: Events,
) -> tuple[Verdict, str | None]:
    """Look for the prediction a lost create for ``item`` may have made; lookups that fail are
    said to ``events``."""
    if item.image_url is not None:
        image_url: str | None = item.image_url
    else:
        image_url = uploads.get(item.image_sha256 or "")
    if image_url is None:
        # The image was never uploaded, so no create with it can have been sent.
        return Verdict.ABSENT, None
    sent = item.request_input(image_url)
    start, end = window(state.submitting_ts, datetime.now(UTC))
    try:
        rows = await client.executions(model=item.model, **{"from": start, "to": end})
    except ApiError as exc:
        events.say(
            logging.WARNING, "%s: the executions lookup failed: %s", item.id, exc, item_id=item.id
        )
        return Verdict.UNANSWERED, None
    unanswered = undecided = False
    for row in rows:
        candidate = row.get("id")
        if not valid_id(candidate) or candidate in exclude:
            continue
        assert isinstance(candidate, str)
        try:
            prediction = await client.get(candidate)
        except ApiError as exc:
            events.say(
                logging.WARNING,
                "%s: could not fetch candidate %s: %s",
                item.id,
                candidate,
                exc,
                item_id=item.id,
            )
            unanswered = True
            continue
        if prediction.input is None:
            undecided = True
        elif same_input(sent, prediction.input):
            return Verdict.FOUND, candidate
    if unanswered:
        return Verdict.UNANSWERED, None
    return (Verdict.UNDECIDED if undecided else Verdict.ABSENT), None


async def listed(
    client: Api, item: Item, state: KeyState, prediction_id: str, *, events: Events
) -> bool:
    """Whether ``GET /v1/executions`` lists ``prediction_id`` (a prediction that answers 404 to
    polls may still exist); False too if the lookup fails (said to ``events``)."""
    start, end = window(state.submitted_ts or state.submitting_ts, datetime.now(UTC))
    try:
        rows = await client.executions(model=item.model, **{"from": start, "to": end})
    except ApiError as exc:
        events.say(
            logging.WARNING, "%s: the executions lookup failed: %s", item.id, exc, item_id=item.id
        )
        return False
    return any(row.get("id") == prediction_id for row in rows)


class Reconciling(RunContext):
    """A create whose answer was lost, settled from the executions list as the engine sees it:
    when the list has had time to show it, how often to look, what to record."""

    async def _reconcile(self, job: Job) -> Verdict:
        """Settle a create whose answer was lost: attach to its prediction, or free the item.

        The executions list may lag: the prediction counts as absent only once lookups have
        shown nothing for ``reconcile_settle`` seconds after the create's answer came (after a
        crash: could at the latest have come). A lookup that fails (the list answered 500s in
        production) is asked again, for another ``reconcile_settle`` past that and at least
        RECONCILE_UNANSWERED_LOOKS times; only then is the item left undecided.
        """
        start = anyio.current_time()
        sent = mono_from_iso(job.state.submitting_ts, start)
        # The server may have made the prediction at any moment until the create's answer came
        # (or the client gave up on it), and the list lags from then: count from that moment.
        answered = start if sent is None else min(start, sent + self.limits.request_timeout)
        settled_at = answered + self.limits.reconcile_settle
        looks = unanswered = 0
        while True:
            # What counts is when the list was asked, not when the candidates' polls were done:
            # a list read before the settle time may lack a row that shows a moment later.
            asked = anyio.current_time()
            verdict, found = await find_prediction(
                self.api(job),
                job.item,
                job.state,
                self.uploads,
                exclude=self.known_ids,
                events=self.events,
            )
            looks += 1
            now = anyio.current_time()
            wait = policy.backoff(looks, base=2 * self.limits.fault_wait, cap=30.0, rng=self.rng)
            if verdict is Verdict.UNANSWERED:
                unanswered += 1
                late = max(settled_at, start) + self.limits.reconcile_settle
                if now >= late and unanswered >= RECONCILE_UNANSWERED_LOOKS:
                    break
            elif verdict is Verdict.FOUND or asked >= settled_at:
                break
            else:
                wait = max(0.0, min(settled_at - now, wait))
            self.say(
                logging.INFO,
                "%s: its create is not in the executions list yet; looking again in %.1f s",
                job.item.id,
                wait,
            )
            await anyio.sleep(wait)
        if verdict is Verdict.FOUND:
            assert found is not None
            await self._record(job, JobState.SUBMITTED, prediction_id=found, reconciled=True)
            job.submitted_at = mono_from_iso(job.state.submitting_ts, anyio.current_time())
            job.last_poll_at = None
            self.say(logging.INFO, "%s: found its prediction %s on the server", job.item.id, found)
        elif verdict is Verdict.ABSENT:
            self.spend.release(job.item.key)
            await self._record(
                job, JobState.PENDING, reason="reconciled: no prediction was created"
            )
        elif self.config.resubmit_ambiguous:
            self.spend.release(job.item.key)  # the new create reserves again
            await self._record(job, JobState.PENDING, reason="ambiguous: resubmitting as asked")
            return Verdict.ABSENT
        else:
            self.say(
                logging.WARNING,
                "%s: cannot tell whether its lost create made a prediction; left for you to "
                "decide (--resubmit-ambiguous submits it again)",
                job.item.id,
            )
            verdict = Verdict.UNDECIDED
        return verdict
