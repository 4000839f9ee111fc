"""The batch runner: the task group that wires manifest, ledger, client and downloads together.

One feeder hands items to in-flight slots (at most ``concurrency`` predictions on the server);
each slot's task uploads the image if needed, creates the prediction (write-ahead: a
``submitting`` record before the request, ``submitted`` after, both fsynced), polls it at the
pace ``runner.policy`` sets within the shared request budget, and on success hands the video to
a download task (downloads take no slot and no budget).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import aiohttp
import anyio

from runner import policy
from runner.budget import RequestBudget
from runner.client import EachlabsClient
from runner.config import RunConfig
from runner.download import GONE, fetch_video, verify, video_path
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiError,
    ApiStatusError,
    CapacityError,
    DownloadError,
    NotFoundError,
    TransportError,
)
from runner.images import sniff_content_type
from runner.jobs import JobState, transition
from runner.ledger import EVENT_UPLOADED, KeyState, LedgerWriter, apply
from runner.manifest import Item
from runner.plan import DOWNLOAD_FAILED, Action, Plan
from runner.protocol import Prediction, RemoteStatus
from runner.reconcile import Verdict, find_prediction
from runner.spend import SpendLimit

log = logging.getLogger("runner")

#: Downloads running at once; they share the machine's bandwidth, not the API budget.
DOWNLOAD_CONCURRENCY = 4
#: Consecutive 404s on a prediction we created before it is declared lost.
MAX_NOT_FOUND = 5


@dataclass
class Job:
    """The live state of one item during a run."""

    item: Item
    state: KeyState
    submitted_at: float | None = None  # monotonic
    last_poll_at: float | None = None
    attempts_this_run: int = 0


@dataclass
class Outcome:
    """What a run ended with, for the summary and the exit code."""

    jobs: dict[str, Job] = field(default_factory=dict)  # by item id
    account_error: str | None = None
    budget_reached: bool = False
    interrupted: bool = False


class Slots:
    """Predictions in flight on the server: at most ``limit`` taken by new creates.

    Resumed predictions are already running on the server; they are counted with ``force``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = anyio.Event()

    async def acquire(self) -> None:
        while self.used >= self.limit:
            await self._changed.wait()
        self.used += 1

    def force(self) -> None:
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        self._changed.set()
        self._changed = anyio.Event()


def _mono_from_iso(ts: str | None, now_mono: float) -> float | None:
    if not ts:
        return None
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return now_mono - max(0.0, (datetime.now(then.tzinfo) - then).total_seconds())


class BatchRunner:
    """Runs one plan to the end (or to a stop) and returns its Outcome."""

    def __init__(
        self,
        config: RunConfig,
        plan: Plan,
        ledger: LedgerWriter,
        uploads: dict[str, str],
        *,
        known_ids: set[str] | None = None,
        rng: random.Random | None = None,
        observer: Callable[[str, float], None] | None = None,
        spend: SpendLimit | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.plan = plan
        self.ledger = ledger
        self.uploads = dict(uploads)
        #: Every prediction id the ledger has ever attached to an item: never attach another.
        self.known_ids = set(known_ids or ())
        self._scope: anyio.CancelScope | None = None
        self.rng = rng or random.Random()
        #: Called with (prediction id, monotonic time) when a prediction's end is first seen.
        self.observer = observer
        self.runtimes = policy.RuntimeModel(config.limits.expected_runtime)
        #: What the batch has spent and reserved, against --budget (no cap without one).
        self.spend = spend or SpendLimit(None)
        self.outcome = Outcome()
        self._stop_submitting = False
        self._upload_locks: dict[str, anyio.Lock] = {}
        self._creates_paused_until = 0.0
        self._ended = anyio.Event()  # set (and renewed) whenever one of our predictions ends
        self._downloads = anyio.CapacityLimiter(DOWNLOAD_CONCURRENCY)
        self.client: EachlabsClient
        self.session: aiohttp.ClientSession

    # -- entry point -------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession, budget: RequestBudget) -> Outcome:
        self.session = session
        self.budget = budget
        self.client = EachlabsClient(
            session,
            self.config.api_base,
            self.config.api_key,
            budget,
            request_timeout=self.limits.request_timeout,
        )
        self.slots = Slots(self.limits.concurrency)
        for step in self.plan.steps:
            self.outcome.jobs[step.item.id] = Job(step.item, step.state)
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                for step in self.plan.steps:
                    job = self.outcome.jobs[step.item.id]
                    if step.action is Action.DOWNLOAD:
                        tg.start_soon(self._download, job)
                    elif step.action in (Action.POLL, Action.RECONCILE):
                        self.slots.force()
                        tg.start_soon(self._in_flight, job, step.action)
                for step in self.plan.steps:
                    if step.action is not Action.SUBMIT:
                        continue
                    await self.slots.acquire()
                    job = self.outcome.jobs[step.item.id]
                    # Reserved here, in manifest order, so a budget admits the first items.
                    if self._stop_submitting or not self._reserve(job):
                        if not self._stop_submitting:
                            self._budget_reached(job)
                        self.slots.release()
                        break
                    tg.start_soon(self._in_flight, job, step.action)
        except* AccountError as group:
            self.outcome.account_error = str(group.exceptions[0])
        return self.outcome

    def stop_submitting(self) -> None:
        """No new create is sent after this (a signal, an account error, ...)."""
        self._stop_submitting = True

    def _reserve(self, job: Job) -> bool:
        """Hold this item's price against the budget unless it holds it already."""
        key = job.item.key
        return self.spend.holds(key) or self.spend.reserve(key, job.item.price_usd)

    def _budget_reached(self, job: Job) -> None:
        """The next create could take the batch over --budget: no new item is started (items
        that hold their reservation go on)."""
        if not self.outcome.budget_reached:
            self.outcome.budget_reached = True
            log.warning(
                "%s: the budget of $%.2f is reached ($%.2f spent, $%.2f reserved); "
                "submitting stopped, the remaining items stay pending",
                job.item.id,
                self.spend.budget_usd or 0.0,
                self.spend.spent,
                self.spend.reserved,
            )

    def _refused(self, exc: AccountError) -> None:
        """The account cannot submit (401/402): stop creating; predictions in flight go on."""
        if self.outcome.account_error is None:
            self.outcome.account_error = str(exc)
            log.error("the API refused the account: %s; submitting stopped", exc)
        self.stop_submitting()

    def cancel(self) -> None:
        """End the run now; creates already sent still get their answer recorded."""
        self._stop_submitting = True
        if self._scope is not None:
            self._scope.cancel()

    # -- one prediction, from create to its end -----------------------------------------------

    async def _in_flight(self, job: Job, action: Action) -> None:
        try:
            prediction = await self._run_prediction(job, action)
        finally:
            self.slots.release()
            self._ended.set()
            self._ended = anyio.Event()
        if prediction is not None and prediction.status is RemoteStatus.SUCCESS:
            await self._download(job)

    async def _run_prediction(self, job: Job, action: Action) -> Prediction | None:
        """Create (unless resuming), poll to the end, resubmit retryable failures."""
        now = anyio.current_time()
        if action is Action.POLL:
            resumed_at = _mono_from_iso(job.state.submitted_ts, now)
            job.submitted_at = now if resumed_at is None else resumed_at
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
            # A failed or cancelled prediction is not billed; a success costs metrics.cost.
            billed = prediction.cost if prediction.status is RemoteStatus.SUCCESS else 0.0
            self.spend.settle(job.item.key, billed)
            if prediction.status is RemoteStatus.SUCCESS:
                await self._record_success(job, prediction)
                log.info("%s: succeeded (%.0f s)", job.item.id, prediction.predict_time or 0)
                return prediction
            retry = (
                prediction.retryable
                and job.attempts_this_run < self.limits.max_attempts
                and not self._stop_submitting
            )
            await self._record(
                job,
                JobState.FAILED,
                prediction_id=prediction.id,
                error=prediction.error,
                error_code=prediction.error_code,
                retryable=prediction.retryable or None,
                cost=prediction.cost,
            )
            if not retry:
                log.warning("%s: failed: %s", job.item.id, prediction.error)
                return prediction
            log.info("%s: retryable failure (%s); submitting again", job.item.id, prediction.error)
            action = Action.SUBMIT

    async def _record_success(self, job: Job, prediction: Prediction) -> None:
        await self._record(
            job,
            JobState.SUCCEEDED,
            prediction_id=prediction.id,
            output_url=prediction.output_url,
            predict_time=prediction.predict_time,
            cost=prediction.cost,
        )

    async def _record(self, job: Job, event: JobState, **fields: object) -> None:
        """Append one event for ``job`` and apply it; IllegalTransition if the move is a bug."""
        transition(job.state.state, event)
        record = await self.ledger.append(job.item.id, job.item.key, event.value, **fields)
        job.state = apply(job.state, record)
        if job.state.prediction_id:
            self.known_ids.add(job.state.prediction_id)

    # -- create --------------------------------------------------------------------------------

    async def _image_url(self, job: Job) -> str:
        item = job.item
        if item.image_url is not None:
            return item.image_url
        assert item.image_path is not None and item.image_sha256 is not None
        sha = item.image_sha256
        lock = self._upload_locks.setdefault(sha, anyio.Lock())
        async with lock:
            if sha in self.uploads:
                return self.uploads[sha]
            data = await anyio.Path(item.image_path).read_bytes()
            content_type = sniff_content_type(data[:16]) or "application/octet-stream"
            url = await self.client.upload(data, content_type)
            await self.ledger.append(item.id, item.key, EVENT_UPLOADED, sha256=sha, public_url=url)
            self.uploads[sha] = url
            log.info("%s: uploaded %s", item.id, item.image_path.name)
            return url

    async def _wait_for_create_window(self) -> None:
        """Hold creates while a 429 pause is on: until one of ours ends or the backoff passes."""
        while (wait := self._creates_paused_until - anyio.current_time()) > 0:
            ended = self._ended
            with anyio.move_on_after(wait):
                await ended.wait()
                return

    async def _submit(self, job: Job) -> bool:
        """Create the prediction for ``job``; False if it was not created (stopped, refused)."""
        refusals = 0
        failures = 0
        while True:
            if self._stop_submitting:
                return False
            await self._wait_for_create_window()
            if self._stop_submitting:
                return False
            try:
                image_url = await self._image_url(job)
            except AccountError as exc:
                self._refused(exc)
                return False
            except ApiError as exc:
                failures += 1
                if await self._gave_up(job, failures, f"image upload failed: {exc}"):
                    return False
                continue
            if not self._reserve(job):
                self._budget_reached(job)
                return False
            outcome = await self._create(job, job.item.request_input(image_url))
            if not isinstance(outcome, (str, AmbiguousCreateError)):
                self.spend.release(job.item.key)  # it created nothing
            if isinstance(outcome, str):
                job.submitted_at = anyio.current_time()
                job.last_poll_at = None
                log.info("%s: submitted as %s", job.item.id, outcome)
                return True
            if isinstance(outcome, AccountError):
                return False
            if isinstance(outcome, CapacityError):
                refusals += 1
                pause = outcome.retry_after or policy.backoff(
                    refusals, base=self.limits.poll_min, cap=60.0, rng=self.rng
                )
                self._creates_paused_until = max(
                    self._creates_paused_until, anyio.current_time() + pause
                )
            elif isinstance(outcome, AmbiguousCreateError):
                log.warning("%s: create answer lost (%s); reconciling", job.item.id, outcome)
                verdict = await self._reconcile(job)
                if verdict is Verdict.FOUND:
                    return True
                if verdict is Verdict.UNDECIDED:
                    return False
            elif isinstance(outcome, TransportError):
                failures += 1
                if await self._gave_up(job, failures, str(outcome)):
                    return False
            else:
                log.warning("%s: create refused: %s", job.item.id, outcome)
                return False

    async def _create(self, job: Job, request: dict[str, object]) -> str | ApiError:
        """One create, write-ahead and shielded from cancellation.

        Once the request may have gone out, its answer is recorded even while the run is being
        stopped, so a stop never leaves a paid prediction unrecorded. Returns the prediction id,
        or the error that says what happened (nothing created, or ambiguous).
        """
        with anyio.CancelScope(shield=True):
            return await self._create_recorded(job, request)
        raise AssertionError("unreachable: a shielded scope is never cancelled")

    async def _create_recorded(self, job: Job, request: dict[str, object]) -> str | ApiError:
        await self._record(job, JobState.SUBMITTING, attempt=job.state.attempts + 1)
        job.attempts_this_run += 1
        try:
            prediction_id = await self.client.create(job.item.model, request)
        except AccountError as exc:
            await self._record(job, JobState.PENDING, reason=f"refused: HTTP {exc.status}")
            self._refused(exc)
            return exc
        except AmbiguousCreateError as exc:
            return exc  # stays "submitting" in the ledger until reconciled
        except CapacityError as exc:
            job.attempts_this_run -= 1
            await self._record(job, JobState.PENDING, reason="refused: HTTP 429")
            return exc
        except TransportError as exc:  # never left this machine: nothing was created
            job.attempts_this_run -= 1
            await self._record(job, JobState.PENDING, reason="not sent")
            return exc
        except ApiStatusError as exc:  # a 4xx that created nothing
            await self._record(
                job,
                JobState.FAILED,
                error=exc.message or str(exc),
                error_code=f"HTTP_{exc.status}",
            )
            return exc
        await self._record(job, JobState.SUBMITTED, prediction_id=prediction_id)
        return prediction_id

    async def _gave_up(self, job: Job, failures: int, message: str) -> bool:
        """Back off after a failure that created nothing; True (recorded failed) after a few."""
        if failures > 5:
            await self._record(job, JobState.FAILED, error=message, error_code="NETWORK_ERROR")
            log.warning("%s: failed: %s", job.item.id, message)
            return True
        await anyio.sleep(policy.backoff(failures, base=1.0, cap=30.0, rng=self.rng))
        return False

    async def _reconcile(self, job: Job) -> Verdict:
        """Settle a create whose answer was lost: attach to its prediction, or free the item."""
        verdict, found = await find_prediction(
            self.client, job.item, job.state, self.uploads, exclude=self.known_ids
        )
        if verdict is Verdict.FOUND:
            assert found is not None
            await self._record(job, JobState.SUBMITTED, prediction_id=found, reconciled=True)
            job.submitted_at = _mono_from_iso(job.state.submitting_ts, anyio.current_time())
            job.last_poll_at = None
            log.info("%s: found its prediction %s on the server", job.item.id, found)
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
            log.warning(
                "%s: cannot tell whether its lost create made a prediction; left for you to "
                "decide (--resubmit-ambiguous submits it again)",
                job.item.id,
            )
        return verdict

    # -- poll ----------------------------------------------------------------------------------

    async def _poll(self, job: Job) -> Prediction | None:
        """Poll until the prediction ends; None if it was lost or the run stopped."""
        prediction_id = job.state.prediction_id
        assert prediction_id is not None
        submitted = job.submitted_at if job.submitted_at is not None else anyio.current_time()
        not_found = 0
        errors = 0
        while True:
            now = anyio.current_time()
            if now - submitted > self.limits.item_timeout:
                await self._time_out(job, prediction_id)
                return None
            at = policy.next_poll_at(
                now=now,
                submitted_at=submitted,
                last_poll_at=job.last_poll_at,
                model=self.runtimes,
                poll_min=self.limits.poll_min,
                spare=self.budget.spare(),
            )
            await anyio.sleep(at - now)
            last_miss = job.last_poll_at
            age_last = 0.0 if last_miss is None else last_miss - submitted
            try:
                prediction = await self.client.get(
                    prediction_id,
                    priority=partial(self._poll_priority, submitted, age_last),
                )
            except NotFoundError:
                not_found += 1
                if not_found >= MAX_NOT_FOUND:
                    await self._record(
                        job,
                        JobState.FAILED,
                        error="the server does not know this prediction",
                        error_code="NOT_FOUND",
                    )
                    return None
                continue
            except AccountError:
                self.stop_submitting()
                raise
            except ApiError as exc:
                errors += 1
                log.debug("%s: poll failed (%s); retrying", job.item.id, exc)
                await anyio.sleep(policy.backoff(errors, base=1.0, cap=30.0, rng=self.rng))
                continue
            finally:
                job.last_poll_at = anyio.current_time()
            not_found = errors = 0
            seen = job.last_poll_at  # the answer's arrival: when we know
            if prediction.sent_at is not None:
                job.last_poll_at = prediction.sent_at  # what the server saw: when it was asked
            if prediction.status.terminal:
                if self.observer is not None:
                    self.observer(prediction_id, seen)
                if prediction.status is RemoteStatus.SUCCESS:
                    self.runtimes.observe(policy.finished_age(submitted, last_miss, seen))
                return prediction

    def _poll_priority(self, submitted: float, age_last: float, now: float) -> float:
        """Lower goes first: minus the chance this poll finds the prediction finished."""
        return -policy.poll_score(self.runtimes, now - submitted, age_last)

    async def _time_out(self, job: Job, prediction_id: str) -> None:
        """Cancel a prediction past ``--item-timeout`` and record it as failed (timeout)."""
        try:
            await self.client.cancel(prediction_id)
        except ApiError as exc:
            log.warning("%s: cancel after timeout failed: %s", job.item.id, exc)
        await self._record(
            job,
            JobState.FAILED,
            error=f"no result after {self.limits.item_timeout:.0f} s: cancelled",
            error_code="timeout",
        )
        self.spend.settle(job.item.key, 0.0)  # a cancelled prediction is not billed

    # -- download ------------------------------------------------------------------------------

    async def _download(self, job: Job) -> None:
        item = job.item
        dest = video_path(self.config.output_dir, item.id)
        async with self._downloads:
            for fresh_url_tries in range(2):
                url = job.state.output_url
                if url is None:
                    break
                try:
                    got = await fetch_video(
                        self.session, url, dest, seconds=self.limits.download_timeout
                    )
                except DownloadError as exc:
                    if exc.status in GONE and fresh_url_tries == 0 and job.state.prediction_id:
                        log.info("%s: output URL expired; asking for a fresh one", item.id)
                        if await self._refresh_url(job):
                            continue
                    await self._record(
                        job, JobState.FAILED, error=str(exc), error_code=DOWNLOAD_FAILED
                    )
                    log.warning("%s: download failed: %s", item.id, exc)
                    return
                await self._record(
                    job,
                    JobState.DOWNLOADED,
                    path=dest.name,
                    bytes=got.bytes,
                    sha256=got.sha256,
                )
                log.info("%s: saved %s (%d bytes)", item.id, dest.name, got.bytes)
                return

    async def _refresh_url(self, job: Job) -> bool:
        assert job.state.prediction_id is not None
        try:
            prediction = await self.client.get(job.state.prediction_id)
        except ApiError as exc:
            log.warning("%s: could not re-poll for a fresh URL: %s", job.item.id, exc)
            return False
        if prediction.status is not RemoteStatus.SUCCESS or prediction.output_url is None:
            return False
        await self._record_success(job, prediction)
        return True


async def verify_done(output_dir: Path, state: KeyState) -> bool:
    """Whether a downloaded item's file is still there and matches the ledger."""
    if state.path is None:
        return False
    return await anyio.to_thread.run_sync(
        verify, output_dir / state.path, state.bytes, state.sha256
    )
