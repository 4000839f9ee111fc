"""Creating an item's prediction: its image uploaded (once per image), the create sent
under write-ahead and shielded from a first stop, each answer's step taken from the decision
table (``decisions``), and a create whose answer was lost settled from the executions list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio

from runner.api.protocol import Prediction
from runner.checks.images import sniff_content_type
from runner.config import read_regular_file
from runner.engine import decisions, policy
from runner.engine.base import Job
from runner.engine.decisions import Outcome, Phase, Step
from runner.engine.reconcile import Reconciling, Verdict
from runner.errors import AmbiguousCreateError, ApiBrokenError, RunnerError, StopRequested
from runner.events import Uploading
from runner.jobs import JobState
from runner.night import NightStop
from runner.store import disk
from runner.store.ledger import EVENT_UPLOAD_GONE, EVENT_UPLOADED

#: Failures that created nothing (uploads, creates never sent) before the item is left
#: pending for the next run.
MAX_CREATE_FAILURES = 5
#: The error code the upstream gives a prediction whose input image could not be fetched.
INPUT_DOWNLOAD_ERROR = "INPUT_DOWNLOAD_ERROR"
#: An item whose creates never made a prediction (each was looked up and found absent).
CREATE_FAILED = "CREATE_FAILED"
#: The upload host refused the image (a 4xx on the presigned PUT or the presign).
UPLOAD_REFUSED = "UPLOAD_REFUSED"
#: The most of an image file read for its upload (the checks allow far less).
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
#: The image file could not be read when it was to be uploaded (gone since the checks).
IMAGE_UNREADABLE = "IMAGE_UNREADABLE"


@dataclass(frozen=True)
class Attempt:
    """What one create came to: the step it leads to, and the id or the error."""

    step: Step
    outcome: Outcome
    prediction_id: str | None = None
    error: RunnerError | None = None


def read_image(path: Path) -> bytes:
    """An image file's bytes, never from a FIFO or a device; StorageError naming the path and
    the cause (a file gone since the checks fails its item; a failing disk stops the run)."""
    with disk.storage(path, "read the image"):
        return read_regular_file(path, MAX_UPLOAD_BYTES)


class Creating(Reconciling):
    """The create phase of an item's life."""

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
            self.events.emit(Uploading(item.id))
            try:
                data = await anyio.to_thread.run_sync(read_image, item.image_path)
                content_type = sniff_content_type(data[:16]) or "application/octet-stream"
                url = await self.api(job).upload(data, content_type)
            finally:
                self.events.emit(Uploading(item.id, done=True))
            await self.ledger.append(item.id, item.key, EVENT_UPLOADED, sha256=sha, public_url=url)
            self.uploads[sha] = url
            self.say(logging.INFO, "%s: uploaded %s", item.id, item.image_path.name)
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
        self.say(
            logging.WARNING,
            "%s: the server could not fetch its uploaded image; it is uploaded again",
            job.item.id,
        )
        return True

    async def _wait_for_create_window(self, job: Job) -> None:
        """Hold ``job``'s create while a 429 pause is on for its account: until one of that
        account's predictions ends or the backoff passes (another account's are not held)."""
        account = self.account(job)
        while (wait := account.creates_paused_until - anyio.current_time()) > 0:
            ended = account.ended
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
                self.say(
                    logging.WARNING,
                    "%s: gave up after %d creates that made nothing",
                    job.item.id,
                    job.attempts_this_run,
                )
                return False
            await self._wait_for_create_window(job)
            if self._stop_submitting:
                return False
            try:
                image_url = await self._image_url(job)
            except RunnerError as exc:
                outcome = decisions.classify(exc)
                step = decisions.decide(Phase.UPLOAD, outcome)
                if step is Step.STOP_RUN:
                    if outcome is Outcome.ACCOUNT:
                        if self._refused(exc, job) and await self._move_to_open_account(job):
                            continue
                        return False
                    raise
                if step is Step.FAIL:
                    image = outcome is Outcome.FILE
                    error = str(exc) if image else f"image upload refused: {exc}"
                    code = IMAGE_UNREADABLE if image else UPLOAD_REFUSED
                    await self._record(job, JobState.FAILED, error=error, error_code=code)
                    self.say(logging.WARNING, "%s: failed: %s", job.item.id, error)
                    return False
                failures += 1
                if await self._leave_pending(job, failures, f"image upload failed: {exc}"):
                    return False
                continue
            if not self._reserve(job):
                self._budget_reached(job)
                return False
            attempt = await self._create(job, job.item.request_input(image_url))
            if attempt.step not in (Step.GO_ON, Step.RECONCILE):
                self.spend.release(job.item.key)  # it created nothing
            refused = attempt.outcome in (Outcome.ACCOUNT, Outcome.STOPPED)
            if refused and await self._move_to_open_account(job):
                continue  # its key was refused: another key takes it
            match attempt.step:
                case Step.GO_ON:
                    self._nonsense = 0
                    job.submitted_at = anyio.current_time()
                    job.last_poll_at = None
                    self.say(
                        logging.INFO, "%s: submitted as %s", job.item.id, attempt.prediction_id
                    )
                    return True
                case Step.WAIT_FOR_ROOM:
                    refusals += 1
                    retry_after = getattr(attempt.error, "retry_after", None)
                    pause = retry_after or policy.backoff(
                        refusals, base=self.limits.poll_min, cap=60.0, rng=self.rng
                    )
                    account = self.account(job)
                    account.creates_paused_until = max(
                        account.creates_paused_until, anyio.current_time() + pause
                    )
                case Step.RECONCILE:
                    assert isinstance(attempt.error, AmbiguousCreateError)
                    self.say(
                        logging.WARNING,
                        "%s: create answer lost (%s); reconciling",
                        job.item.id,
                        attempt.error,
                    )
                    self._count_nonsense(attempt.error)
                    verdict = await self._reconcile(job)
                    if verdict is Verdict.FOUND:
                        return True
                    if verdict is Verdict.UNDECIDED:
                        return False
                case Step.AGAIN:
                    failures += 1
                    if await self._leave_pending(job, failures, str(attempt.error)):
                        return False
                case Step.FAIL:
                    self.say(logging.WARNING, "%s: create refused: %s", job.item.id, attempt.error)
                    return False
                case _:  # LEAVE (stopped before sending), STOP_RUN (account refused)
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

    async def _create(self, job: Job, request: dict[str, object]) -> Attempt:
        """One create: waits for the request window (a stop ends the wait: nothing is sent,
        None), then, shielded from cancellation, writes ``submitting``, sends and records the
        answer. Returns the step the answer leads to."""
        with anyio.CancelScope(shield=True) as scope:
            self._shielded.add(scope)
            try:
                return await self._create_recorded(job, request)
            finally:
                self._shielded.discard(scope)
        # Only a second stop (force_cancel) cancels the shielded scope itself.
        raise anyio.get_cancelled_exc_class()()

    async def _create_recorded(self, job: Job, request: dict[str, object]) -> Attempt:
        written = False

        async def write_ahead() -> None:
            nonlocal written
            if not self.fits_tonight(job):  # the window granted it too late for the deadline
                self.stop_for_night(NightStop.DEADLINE, job)
                raise StopRequested("it could not finish by the deadline: it was not sent")
            await self._record(
                job,
                JobState.SUBMITTING,
                attempt=job.state.attempts + 1,
                account=self.account(job).name,
            )
            written = True
            job.attempts_this_run += 1

        try:
            prediction_id = await self.api(job).create(
                job.item.model, request, before_send=write_ahead, abandon=self.account(job).closed
            )
        except RunnerError as exc:
            outcome = decisions.classify(exc)
            step = decisions.decide(Phase.CREATE, outcome)
            await self._record_refusal(job, outcome, step, exc, written)
            return Attempt(step, outcome, error=exc)
        await self._record(job, JobState.SUBMITTED, prediction_id=prediction_id)
        return Attempt(Step.GO_ON, Outcome.OK, prediction_id=prediction_id)

    async def _record_refusal(
        self, job: Job, outcome: Outcome, step: Step, exc: RunnerError, written: bool
    ) -> None:
        """Record what a create that made nothing (or may have) leaves: pending, failed, or
        (lost, stopped) nothing; raise the errors that stop the run. A refusal of the account
        or a stop of the run stops submitting first: no create waiting for the window goes
        out while the record is being written."""
        status = getattr(exc, "status", None)
        if outcome is Outcome.ACCOUNT:
            self._refused(exc, job)
            job.attempts_this_run -= 1  # it made nothing
            await self._record(job, JobState.PENDING, reason=f"refused: HTTP {status}")
        elif outcome is Outcome.CAPACITY:
            job.attempts_this_run -= 1
            await self._record(job, JobState.PENDING, reason="refused: HTTP 429")
        elif step is Step.FAIL:  # a 4xx that created nothing
            message = getattr(exc, "message", None)
            await self._record(
                job, JobState.FAILED, error=message or str(exc), error_code=f"HTTP_{status}"
            )
        elif step in (Step.AGAIN, Step.STOP_RUN):
            # Never sent (no connection), or refused by a redirect: nothing was created.
            if step is Step.STOP_RUN:
                self.stop_submitting()
            if written and outcome is not Outcome.DISK and outcome is not Outcome.FILE:
                job.attempts_this_run -= 1
                await self._record(job, JobState.PENDING, reason=f"not created: {exc}")
            if step is Step.STOP_RUN:
                raise exc
        # LEAVE (stopped before sending: nothing written), RECONCILE (stays "submitting")

    async def _leave_pending(self, job: Job, failures: int, message: str) -> bool:
        """Back off after a failure that created nothing; after a few, True: the item is left
        pending for the next run (never failed for a network reason)."""
        if decisions.leave_after_failures(failures, MAX_CREATE_FAILURES):
            self.say(
                logging.WARNING,
                "%s: left pending after %d failures: %s",
                job.item.id,
                failures,
                message,
            )
            return True
        self.say(logging.WARNING, "%s: %s; trying again", job.item.id, message)
        await anyio.sleep(policy.backoff(failures, base=1.0, cap=30.0, rng=self.rng))
        return False
