"""Fetching a finished prediction's video: through the transfer with its own retries, a fresh
output URL asked for once when the old one expired, each failure's step taken from the
decision table (``decisions``).
"""

from __future__ import annotations

import logging

import anyio

from runner.api.protocol import RemoteStatus
from runner.engine import decisions
from runner.engine.base import RUN_STOPPERS, Job, RunContext
from runner.engine.decisions import Outcome, Phase, Step
from runner.errors import RunnerError
from runner.jobs import JobState
from runner.store.plan import DOWNLOAD_FAILED
from runner.store.videos import video_path


class Fetching(RunContext):
    """The download phase of an item's life."""

    async def _download_only(self, job: Job) -> None:
        """A resumed item whose video only needs fetching."""
        try:
            await self._download(job)
        except RUN_STOPPERS:
            self.stop_submitting()
            raise

    async def _download(self, job: Job) -> None:
        item = job.item
        dest = video_path(self.output_dir, item.id)
        async with self._downloads:
            started = anyio.current_time()
            for fresh_url_tries in range(2):
                url = job.state.output_url
                if url is None:
                    break
                try:
                    got = await self.fetcher(
                        url,
                        dest,
                        seconds=self.limits.download_timeout,
                        stall=self.limits.transfer_stall,
                        max_bytes=self.limits.max_video_bytes,
                        label=item.id,
                        wait=self.limits.fault_wait,
                    )
                except RunnerError as exc:
                    outcome = decisions.classify(exc)
                    step = decisions.decide(Phase.DOWNLOAD, outcome)
                    if step is Step.STOP_RUN:
                        raise
                    fresh = step is Step.REFRESH_URL and fresh_url_tries == 0
                    if fresh and job.state.prediction_id:
                        self.say(
                            logging.INFO, "%s: output URL expired; asking for a fresh one", item.id
                        )
                        if await self._refresh_url(job):
                            continue
                    await self._record(
                        job, JobState.FAILED, error=str(exc), error_code=DOWNLOAD_FAILED
                    )
                    if outcome is Outcome.FILE:
                        self.say(logging.WARNING, "%s: cannot save its video: %s", item.id, exc)
                    else:
                        self.say(logging.WARNING, "%s: download failed: %s", item.id, exc)
                    return
                self._downloaded_in(anyio.current_time() - started)
                await self._record(
                    job,
                    JobState.DOWNLOADED,
                    path=dest.name,
                    bytes=got.bytes,
                    sha256=got.sha256,
                )
                self.say(logging.INFO, "%s: saved %s (%d bytes)", item.id, dest.name, got.bytes)
                return

    def _downloaded_in(self, seconds: float) -> None:
        """Learn a download's length (for the deadline's fit): the longest of the last few,
        fading, so one slow transfer counts for a while and the prior goes at once."""
        if self._downloads_seen == 0:
            self.download_seconds = seconds
        else:
            self.download_seconds = max(seconds, 0.8 * self.download_seconds + 0.2 * seconds)
        self._downloads_seen += 1

    async def _refresh_url(self, job: Job) -> bool:
        assert job.state.prediction_id is not None
        try:
            prediction = await self.api(job).get(job.state.prediction_id)
        except RunnerError as exc:
            if decisions.decide(Phase.REFRESH, decisions.classify(exc)) is Step.STOP_RUN:
                raise
            self.say(logging.WARNING, "%s: could not re-poll for a fresh URL: %s", job.item.id, exc)
            return False
        if prediction.status is not RemoteStatus.SUCCESS or prediction.output_url is None:
            return False
        await self._record_success(job, prediction)
        return True
