"""The batch runner: the task group that drives a plan through the phases of each item.

One feeder hands items to in-flight slots (at most ``concurrency`` predictions on the server
per API key, each key an account of its own: ``accounts``);
each slot's task uploads the image if needed, creates the prediction, polls it at the pace
``runner.engine.policy`` sets within the shared request window, and on success hands the video to a
download (downloads take no slot and no place in the request window).

The money rules (each a row of ``decisions``' table, carried out by ``create``, ``poll`` and
``fetch``):

- **Write-ahead, and stop means stop.** A create waits for its place in the request window
  like any request, and a stop ends that wait: it is never sent. Once the window grants it,
  the ``submitting`` record is written and fsynced, the create is sent and its answer is
  recorded, all shielded from cancellation, so a stop never leaves a paid prediction
  unrecorded. A second stop cancels even that; the ledger's ``submitting`` then makes the
  next run reconcile.
- **An ambiguous create is never followed by a blind one.** Its prediction is looked up in
  ``GET /v1/executions`` until the list has had ``reconcile_settle`` seconds to catch up;
  attempts per item are capped by ``--max-attempts``; a server that answers several creates
  in a row with nonsense stops the batch (exit 7).
- **A created prediction is not given up lightly.** A 404 is polled with growing back-off for
  ``lost_after`` seconds and looked up in executions before the item is called lost; a
  timeout counts only the time this run watched, after a first poll; a cancelled prediction
  is polled once more, since cancel is best effort and it may still have succeeded. Items
  failed as lost, timed out or unpollable are polled again by later runs before any retry.
- **No item fails for a network reason.** An API that cannot be reached, or asks to wait too
  long, stops the run with its items pending (exit 6); a full or read-only disk stops it with
  a storage error (exit 5).
"""

from __future__ import annotations

import gc
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import anyio
from anyio.abc import TaskGroup

from runner.api.port import Api, VideoFetcher
from runner.api.protocol import Prediction, RemoteStatus
from runner.api.ratelimit import RateLimiter
from runner.api.transfers import SessionFetcher
from runner.engine.accounts import Account, Accounts
from runner.engine.base import RUN_STOPPERS, Job, RunOutcome, mono_from_iso
from runner.engine.create import Creating
from runner.engine.fetch import Fetching
from runner.engine.poll import Polling
from runner.engine.reconcile import Verdict
from runner.errors import (
    AccountError,
    ApiBrokenError,
    ApiUnavailableError,
    InternalError,
    StorageError,
)
from runner.jobs import JobState
from runner.keys import fingerprint
from runner.night import GRACE_QUANTILE, NightStop
from runner.store.plan import Action, to_submit
from runner.walltime import duration

__all__ = ["BatchRunner"]

#: New objects (allocations less deallocations) between the collector's young passes during
#: a run. Reference counting frees nearly every object; the passes are for cycles, and this
#: many uncollected ones (a few MB at most) are nothing beside what a run holds.
YOUNG_OBJECTS = 50_000


class BatchRunner(Creating, Polling, Fetching):
    """Runs one plan to the end (or to a stop) and returns its RunOutcome."""

    async def run(
        self, session: aiohttp.ClientSession, limiters: Sequence[RateLimiter]
    ) -> RunOutcome:
        """Run against the real API at ``config.api_base`` over ``session`` (which downloads
        the videos too), with one account per key of ``config.api_keys``: every request of a
        key's account takes its place in that key's window, ``limiters[i]`` for the i-th key."""
        accounts = [
            Account.of_key(session, self.config.api_base, key, limiter, self.limits)
            for key, limiter in zip(self.config.api_keys, limiters, strict=True)
        ]
        return await self.run_on(Accounts(accounts), SessionFetcher(session, self.events))

    async def run_with(
        self, client: Api, fetcher: VideoFetcher, limiter: RateLimiter
    ) -> RunOutcome:
        """Run on one account: against ``client``, downloading through ``fetcher``
        (``runner.api.port``: tests hand in fakes). ``limiter`` is the window ``client`` sends
        through: the engine reads its spare share to pace polls and wakes its waiters when it
        stops."""
        name = fingerprint(self.config.api_key)
        account = Account(name, client, limiter, self.limits.concurrency)
        return await self.run_on(Accounts([account]), fetcher)

    async def run_on(self, accounts: Accounts, fetcher: VideoFetcher) -> RunOutcome:
        """Run with ``accounts`` (``runner.engine.accounts``), downloading through
        ``fetcher``."""
        self.accounts = accounts
        self.fetcher = fetcher
        for step in self.plan.steps:
            self.outcome.jobs[step.item.id] = Job(step.item, step.state)
        self.begin_night()
        # What exists now (items, plan, config) lives as long as the run: kept out of the
        # collector's full passes, which at a thousand in flight held the loop up to ~0.1 s.
        # And its young passes come after YOUNG_OBJECTS new objects, not 700: each found
        # only the objects of requests under way, at 5-8 % of the run's CPU.
        gc.freeze()
        thresholds = gc.get_threshold()
        if thresholds[0]:  # 0: automatic collection is off, and stays off
            gc.set_threshold(max(YOUNG_OBJECTS, thresholds[0]), *thresholds[1:])
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                if self.deadline is not None:
                    tg.start_soon(self._watch_deadline)
                for step in self.plan.steps:
                    job = self.outcome.jobs[step.item.id]
                    if step.action is Action.DOWNLOAD:
                        self._spawn(tg, self._download_only, job)
                    elif step.action in (Action.POLL, Action.RECONCILE, Action.RECHECK):
                        self.accounts.force(self.account(job))
                        self._spawn(tg, self._in_flight, job, step.action)
                for step in to_submit(self.plan, self.night.order, self._typical_runtime):
                    account = await self.accounts.acquire()
                    if account is None:  # every key refused creates
                        break
                    job = self.outcome.jobs[step.item.id]
                    job.account = account
                    why = None if self._stop_submitting else self.night_refuses(job)
                    if why is not None:
                        self.stop_for_night(why, job)
                        self.accounts.release(account)
                        break
                    # Reserved here, in the order of creates, so a budget admits the first.
                    if self._stop_submitting or not self._reserve(job):
                        if not self._stop_submitting:
                            self._budget_reached(job)
                        self.accounts.release(account)
                        break
                    self.night_items += 1
                    self._spawn(tg, self._in_flight, job, step.action)
                self._feeding = False
                self._maybe_idle()
        except* AccountError as group:
            self.outcome.account_error = str(group.exceptions[0])
        except* StorageError as group:
            self._stopped("storage", group.exceptions[0])
        except* ApiUnavailableError as group:
            self._stopped("api_unavailable", group.exceptions[0])
        except* ApiBrokenError as group:
            self._stopped("api_broken", group.exceptions[0])
        except* Exception as group:  # a bug: the run still ends with a summary, not a traceback
            bug = group.exceptions[0]
            self.say(logging.DEBUG, "%s", "".join(traceback.format_exception(bug)).rstrip())
            self._stopped("internal", InternalError.of(bug))
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        return self.outcome

    def _spawn(self, tg: TaskGroup, work: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Start one item's task in ``tg``, counted, so the run knows when all have ended."""
        self._working += 1

        async def counted() -> None:
            try:
                await work(*args)
            finally:
                self._working -= 1
                self._maybe_idle()

        tg.start_soon(counted)

    def _maybe_idle(self) -> None:
        if not self._feeding and self._working == 0:
            self._idle.set()

    async def _watch_deadline(self) -> None:
        """At the deadline, stop creating; wait up to the grace for the predictions still
        running (and their downloads); then (with --cancel-at-deadline, cancel them and watch
        for ``cancel_grace``) end the run: what still runs is picked up by the next one."""
        assert self.deadline is not None
        if await self._idle_within(self.deadline - anyio.current_time()):
            return
        self.stop_for_night(NightStop.DEADLINE)
        grace = self.night.grace
        if grace is None:
            grace = self.runtimes.quantile(GRACE_QUANTILE)
        self.say(
            logging.INFO,
            "the deadline has come: waiting up to %s for the predictions still running",
            duration(grace),
        )
        if await self._idle_within(grace):
            return
        if self.night.cancel_at_deadline:
            await self._cancel_running()
            if await self._idle_within(self.limits.cancel_grace):
                return
        self.say(
            logging.WARNING,
            "the grace after the deadline is over: %d predictions still running are left for "
            "the next run (not cancelled)",
            len(self._running()),
        )
        self.cancel()

    async def _idle_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the run to be idle (every item's task ended); whether
        it was."""
        with anyio.move_on_after(seconds):
            await self._idle.wait()
        return self._idle.is_set()

    async def _cancel_running(self) -> None:
        """--cancel-at-deadline: ask the server to cancel every prediction still running (best
        effort: the polls tell how each ends)."""
        for job in list(self.outcome.jobs.values()):
            prediction_id = job.state.prediction_id  # (one may end while others are asked)
            if job.state.state is not JobState.SUBMITTED or prediction_id is None:
                continue
            job.night_cancelled = True
            if await self._ask_cancel(job, prediction_id, "at the deadline"):
                self.say(logging.INFO, "%s: cancel asked at the deadline", job.item.id)

    def cancel(self) -> None:
        """End the run now; creates already sent still get their answer recorded."""
        self.stop_submitting()
        if self._scope is not None:
            self._scope.cancel()

    def force_cancel(self) -> None:
        """End the run at once, creates on the wire included (a second Ctrl-C). Their
        ``submitting`` records stay, so the next run looks their predictions up."""
        for scope in list(self._shielded):
            scope.cancel()
        self.cancel()

    # -- one prediction, from create to its end -----------------------------------------------

    async def _in_flight(self, job: Job, action: Action) -> None:
        try:
            prediction = await self._run_prediction(job, action)
        except RUN_STOPPERS:
            self.stop_submitting()  # creates still waiting for the window give up at once
            raise
        finally:
            self.accounts.release(self.account(job))
            self.account(job).one_ended()
        if prediction is not None and prediction.status is RemoteStatus.SUCCESS:
            await self._download(job)

    async def _run_prediction(self, job: Job, action: Action) -> Prediction | None:
        """Create (unless resuming), poll to the end, resubmit retryable failures."""
        now = anyio.current_time()
        if action in (Action.POLL, Action.RECHECK):
            resumed_at = mono_from_iso(job.state.submitted_ts, now)
            job.submitted_at = now if resumed_at is None else resumed_at
        if action is Action.RECHECK:
            action = await self._recheck(job)
            if action is Action.DONE:
                return None
        elif action is Action.RECONCILE:
            verdict = await self._reconcile(job)
            if verdict is Verdict.UNDECIDED:
                return None
            if verdict is Verdict.ABSENT:
                action = Action.SUBMIT
        while True:
            if action is Action.SUBMIT and not await self._submit(job):
                return None
            prediction = await self._poll(job)
            if prediction is None:
                return None
            if prediction.cost_problem:
                self.say(logging.WARNING, "%s: %s", job.item.id, prediction.cost_problem)
            # A failed or cancelled prediction is not billed; a success costs metrics.cost
            # (unknown: the estimate stands).
            billed = prediction.cost if prediction.status is RemoteStatus.SUCCESS else 0
            self.spend.settle(job.item.key, billed)
            if prediction.status is RemoteStatus.SUCCESS:
                await self._record_success(job, prediction)
                self.say(
                    logging.INFO,
                    "%s: succeeded (%.0f s)",
                    job.item.id,
                    prediction.predict_time or 0,
                )
                return prediction
            retryable = prediction.retryable or await self._upload_went_away(job, prediction)
            retry = (
                retryable
                and job.attempts_this_run < self.limits.max_attempts
                and not self._stop_submitting
            )
            await self._record(
                job,
                JobState.FAILED,
                prediction_id=prediction.id,
                error=prediction.error,
                error_code=prediction.error_code,
                retryable=retryable or None,
                cost=prediction.cost,
            )
            if not retry:
                self.say(logging.WARNING, "%s: failed: %s", job.item.id, prediction.error)
                return prediction
            self.say(
                logging.INFO,
                "%s: retryable failure (%s); submitting again",
                job.item.id,
                prediction.error,
            )
            action = Action.SUBMIT
