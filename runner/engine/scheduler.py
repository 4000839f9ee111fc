"""The batch runner: the task group that wires manifest, ledger, client and downloads together.

One feeder hands items to in-flight slots (at most ``concurrency`` predictions on the server);
each slot's task uploads the image if needed, creates the prediction, polls it at the pace
``runner.engine.policy`` sets within the shared request window, and on success hands the video to a
download (downloads take no slot and no place in the request window).

The money rules live here:

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

import errno
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import aiohttp
import anyio

from runner.api.client import EachlabsClient
from runner.api.protocol import Prediction, RemoteStatus
from runner.api.ratelimit import RateLimiter
from runner.api.transfers import GONE, fetch_video
from runner.checks.images import sniff_content_type
from runner.config import RunConfig
from runner.engine import policy
from runner.engine.reconcile import Verdict, find_prediction, listed
from runner.errors import (
    AccountError,
    AmbiguousCreateError,
    ApiBrokenError,
    ApiError,
    ApiProtocolError,
    ApiStatusError,
    ApiUnavailableError,
    CapacityError,
    DownloadError,
    NotFoundError,
    StopRequested,
    StorageError,
    TransferError,
    TransportError,
)
from runner.jobs import JobState, transition
from runner.manifest import Item
from runner.store.budget import Budget
from runner.store.ledger import EVENT_UPLOAD_GONE, EVENT_UPLOADED, KeyState, LedgerWriter, apply
from runner.store.plan import DOWNLOAD_FAILED, LOST, POLL_ERROR, TIMEOUT, Action, Plan
from runner.store.videos import verify, video_path

log = logging.getLogger("runner")

#: Downloads running at once; they share the machine's bandwidth, not the API's request window.
DOWNLOAD_CONCURRENCY = 4
#: Upload failures that created nothing before the item is left pending for the next run.
MAX_UPLOAD_FAILURES = 5
#: Failed executions lookups a lost create gets before it is left undecided.
RECONCILE_UNANSWERED_LOOKS = 3
#: The same 4xx answer to this many polls in a row: the server will not tell us more.
MAX_POLL_REFUSALS = 5
#: Poll failures are logged on the first and then every this many.
LOG_EVERY = 10
#: The error code the upstream gives a prediction whose input image could not be fetched.
INPUT_DOWNLOAD_ERROR = "INPUT_DOWNLOAD_ERROR"
#: An item whose creates never made a prediction (each was looked up and found absent).
CREATE_FAILED = "CREATE_FAILED"
#: The upload host refused the image (a 4xx on the presigned PUT or the presign).
UPLOAD_REFUSED = "UPLOAD_REFUSED"
#: Local causes that concern the whole disk, not one file: the run stops (exit 5).
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


@dataclass
class Job:
    """The live state of one item during a run."""

    item: Item
    state: KeyState
    submitted_at: float | None = None  # monotonic
    last_poll_at: float | None = None
    attempts_this_run: int = 0


@dataclass(frozen=True)
class Stop:
    """Why a run stopped before its work was done: ``kind`` picks the exit code."""

    kind: str  # "storage" (exit 5), "api_unavailable" (exit 6), "api_broken" (exit 7)
    message: str


@dataclass
class Outcome:
    """What a run ended with, for the summary and the exit code."""

    jobs: dict[str, Job] = field(default_factory=dict)  # by item id
    account_error: str | None = None
    budget_reached: bool = False
    interrupted: bool = False
    stopped: Stop | None = None


class InFlight:
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
    if then.tzinfo is None:
        return None
    return now_mono - max(0.0, (datetime.now(then.tzinfo) - then).total_seconds())


def _disk_wide(exc: StorageError) -> bool:
    """Whether a storage error concerns the whole disk (full, read-only), not one path."""
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS


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
        spend: Budget | None = None,
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
        self.spend = spend or Budget(None)
        self.outcome = Outcome()
        self._stop_submitting = False
        self._stopping = anyio.Event()  # set with _stop_submitting: ends creates' window waits
        self._shielded: set[anyio.CancelScope] = set()  # creates on the wire
        self._nonsense = 0  # create answers in a row that made no sense
        self._upload_locks: dict[str, anyio.Lock] = {}
        self._creates_paused_until = 0.0
        self._ended = anyio.Event()  # set (and renewed) whenever one of our predictions ends
        self._downloads = anyio.CapacityLimiter(DOWNLOAD_CONCURRENCY)
        self.client: EachlabsClient
        self.session: aiohttp.ClientSession
        self.limiter: RateLimiter

    # -- entry point -------------------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession, limiter: RateLimiter) -> Outcome:
        self.session = session
        self.limiter = limiter
        self.client = EachlabsClient(
            session,
            self.config.api_base,
            self.config.api_key,
            limiter,
            request_timeout=self.limits.request_timeout,
            max_retry_after=self.limits.max_retry_after,
            unreachable_after=self.limits.unreachable_after,
            unreachable_at_start=self.limits.unreachable_at_start,
            fault_wait=self.limits.fault_wait,
        )
        self.slots = InFlight(self.limits.concurrency)
        for step in self.plan.steps:
            self.outcome.jobs[step.item.id] = Job(step.item, step.state)
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                for step in self.plan.steps:
                    job = self.outcome.jobs[step.item.id]
                    if step.action is Action.DOWNLOAD:
                        tg.start_soon(self._download_only, job)
                    elif step.action in (Action.POLL, Action.RECONCILE, Action.RECHECK):
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
        except* StorageError as group:
            self._stopped("storage", group.exceptions[0])
        except* ApiUnavailableError as group:
            self._stopped("api_unavailable", group.exceptions[0])
        except* ApiBrokenError as group:
            self._stopped("api_broken", group.exceptions[0])
        return self.outcome

    def _stopped(self, kind: str, exc: BaseException) -> None:
        if self.outcome.stopped is None:
            self.outcome.stopped = Stop(kind, str(exc))
            log.error("%s; the run stops, unfinished items are left for the next run", exc)
        self.stop_submitting()

    def stop_submitting(self) -> None:
        """No new create is sent after this (a signal, an account error, ...): creates waiting
        for the request window give up at once; creates already on the wire are recorded."""
        self._stop_submitting = True
        if not self._stopping.is_set():
            self._stopping.set()
            if hasattr(self, "limiter"):
                self.limiter.notify()

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
        except _RUN_STOPPERS:
            self.stop_submitting()  # creates still waiting for the window give up at once
            raise
        finally:
            self.slots.release()
            self._ended.set()
            self._ended = anyio.Event()
        if prediction is not None and prediction.status is RemoteStatus.SUCCESS:
            await self._download(job)

    async def _run_prediction(self, job: Job, action: Action) -> Prediction | None:
        """Create (unless resuming), poll to the end, resubmit retryable failures."""
        now = anyio.current_time()
        if action in (Action.POLL, Action.RECHECK):
            resumed_at = _mono_from_iso(job.state.submitted_ts, now)
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
                log.warning("%s: %s", job.item.id, prediction.cost_problem)
            # A failed or cancelled prediction is not billed; a success costs metrics.cost
            # (unknown: the estimate stands).
            billed = prediction.cost if prediction.status is RemoteStatus.SUCCESS else 0
            self.spend.settle(job.item.key, billed)
            if prediction.status is RemoteStatus.SUCCESS:
                await self._record_success(job, prediction)
                log.info("%s: succeeded (%.0f s)", job.item.id, prediction.predict_time or 0)
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
                log.warning("%s: failed: %s", job.item.id, prediction.error)
                return prediction
            log.info("%s: retryable failure (%s); submitting again", job.item.id, prediction.error)
            action = Action.SUBMIT

    async def _recheck(self, job: Job) -> Action:
        """An item an earlier run gave up on while its prediction may still exist (timed out,
        lost, unpollable): ask the server once before anything else. Returns POLL to keep
        watching it (the outcome is then recorded as usual), SUBMIT to create it again
        (--retry-failed, and the server has no such prediction or it ended in failure), or
        DONE to leave it as it is."""
        prediction_id = job.state.prediction_id
        assert prediction_id is not None
        try:
            prediction = await self.client.get(prediction_id)
        except NotFoundError:
            log.info(
                "%s: its prediction %s is still unknown to the server", job.item.id, prediction_id
            )
            return Action.SUBMIT if self.config.retry_failed else Action.DONE
        except (ApiProtocolError, ApiStatusError, TransportError) as exc:
            log.warning("%s: could not look at its prediction again: %s", job.item.id, exc)
            return Action.DONE
        if not prediction.status.terminal or prediction.status is RemoteStatus.SUCCESS:
            log.info(
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
        return Action.SUBMIT if self.config.retry_failed else Action.DONE

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

    async def _upload_went_away(self, job: Job, prediction: Prediction) -> bool:
        """A prediction failed because the server could not fetch the image we uploaded for it
        (the upload expired or vanished): forget that upload, so the next attempt uploads the
        image again. True if that is what happened."""
        sha = job.item.image_sha256
        if prediction.error_code != INPUT_DOWNLOAD_ERROR or sha is None or sha not in self.uploads:
            return False
        gone = self.uploads.pop(sha)
        await self.ledger.append(
            job.item.id, job.item.key, EVENT_UPLOAD_GONE, sha256=sha, public_url=gone
        )
        log.warning(
            "%s: the server could not fetch its uploaded image; it is uploaded again", job.item.id
        )
        return True

    async def _wait_for_create_window(self) -> None:
        """Hold creates while a 429 pause is on: until one of ours ends or the backoff passes."""
        while (wait := self._creates_paused_until - anyio.current_time()) > 0:
            ended = self._ended
            with anyio.move_on_after(wait):
                await ended.wait()
                return

    async def _submit(self, job: Job) -> bool:
        """Create the prediction for ``job``; False if it was not created (stopped, refused,
        capped: the ledger says which)."""
        refusals = 0
        failures = 0
        while True:
            if self._stop_submitting:
                return False
            if job.attempts_this_run >= self.limits.max_attempts:
                await self._record(
                    job,
                    JobState.FAILED,
                    error=f"no prediction was made in {job.attempts_this_run} attempts "
                    "(each create was looked up on the server and found absent)",
                    error_code=CREATE_FAILED,
                )
                log.warning(
                    "%s: gave up after %d creates that made nothing",
                    job.item.id,
                    job.attempts_this_run,
                )
                return False
            await self._wait_for_create_window()
            if self._stop_submitting:
                return False
            try:
                image_url = await self._image_url(job)
            except AccountError as exc:
                self._refused(exc)
                return False
            except (TransferError, ApiStatusError) as exc:
                if _permanent(exc):
                    await self._record(
                        job,
                        JobState.FAILED,
                        error=f"image upload refused: {exc}",
                        error_code=UPLOAD_REFUSED,
                    )
                    log.warning("%s: failed: image upload refused: %s", job.item.id, exc)
                    return False
                failures += 1
                if await self._leave_pending(job, failures, f"image upload failed: {exc}"):
                    return False
                continue
            except (TransportError, ApiProtocolError) as exc:
                failures += 1
                if await self._leave_pending(job, failures, f"image upload failed: {exc}"):
                    return False
                continue
            if not self._reserve(job):
                self._budget_reached(job)
                return False
            outcome = await self._create(job, job.item.request_input(image_url))
            if not isinstance(outcome, (str, AmbiguousCreateError)):
                self.spend.release(job.item.key)  # it created nothing
            if isinstance(outcome, str):
                self._nonsense = 0
                job.submitted_at = anyio.current_time()
                job.last_poll_at = None
                log.info("%s: submitted as %s", job.item.id, outcome)
                return True
            if outcome is None or isinstance(outcome, AccountError):
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
                self._count_nonsense(outcome)
                verdict = await self._reconcile(job)
                if verdict is Verdict.FOUND:
                    return True
                if verdict is Verdict.UNDECIDED:
                    return False
            elif isinstance(outcome, TransportError):
                failures += 1
                if await self._leave_pending(job, failures, str(outcome)):
                    return False
            else:
                log.warning("%s: create refused: %s", job.item.id, outcome)
                return False

    def _count_nonsense(self, exc: AmbiguousCreateError) -> None:
        """A create answered, but not with a usable id (5xx, HTML, no id): after several in a
        row the server is broken, and submitting stops rather than pay per item."""
        if not exc.answered:
            return
        self._nonsense += 1
        if self._nonsense >= self.limits.broken_after and self.outcome.stopped is None:
            self._stopped(
                "api_broken",
                ApiBrokenError(
                    f"the API answered {self._nonsense} creates in a row without a usable "
                    f"prediction id (last: {exc})"
                ),
            )

    async def _create(self, job: Job, request: dict[str, object]) -> str | ApiError | None:
        """One create: waits for the request window (a stop ends the wait: nothing is sent,
        None), then, shielded from cancellation, writes ``submitting``, sends and records the
        answer. Returns the prediction id, or the error that says what happened."""
        with anyio.CancelScope(shield=True) as scope:
            self._shielded.add(scope)
            try:
                return await self._create_recorded(job, request)
            finally:
                self._shielded.discard(scope)
        # Only a second stop (force_cancel) cancels the shielded scope itself.
        raise anyio.get_cancelled_exc_class()()

    async def _create_recorded(self, job: Job, request: dict[str, object]) -> str | ApiError | None:
        written = False

        async def write_ahead() -> None:
            nonlocal written
            await self._record(job, JobState.SUBMITTING, attempt=job.state.attempts + 1)
            written = True
            job.attempts_this_run += 1

        try:
            prediction_id = await self.client.create(
                job.item.model, request, before_send=write_ahead, abandon=self._stopping
            )
        except StopRequested:
            return None  # never sent, nothing written: the item stays pending
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
        except (TransportError, ApiUnavailableError, ApiBrokenError) as exc:
            # Never sent (no connection), or refused by a redirect: nothing was created.
            if written:
                job.attempts_this_run -= 1
                await self._record(job, JobState.PENDING, reason=f"not created: {exc}")
            if isinstance(exc, TransportError):
                return exc
            raise
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

    async def _leave_pending(self, job: Job, failures: int, message: str) -> bool:
        """Back off after a failure that created nothing; after a few, True: the item is left
        pending for the next run (never failed for a network reason)."""
        if failures > MAX_UPLOAD_FAILURES:
            log.warning("%s: left pending after %d failures: %s", job.item.id, failures, message)
            return True
        log.warning("%s: %s; trying again", job.item.id, message)
        await anyio.sleep(policy.backoff(failures, base=1.0, cap=30.0, rng=self.rng))
        return False

    async def _reconcile(self, job: Job) -> Verdict:
        """Settle a create whose answer was lost: attach to its prediction, or free the item.

        The executions list may lag: the prediction counts as absent only once lookups have
        shown nothing for ``reconcile_settle`` seconds after the create's answer came (after a
        crash: could at the latest have come). A lookup that fails (the list answered 500s in
        production) is asked again, for another ``reconcile_settle`` past that and at least
        RECONCILE_UNANSWERED_LOOKS times; only then is the item left undecided.
        """
        start = anyio.current_time()
        sent = _mono_from_iso(job.state.submitting_ts, start)
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
                self.client, job.item, job.state, self.uploads, exclude=self.known_ids
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
            log.info(
                "%s: its create is not in the executions list yet; looking again in %.1f s",
                job.item.id,
                wait,
            )
            await anyio.sleep(wait)
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
            verdict = Verdict.UNDECIDED
        return verdict

    # -- poll ----------------------------------------------------------------------------------

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
        submitted = job.submitted_at if job.submitted_at is not None else anyio.current_time()
        deadline = max(anyio.current_time(), submitted) + self.limits.item_timeout
        missing_since: float | None = None
        errors = 0
        last_error: ApiError | None = None
        cancelling: tuple[str, str] | None = None  # cancel sent: the failure if it takes effect
        while True:
            now = anyio.current_time()
            at = policy.next_poll_at(
                now=now,
                submitted_at=submitted,
                last_poll_at=job.last_poll_at,
                model=self.runtimes,
                poll_min=self.limits.poll_min,
                spare=self.limiter.spare(),
            )
            trouble = errors + (0 if missing_since is None else 1 + int(now - missing_since))
            if trouble:
                pause = policy.backoff(
                    min(trouble, 10), base=self.limits.poll_min, cap=60.0, rng=self.rng
                )
                at = max(at, now + pause)
            await anyio.sleep(at - now)
            last_miss = job.last_poll_at
            age_last = 0.0 if last_miss is None else last_miss - submitted
            try:
                prediction = await self.client.get(
                    prediction_id,
                    priority=partial(self._poll_priority, submitted, age_last),
                )
            except NotFoundError:
                now = anyio.current_time()
                if missing_since is None:
                    missing_since = now
                    log.warning(
                        "%s: the server does not know prediction %s (yet?); polling on",
                        job.item.id,
                        prediction_id,
                    )
                elif now - missing_since >= self.limits.lost_after:
                    if await listed(self.client, job.item, job.state, prediction_id):
                        log.info(
                            "%s: %s is listed in executions; polling on", job.item.id, prediction_id
                        )
                        missing_since = now
                        continue
                    await self._record(
                        job,
                        JobState.FAILED,
                        prediction_id=prediction_id,
                        error=f"the server has not known prediction {prediction_id} for "
                        f"{now - missing_since:.0f} s and does not list it; a later run asks again",
                        error_code=LOST,
                    )
                    return None
                continue
            except AccountError:
                self.stop_submitting()
                raise
            except (ApiProtocolError, ApiStatusError, TransportError) as exc:
                errors += 1
                last_error = exc
                if errors == 1 or errors % LOG_EVERY == 0:
                    log.warning("%s: poll failed (%s); polling on", job.item.id, exc)
                refused = _permanent(exc) or isinstance(exc, ApiProtocolError)
                if refused and errors >= MAX_POLL_REFUSALS:
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
                seen = anyio.current_time()  # the answer's arrival: when we know
                job.last_poll_at = seen
                if prediction.sent_at is not None:
                    job.last_poll_at = prediction.sent_at  # what the server saw: when it was asked
                if prediction.status.terminal:
                    if self.observer is not None:
                        self.observer(prediction_id, seen)
                    if prediction.status is RemoteStatus.SUCCESS:
                        if cancelling is not None:
                            log.info("%s: succeeded after all while being cancelled", job.item.id)
                        self.runtimes.observe(policy.finished_age(submitted, last_miss, seen))
                    elif cancelling is not None and prediction.status is RemoteStatus.CANCELLED:
                        await self._record_timeout(job, prediction_id, cancelling, ended=True)
                        return None
                    return prediction
            if anyio.current_time() > deadline:
                if cancelling is not None:
                    await self._record_timeout(job, prediction_id, cancelling, ended=False)
                    return None
                cancelling = await self._cancel_late(
                    job, prediction_id, last_error if errors else None
                )
                deadline = anyio.current_time() + self.limits.cancel_grace

    def _poll_priority(self, submitted: float, age_last: float, now: float) -> float:
        """Lower goes first: minus the chance this poll finds the prediction finished."""
        return -policy.poll_score(self.runtimes, now - submitted, age_last)

    async def _cancel_late(
        self, job: Job, prediction_id: str, poll_error: ApiError | None
    ) -> tuple[str, str]:
        """Cancel a prediction past ``--item-timeout``. Cancel is best effort: the caller polls
        on to learn how it ends. Returns the failure (error, code) to record if it ends
        cancelled: a timeout, or the poll error that kept us blind."""
        try:
            await self.client.cancel(prediction_id)
        except ApiError as exc:
            log.warning("%s: cancel after timeout failed: %s", job.item.id, exc)
        else:
            log.warning(
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

    # -- download ------------------------------------------------------------------------------

    async def _download_only(self, job: Job) -> None:
        """A resumed item whose video only needs fetching."""
        try:
            await self._download(job)
        except _RUN_STOPPERS:
            self.stop_submitting()
            raise

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
                        self.session,
                        url,
                        dest,
                        seconds=self.limits.download_timeout,
                        stall=self.limits.transfer_stall,
                        max_bytes=self.limits.max_video_bytes,
                        label=item.id,
                        wait=self.limits.fault_wait,
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
                except StorageError as exc:
                    if _disk_wide(exc):
                        raise
                    await self._record(
                        job, JobState.FAILED, error=str(exc), error_code=DOWNLOAD_FAILED
                    )
                    log.warning("%s: cannot save its video: %s", item.id, exc)
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


#: Errors that end the whole run (each has its exit code); ``run`` turns them into a Stop.
_RUN_STOPPERS = (StorageError, ApiUnavailableError, ApiBrokenError, AccountError)


def _permanent(exc: Exception) -> bool:
    """A refusal that asking again will not change: a 4xx other than 408 (timeout) and 429."""
    status = getattr(exc, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


async def verify_done(output_dir: Path, state: KeyState) -> bool:
    """Whether a downloaded item's file is still there and matches the ledger."""
    if state.path is None:
        return False
    return await anyio.to_thread.run_sync(
        verify, output_dir / state.path, state.bytes, state.sha256
    )
