"""One prediction as the simulated service runs it: its timeline, its drawn outcome, its failures.

``Run`` is the simulator's record of a prediction (the runner's ``Prediction`` is the client's
view of one): created at a loop time, ``created`` for ``queue_delay``, ``starting`` for
``starting_delay``, then ``processing`` until its end shows on a status quantum. The draws of
run time and outcome, the quantum arithmetic and the failures a run can end in live here too.
Pure: no I/O; times are the event loop's, random draws come from the caller's ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from runner.simulator.config import SimConfig

#: The canonical in-flight statuses, in the order a run passes them.
IN_FLIGHT = ("created", "starting", "processing")


@dataclass(frozen=True)
class Failure:
    """Why a prediction ended in error, as the full error object spells it."""

    code: str
    message: str
    retryable: bool = False
    category: str = "PROVIDER"


PROVIDER_FAILED = Failure("PROVIDER_FAILED", "The provider failed to generate the video.")
PROVIDER_RATE_LIMIT = Failure(
    "PROVIDER_RATE_LIMIT", "The provider is rate limited; try again later.", retryable=True
)


def download_failure(reason: str) -> Failure:
    """The failure of a prediction whose image URL could not be fetched."""
    return Failure(
        "INPUT_DOWNLOAD_ERROR", f"Failed to download input image: {reason}", False, "INPUT"
    )


def image_failure(reason: str) -> Failure:
    """The failure of a prediction whose image was fetched but is not usable."""
    return Failure("INPUT_VALIDATION_ERROR", f"Invalid input image: {reason}", False, "INPUT")


def draw_run_time(rng: random.Random, config: SimConfig) -> float:
    """A run time: normal around the mean (sd a quarter of the range), clipped to the range;
    a share ``outlier_rate`` of runs are then ``outlier_factor`` times slower (the long tail
    a scheduler must not wait on)."""
    sd = (config.runtime_max - config.runtime_min) / 4
    run = min(config.runtime_max, max(config.runtime_min, rng.gauss(config.runtime_mean, sd)))
    if rng.random() < config.outlier_rate:
        run *= config.outlier_factor
    return run


def quantize(elapsed: float, quantum: float) -> float:
    """``elapsed`` rounded up to a multiple of ``quantum`` (unchanged if quantum is 0)."""
    if quantum <= 0:
        return elapsed
    return math.ceil(elapsed / quantum - 1e-9) * quantum


def draw_failure(rng: random.Random, config: SimConfig) -> Failure | None:
    """The outcome drawn at create: None for success, else the provider failure to end in."""
    draw = rng.random()
    if draw < config.failure_rate:
        return PROVIDER_FAILED
    if draw < config.failure_rate + config.retryable_failure_rate:
        return PROVIDER_RATE_LIMIT
    return None


def lifecycle_status(elapsed: float, queue_delay: float, starting_delay: float) -> str:
    """The in-flight status ``elapsed`` seconds after creation: ``created`` for ``queue_delay``,
    then ``starting`` for ``starting_delay``, then ``processing`` until the end shows."""
    if elapsed < queue_delay:
        return "created"
    if elapsed < queue_delay + starting_delay:
        return "starting"
    return "processing"


def next_quantum(elapsed: float, quantum: float) -> float:
    """The first multiple of ``quantum`` strictly after ``elapsed`` (``elapsed`` if quantum is 0):
    when a change asked for now (a cancel) next shows."""
    if quantum <= 0:
        return elapsed
    return (math.floor(elapsed / quantum + 1e-9) + 1) * quantum


@dataclass
class Run:
    """One prediction as the service runs it. In flight its status follows from the clock; once
    ended it is stored."""

    id: str
    model: str
    input: dict[str, Any]
    created: float  # loop time
    created_wall: float  # epoch seconds, to the millisecond (what executions shows)
    queue_delay: float
    run_time: float  # drawn at create; the end shows at created + quantize(run_time)
    due: float  # loop time at which its own end (drawn, or an input failure) is due to show
    failure: Failure | None  # the drawn (or later imposed) failure; None: success
    starting_delay: float = 0.0
    cancel_at: float | None = None  # loop time a cancel that will take effect is due
    ended: str | None = None  # success, error or cancelled once visible
    ended_at: float | None = None
    ended_wall: float | None = None
    video: bytes | None = None
    account: str = ""  # the fingerprint of the key whose account created it

    def status(self, now: float) -> str:
        """The canonical status at ``now``: created, starting, processing, success, error or
        cancelled."""
        if self.ended is not None:
            return self.ended
        return lifecycle_status(now - self.created, self.queue_delay, self.starting_delay)

    def elapsed(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.created)
