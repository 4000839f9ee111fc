"""The simulated account's book-keeping: predictions, their lifecycle, limits, money, counters,
best-effort cancels and the draws of transient faults.

No I/O: every method takes ``now`` (the event loop's monotonic time; the wall clock, injectable,
only stamps the times ``GET /v1/executions`` shows) and every random draw comes from one
``random.Random(seed)``, so the same seed and the same requests give the same run. ``app``
turns HTTP requests into calls on ``Account``.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner.simulator.config import SimConfig
from runner.simulator.executions import ExecutionsQuery, execution_status, select_executions

IN_FLIGHT = ("created", "starting", "processing")


@dataclass(frozen=True)
class CreateRecord:
    """One create that made a prediction (refused creates are not recorded here)."""

    t: float
    prediction_id: str
    model: str
    input: dict[str, Any]
    image_sha256: str | None  # set when the image URL is one of the simulator's own uploads


@dataclass(frozen=True)
class Completion:
    """How one prediction ended: when it was created, when its end became visible, and how."""

    created_at: float
    visible_at: float
    run_time: float
    status: str  # success, error or cancelled (the canonical words, whatever legacy_statuses says)


#: The headers that carry the API key; none of them may ever reach another host.
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass(frozen=True)
class SeenRequest:
    """One request a host received: header names as the client spelled them, the path with its
    query, and (where the host keeps it) the body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def credentials(self) -> list[str]:
        """The names of the key-carrying headers (X-API-Key, Authorization) it arrived with."""
        return [k for k in self.headers if k.lower() in CREDENTIAL_HEADERS]


@dataclass
class SimStats:
    """Counters read by tests and the benchmark; times are the event loop's ``loop.time()``."""

    api_requests: list[tuple[float, str]] = field(default_factory=list)
    creates: list[CreateRecord] = field(default_factory=list)
    presigns: int = 0
    uploads: int = 0
    downloads: int = 0
    renders: int = 0  # MP4s actually encoded (repeated image + motion pairs come from the cache)
    in_flight: int = 0
    max_in_flight: int = 0
    refused_cap: int = 0
    refused_rate: int = 0
    refused_balance: int = 0
    completions: dict[str, Completion] = field(default_factory=dict)
    # -- the hostile switches ----------------------------------------------------------------
    bad_create_answers: int = 0  # creates answered create_bad_answer (created or not)
    hidden_polls: int = 0  # polls of an existing prediction answered 404 (poll_not_found_*)
    redirects: int = 0  # polls and creates answered with a redirect (redirect_*_to)
    expired_uploads: int = 0  # storage reads (GETs and creates) refused after storage_ttl
    cdn_requests: list[SeenRequest] = field(default_factory=list)  # all the CDN host received
    # -- the real service's rough edges ------------------------------------------------------
    faults: dict[str, int] = field(default_factory=dict)  # transient faults, by endpoint
    cancels: int = 0  # cancels of an in-flight prediction
    cancels_ignored: int = 0  # of which the service drew to ignore (cancel_ignored_rate)
    private_urls_refused: int = 0  # image URLs not fetched: a private host (refuse_private_urls)

    def summary(self) -> dict[str, Any]:
        """The counters as JSON-ready values (``GET /_sim/stats``)."""
        ended: dict[str, int] = {}
        for completion in self.completions.values():
            ended[completion.status] = ended.get(completion.status, 0) + 1
        return {
            "api_requests": len(self.api_requests),
            "creates": len(self.creates),
            "presigns": self.presigns,
            "uploads": self.uploads,
            "downloads": self.downloads,
            "renders": self.renders,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "refused_cap": self.refused_cap,
            "refused_rate": self.refused_rate,
            "refused_balance": self.refused_balance,
            "completions": ended,
            "bad_create_answers": self.bad_create_answers,
            "hidden_polls": self.hidden_polls,
            "redirects": self.redirects,
            "expired_uploads": self.expired_uploads,
            "cdn_requests": len(self.cdn_requests),
            "cdn_requests_with_credentials": sum(1 for r in self.cdn_requests if r.credentials),
            "faults": dict(sorted(self.faults.items())),
            "cancels": self.cancels,
            "cancels_ignored": self.cancels_ignored,
            "private_urls_refused": self.private_urls_refused,
        }


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


class RequestWindow:
    """At most ``limit`` admitted requests in any ``window`` seconds (a strict sliding window).

    Refused requests are not counted, so a client that waits for the window to pass is
    admitted again.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def admit(self, now: float) -> bool:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


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
class Prediction:
    """One prediction. In flight its status follows from the clock; once ended it is stored."""

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

    def status(self, now: float) -> str:
        """The canonical status at ``now``: created, starting, processing, success, error or
        cancelled."""
        if self.ended is not None:
            return self.ended
        return lifecycle_status(now - self.created, self.queue_delay, self.starting_delay)

    def elapsed(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.created)


@dataclass(frozen=True)
class CancelPlan:
    """What a cancel request does: when it ends the prediction (None: never, it was ignored or
    came too late) and the ``status`` word its answer carries (which says nothing of either)."""

    takes_effect_at: float | None
    answer_status: str


class Account:
    """The one simulated account: its predictions, in-flight cap, balance and counters."""

    def __init__(
        self, config: SimConfig, stats: SimStats, wall: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.stats = stats
        self.wall = wall
        self.rng = random.Random(config.seed)
        self.predictions: dict[str, Prediction] = {}
        self.spent_usd = 0.0

    def create_refusal(self) -> tuple[int, dict[str, Any]] | None:
        """``(status, body)`` if a create must be refused now (cap, then balance), else None."""
        c = self.config
        if self.stats.in_flight >= c.concurrency:
            self.stats.refused_cap += 1
            details = (
                f"Account rate limited: account is limited to {c.concurrency} concurrent "
                f"executions ({self.stats.in_flight} in flight)"
            )
            return 429, {"status": 429, "error": "too many requests", "details": details}
        if c.balance_usd is not None:
            available = c.balance_usd - self.spent_usd - self.stats.in_flight * c.price_usd
            if available + 1e-9 < c.price_usd:
                self.stats.refused_balance += 1
                details = (
                    f"Insufficient balance: ${max(0.0, available):.2f} available "
                    f"(in-flight predictions reserve their estimate), ${c.price_usd:.2f} required"
                )
                return 402, {"status": 402, "error": "payment required", "details": details}
        return None

    def create(
        self, model: str, input: dict[str, Any], now: float, image_sha256: str | None
    ) -> Prediction:
        """Make a prediction: draw its run time and outcome, take an in-flight slot."""
        c = self.config
        run_time = draw_run_time(self.rng, c)
        pred = Prediction(
            id=str(uuid.uuid4()),  # not from the seeded rng: ids stay unique across simulators
            model=model,
            input=input,
            created=now,
            created_wall=round(self.wall(), 3),
            queue_delay=c.queue_delay,
            run_time=run_time,
            due=now + quantize(max(run_time, c.queue_delay), c.status_quantum),
            failure=draw_failure(self.rng, c),
            starting_delay=c.starting_delay,
        )
        self.predictions[pred.id] = pred
        self.stats.creates.append(CreateRecord(now, pred.id, model, input, image_sha256))
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        return pred

    def bad_answer(self) -> str | None:
        """The bad answer (``create_bad_answer``) this create gets, drawn at
        ``create_bad_answer_rate``; None for the documented answer. Draws only when the switch
        is set, so other runs keep their sequence of draws."""
        c = self.config
        if c.create_bad_answer is None or self.rng.random() >= c.create_bad_answer_rate:
            return None
        self.stats.bad_create_answers += 1
        return c.create_bad_answer

    def poll_hidden(self, pred: Prediction, now: float) -> bool:
        """Whether a poll of ``pred`` answers 404 as if it did not exist: while it is younger than
        ``poll_not_found_for``, and at random for a share ``poll_not_found_rate`` of polls."""
        c = self.config
        hidden = now - pred.created < c.poll_not_found_for or (
            c.poll_not_found_rate > 0 and self.rng.random() < c.poll_not_found_rate
        )
        if hidden:
            self.stats.hidden_polls += 1
        return hidden

    def fault(self, endpoint: str) -> str | None:
        """The transient fault (one of ``fault_kinds``) this request to ``endpoint`` gets: every
        one of the first ``fault_first`` to the ``fault_endpoints``, then drawn at
        ``fault_rate``; None to answer it. Counted per endpoint. Draws only when a switch is
        on, so other runs keep their sequence of draws."""
        c = self.config
        if endpoint not in c.fault_endpoints:
            return None
        if sum(self.stats.faults.values()) < c.fault_first:
            pass  # still in the outage
        elif c.fault_rate <= 0 or self.rng.random() >= c.fault_rate:
            return None
        self.stats.faults[endpoint] = self.stats.faults.get(endpoint, 0) + 1
        return self.rng.choice(sorted(c.fault_kinds))

    def cancel(self, pred: Prediction, now: float) -> CancelPlan:
        """A cancel of ``pred`` asked at ``now``: best effort, as the real service's.

        An ended prediction is left as it is. Otherwise a share ``cancel_ignored_rate`` of
        cancels never take effect; the others take effect at the prediction's next status
        quantum (at once with ``cancel_at_once``), unless one already asked takes effect
        sooner. Whether it still ends the prediction then is ``cancel_due``'s decision. The
        answer's ``status`` is ``cancel_answer_status`` (``random``: drawn), whatever happens.
        """
        c = self.config
        at: float | None = None
        if pred.ended is None:
            self.stats.cancels += 1
            if c.cancel_ignored_rate > 0 and self.rng.random() < c.cancel_ignored_rate:
                self.stats.cancels_ignored += 1
            else:
                elapsed = now - pred.created
                at = (
                    now
                    if c.cancel_at_once
                    else pred.created + next_quantum(elapsed, c.status_quantum)
                )
                if pred.cancel_at is None or at < pred.cancel_at:
                    pred.cancel_at = at
                at = pred.cancel_at
        answer = c.cancel_answer_status
        if answer == "random":
            answer = self.rng.choice(("success", "cancelled"))
        return CancelPlan(at, answer)

    def cancel_due(self, pred: Prediction, now: float) -> bool:
        """End ``pred`` as cancelled at ``now`` (its cancel's time) unless its own end came
        first: it ended already, or its end is due no later (that end stands, and a success is
        billed). Returns whether the cancel took effect."""
        if pred.ended is not None or pred.due <= now:
            return False
        self.finish(pred, "cancelled", now)
        return True

    def listed(self, now: float) -> list[Prediction]:
        """The predictions ``GET /v1/executions`` knows of: those ``executions_lag`` old."""
        lag = self.config.executions_lag
        return [p for p in self.predictions.values() if now - p.created >= lag]

    def visible_time(self, pred: Prediction, ready: float) -> float:
        """When an outcome ready at ``ready`` may show: the next status quantum after creation."""
        return pred.created + quantize(max(ready - pred.created, 0.0), self.config.status_quantum)

    def finish(self, pred: Prediction, status: str, now: float) -> None:
        """End an in-flight prediction (success, error or cancelled) and free its slot.

        Only a success is billed. Ending an already ended prediction does nothing.
        """
        if pred.ended is not None:
            return
        pred.ended, pred.ended_at, pred.ended_wall = status, now, round(self.wall(), 3)
        if status == "success":
            self.spent_usd += self.config.price_usd
        self.stats.in_flight -= 1
        run = pred.run_time if status == "success" else pred.elapsed(now)
        self.stats.completions[pred.id] = Completion(pred.created, now, run, status)

    def wire_status(self, status: str) -> str:
        """The status word sent on the wire (legacy servers say failed/canceled)."""
        if self.config.legacy_statuses:
            return {"error": "failed", "cancelled": "canceled"}.get(status, status)
        return status

    def output(self, pred: Prediction, video_url: str | None) -> tuple[object, str | None]:
        """``(output, logs)`` of a prediction, shaped per output_shape / error_shape."""
        if pred.ended == "success" and video_url is not None:
            shape = self.config.output_shape
            if shape == "string":
                return video_url, None
            if shape == "json_string":
                return f'["{video_url}"]', None
            if shape == "object_url":
                return {"url": video_url}, None
            if shape == "object_video_url":
                return {"video_url": video_url}, None
            return [video_url], None
        if pred.ended == "error" and pred.failure is not None:
            f = pred.failure
            if self.config.error_shape == "logs":
                return None, f"Error: {f.code}: {f.message}"
            if self.config.error_shape == "dispatch":
                return {"error": f.message}, None
            full = {
                "error": "Execution failed",
                "error_code": f.code,
                "error_message": f.message,
                "classification": {"category": f.category},
                "retryable": f.retryable,
            }
            return full, None
        return None, None

    def cost(self, pred: Prediction) -> float:
        """What the envelope reports: the price of a success (or ``reported_cost``), else 0."""
        if pred.ended != "success":
            return 0.0
        reported = self.config.reported_cost
        return self.config.price_usd if reported is None else reported

    def poll_fails(self) -> bool:
        """Whether this poll of an existing prediction answers ``poll_error_status``."""
        c = self.config
        if c.poll_error_status is None:
            return False
        return c.poll_error_rate >= 1 or self.rng.random() < c.poll_error_rate

    def predict_time(self, pred: Prediction, now: float) -> float:
        if pred.ended is None:
            return 0.0
        return round(pred.run_time if pred.ended == "success" else pred.elapsed(now), 3)

    def envelope(
        self, pred: Prediction, now: float, video_url: str | None, base: str
    ) -> dict[str, Any]:
        """The poll envelope of ``GET /v1/prediction/{id}``."""
        output, logs = self.output(pred, video_url)
        return {
            "id": pred.id,
            "input": pred.input,
            "status": self.wire_status(pred.status(now)),
            "output": output,
            "logs": logs,
            "metrics": {"predict_time": self.predict_time(pred, now), "cost": self.cost(pred)},
            "urls": {
                "get": f"{base}/v1/prediction/{pred.id}",
                "cancel": f"{base}/v1/prediction/{pred.id}/cancel",
            },
        }

    def execution_row(self, pred: Prediction, now: float, video_url: str | None) -> dict[str, Any]:
        """One row of ``GET /v1/executions`` (no input echo, as the API does). ``output`` is a
        string: the video URL of a success, the JSON text of an error's object, else null."""
        status = pred.status(now)
        began = pred.created + pred.queue_delay <= (pred.ended_at or now)
        started = pred.created_wall + pred.queue_delay if began else None
        output, logs = self.output(pred, video_url)
        text: str | None = None
        if pred.ended == "success":
            text = video_url
        elif pred.ended == "error":
            text = logs if output is None else json.dumps(output)
        return {
            "id": pred.id,
            "model": pred.model,
            "requested_model": pred.model,
            "status": execution_status(status),
            "created_at": rfc3339(pred.created_wall),
            "started_at": rfc3339(started) if started is not None else None,
            "completed_at": rfc3339(pred.ended_wall) if pred.ended_wall is not None else None,
            "execution_cost": self.cost(pred),
            "run_time": self.predict_time(pred, now) if pred.ended else None,
            "output": text,
            "workflow_id": None,  # set for a workflow's steps; plain predictions have none
            "workflow_execution_id": None,
        }

    def executions(self, query: ExecutionsQuery, now: float) -> tuple[list[Prediction], int]:
        """``(page, total)`` of ``GET /v1/executions``: the predictions listed by now
        (``executions_lag``) matching ``query``; without ``from``, only those created within
        ``executions_window`` of the wall clock."""
        window = self.config.executions_window
        earliest = None if query.since is not None or window is None else self.wall() - window
        return select_executions(self.listed(now), query, now, earliest=earliest)


def rfc3339(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC to the millisecond, e.g. ``2025-01-31T12:00:00.123Z``."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
