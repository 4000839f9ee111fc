"""Polling a prediction to its end: at the pace ``policy`` sets, each failed poll's step
taken from the decision table (``decisions``), a prediction the server does not know given
``lost_after`` and a look in the executions list, one past ``--item-timeout`` cancelled and
watched for ``cancel_grace``; and the one look at a prediction an earlier run gave up on.
"""

from __future__ import annotations

import logging
from functools import partial

from runner import clock
from runner.api.protocol import Prediction, RemoteStatus
from runner.config import retries
from runner.engine import decisions, policy
from runner.engine.base import Job, RunContext
from runner.engine.decisions import Outcome, Phase, Step
from runner.engine.reconcile import listed
from runner.errors import RunnerError
from runner.events import PollDue
from runner.jobs import JobState
from runner.store.plan import LOST, NIGHT_CANCELLED, POLL_ERROR, TIMEOUT, Action

#: The same 4xx answer to this many polls in a row: the server will not tell us more.
MAX_POLL_REFUSALS = 5
#: Poll failures are logged on the first and then every this many.
LOG_EVERY = 10


class Polling(RunContext):
    """The poll phase of an item's life."""

    async def _recheck(self, job: Job) -> Action:
        """An item an earlier run gave up on while its prediction may still exist (timed out,
        lost, unpollable): ask the server once before anything else. Returns POLL to keep
        watching it (the outcome is then recorded as usual), SUBMIT to create it again
        (--retry-failed, and the server has no such prediction or it ended in failure), or
        DONE to leave it as it is."""
        prediction_id = job.state.prediction_id
        assert prediction_id is not None
        try:
            prediction = await self.api(job).get(prediction_id)
        except RunnerError as exc:
            outcome = decisions.classify(exc)
            if decisions.decide(Phase.RECHECK, outcome) is Step.STOP_RUN:
                raise
            if outcome is Outcome.NOT_FOUND:
                self.say(
                    logging.INFO,
                    "%s: its prediction %s is still unknown to the server",
                    job.item.id,
                    prediction_id,
                )
                again = retries(self.config.retry_failed, job.state.error_code)
                return Action.SUBMIT if again else Action.DONE
            self.say(
                logging.WARNING, "%s: could not look at its prediction again: %s", job.item.id, exc
            )
            return Action.DONE
        if not prediction.status.terminal or prediction.status is RemoteStatus.SUCCESS:
            self.say(
                logging.INFO,
                "%s: its prediction %s is %s after all",
                job.item.id,
                prediction_id,
                prediction.raw_status,
            )
            return Action.POLL
        await self._record(
            job,
            JobState.FAILED,
            prediction_id=prediction_id,
            error=prediction.error,
            error_code=prediction.error_code or prediction.status.value,
            cost=prediction.cost,
        )
        self.spend.settle(job.item.key, 0)
        again = retries(self.config.retry_failed, job.state.error_code)
        return Action.SUBMIT if again else Action.DONE

    async def _poll(self, job: Job) -> Prediction | None:
        """Poll until the prediction ends; None if it was given up on (recorded) or the run
        stopped.

        ``--item-timeout`` counts the time this run has watched the prediction, and is applied
        only after a poll: a prediction resumed after a long pause is asked first. Past it the
        prediction is cancelled and polled on for ``cancel_grace``: cancel is best effort, and
        a prediction that succeeds anyway is billed, so it is downloaded like any other.
        """
        prediction_id = job.state.prediction_id
        assert prediction_id is not None
        submitted = job.submitted_at if job.submitted_at is not None else clock.now()
        deadline = max(clock.now(), submitted) + self.limits.item_timeout
        missing_since: float | None = None
        errors = 0
        last_error: RunnerError | None = None
        cancelling: tuple[str, str] | None = None  # cancel sent: the failure if it takes effect
        # spread as the whole run's in flight, every key's: one event loop polls them all
        spread = policy.poll_offset(prediction_id, self.accounts.limit, self.limits.poll_min)
        while True:
            now = clock.now()
            at = policy.next_poll_at(
                now=now,
                submitted_at=submitted + spread,  # not all polled at once
                last_poll_at=job.last_poll_at,
                model=self.runtimes,
                poll_min=self.limits.poll_min,
                spare=self.account(job).limiter.spare(),
            )
            trouble = errors + (0 if missing_since is None else 1 + int(now - missing_since))
            if trouble:
                pause = policy.backoff(
                    min(trouble, 10), base=self.limits.poll_min, cap=60.0, rng=self.rng
                )
                at = max(at, now + pause)
            at = max(now, policy.on_tick(at, self.limits.poll_min))  # due together, go together
            await clock.sleep(at - now)
            self.events.emit(PollDue(job.item.id, prediction_id, at))  # its lag: make bench
            last_miss = job.last_poll_at
            age_last = 0.0 if last_miss is None else last_miss - submitted
            try:
                prediction = await self.api(job).get(
                    prediction_id,
                    priority=partial(self._poll_priority, submitted, age_last),
                )
            except RunnerError as exc:
                now = clock.now()
                outcome = decisions.classify(exc)
                step = decisions.decide(Phase.POLL, outcome)
                if step is Step.STOP_RUN:
                    self.stop_submitting()
                    raise
                if step is Step.MISSING:
                    if missing_since is None:
                        missing_since = now
                        self.say(
                            logging.WARNING,
                            "%s: the server does not know prediction %s (yet?); polling on",
                            job.item.id,
                            prediction_id,
                        )
                    elif now - missing_since >= self.limits.lost_after:
                        shown = await listed(
                            self.api(job), job.item, job.state, prediction_id, events=self.events
                        )
                        if not decisions.missing_for_good(
                            now - missing_since, self.limits.lost_after, shown
                        ):
                            self.say(
                                logging.INFO,
                                "%s: %s is listed in executions; polling on",
                                job.item.id,
                                prediction_id,
                            )
                            missing_since = now
                            continue
                        await self._record(
                            job,
                            JobState.FAILED,
                            prediction_id=prediction_id,
                            error=f"the server has not known prediction {prediction_id} for "
                            f"{now - missing_since:.0f} s and does not list it; a later run "
                            "asks again",
                            error_code=LOST,
                        )
                        return None
                    continue
                errors += 1
                last_error = exc
                if errors == 1 or errors % LOG_EVERY == 0:
                    self.say(logging.WARNING, "%s: poll failed (%s); polling on", job.item.id, exc)
                refused = outcome in (Outcome.REFUSED, Outcome.PROTOCOL)
                if refused and decisions.fail_after_refusals(errors, MAX_POLL_REFUSALS):
                    await self._record(
                        job,
                        JobState.FAILED,
                        prediction_id=prediction_id,
                        error=f"{errors} polls in a row were refused: {exc}; a later run asks "
                        "again",
                        error_code=POLL_ERROR,
                    )
                    return None
            else:
                missing_since = None
                errors = 0
                seen = clock.now()  # the answer's arrival: when we know
                if prediction.status_problem:
                    self.say_once(logging.WARNING, prediction.status_problem)
                job.last_poll_at = seen
                if prediction.sent_at is not None:
                    job.last_poll_at = prediction.sent_at  # what the server saw: when it was asked
                if prediction.status.terminal:
                    if self.observer is not None:
                        self.observer(prediction_id, seen)
                    if prediction.status is RemoteStatus.SUCCESS:
                        if cancelling is not None:
                            self.say(
                                logging.INFO,
                                "%s: succeeded after all while being cancelled",
                                job.item.id,
                            )
                        runtime = policy.finished_age(submitted, last_miss, seen)
                        self.runtimes.observe(runtime)
                        self.model_runtime(job.item.model).observe(runtime)
                    elif job.night_cancelled and prediction.status is RemoteStatus.CANCELLED:
                        await self._record(
                            job,
                            JobState.FAILED,
                            prediction_id=prediction_id,
                            error="cancelled at the deadline (--cancel-at-deadline); the next "
                            "run submits it again",
                            error_code=NIGHT_CANCELLED,
                        )
                        self.spend.settle(job.item.key, 0)  # a cancelled prediction is not billed
                        return None
                    elif cancelling is not None and prediction.status is RemoteStatus.CANCELLED:
                        await self._record_timeout(job, prediction_id, cancelling, ended=True)
                        return None
                    return prediction
            if clock.now() > deadline:  # Outcome.DEADLINE: Step.CANCEL
                if cancelling is not None:
                    await self._record_timeout(job, prediction_id, cancelling, ended=False)
                    return None
                cancelling = await self._cancel_late(
                    job, prediction_id, last_error if errors else None
                )
                deadline = clock.now() + self.limits.cancel_grace

    def _poll_priority(self, submitted: float, age_last: float, now: float) -> float:
        """Lower goes first: minus the chance this poll finds the prediction finished."""
        return -policy.poll_score(self.runtimes, now - submitted, age_last)

    async def _ask_cancel(self, job: Job, prediction_id: str, why: str) -> bool:
        """Ask the server to cancel ``job``'s prediction; whether it took the request. Cancel is
        best effort: whatever it answers, polling tells how the prediction ends (an answer that
        stops the run is raised)."""
        try:
            await self.api(job).cancel(prediction_id)
        except RunnerError as exc:
            if decisions.decide(Phase.CANCEL, decisions.classify(exc)) is not Step.POLL_ON:
                raise
            self.say(logging.WARNING, "%s: cancel %s failed: %s", job.item.id, why, exc)
            return False
        return True

    async def _cancel_late(
        self, job: Job, prediction_id: str, poll_error: RunnerError | None
    ) -> tuple[str, str]:
        """Cancel a prediction past ``--item-timeout``. Cancel is best effort: the caller polls
        on to learn how it ends. Returns the failure (error, code) to record if it ends
        cancelled: a timeout, or the poll error that kept us blind."""
        if await self._ask_cancel(job, prediction_id, "after timeout"):
            self.say(
                logging.WARNING,
                "%s: no result after %.0f s; cancel asked, watching how it ends",
                job.item.id,
                self.limits.item_timeout,
            )
        watched = self.limits.item_timeout
        if poll_error is not None:
            error = f"no usable answer to polls for {watched:.0f} s: {poll_error}; cancelled"
            return error, POLL_ERROR
        return f"no result after {watched:.0f} s of watching: cancelled", TIMEOUT

    async def _record_timeout(
        self, job: Job, prediction_id: str, failure: tuple[str, str], *, ended: bool
    ) -> None:
        """Record a prediction given up on after its cancel: ``ended`` if the server shows it
        cancelled (not billed), else still running (a later run asks about it again)."""
        error, code = failure
        if not ended:
            error = (
                f"{error}, but after {self.limits.cancel_grace:.0f} s more the server still "
                "shows it running; a later run asks again"
            )
        await self._record(
            job, JobState.FAILED, prediction_id=prediction_id, error=error, error_code=code
        )
        self.spend.settle(job.item.key, 0)  # a cancelled prediction is not billed
