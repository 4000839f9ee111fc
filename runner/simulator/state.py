"""The simulated account's book-keeping: predictions, their lifecycle, limits, money, counters.

No I/O: every method takes ``now`` (the event loop's monotonic time; the wall clock, injectable,
only stamps the times ``GET /v1/executions`` shows) and every random draw comes from one
``random.Random(seed)``, so the same seed and the same requests give the same run. ``app``
turns HTTP requests into calls on ``Account``.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from runner.simulator.config import SimConfig

IN_FLIGHT = ("created", "processing")


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


def validate_input(schema: Mapping[str, Any], value: object) -> str | None:
    """What is wrong with ``value`` against a model's JSON Schema, or None if it fits.

    Checks what ``request_schema`` uses: required fields, ``type``, ``enum``, ``minLength``,
    ``maxLength``, ``minimum``, ``maximum`` and ``format: uri`` (an http(s) URL). Unknown
    fields are ignored, as the API does.
    """
    if not isinstance(value, dict):
        return "input must be an object"
    for name in schema.get("required", ()):
        if value.get(name) is None:
            return f"input.{name} is required"
    for name, rule in schema.get("properties", {}).items():
        if name in value and value[name] is not None:
            problem = _check_field(rule, value[name])
            if problem:
                return f"input.{name} {problem}"
    return None


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


def _check_field(rule: Mapping[str, Any], v: object) -> str | None:
    kind = rule.get("type")
    if kind in _TYPES and (
        not isinstance(v, _TYPES[kind]) or (isinstance(v, bool) and kind != "boolean")
    ):
        return f"must be of type {kind}"
    if "enum" in rule and v not in rule["enum"]:
        return f"must be one of {rule['enum']}"
    if isinstance(v, str):
        if len(v) < rule.get("minLength", 0):
            return f"must be at least {rule['minLength']} characters"
        if "maxLength" in rule and len(v) > rule["maxLength"]:
            return f"must be at most {rule['maxLength']} characters"
        parts = urlsplit(v)
        if rule.get("format") == "uri" and (
            parts.scheme not in ("http", "https") or not parts.netloc
        ):
            return "must be an http(s) URL"
    if isinstance(v, int | float) and not isinstance(v, bool):
        if "minimum" in rule and v < rule["minimum"]:
            return f"must be at least {rule['minimum']}"
        if "maximum" in rule and v > rule["maximum"]:
            return f"must be at most {rule['maximum']}"
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
    due: float  # loop time at which the drawn outcome is due to show
    failure: Failure | None  # the drawn (or later imposed) failure; None: success
    ended: str | None = None  # success, error or cancelled once visible
    ended_at: float | None = None
    ended_wall: float | None = None
    video: bytes | None = None

    def status(self, now: float) -> str:
        """The canonical status at ``now``: created, processing, success, error or cancelled."""
        if self.ended is not None:
            return self.ended
        return "created" if now < self.created + self.queue_delay else "processing"

    def elapsed(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.created)


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
        """One row of ``GET /v1/executions`` (no input echo, as the API does)."""
        status = pred.status(now)
        began = pred.created + pred.queue_delay <= (pred.ended_at or now)
        started = pred.created_wall + pred.queue_delay if began else None
        output, _ = self.output(pred, video_url)
        return {
            "id": pred.id,
            "model": pred.model,
            "status": execution_status(status),
            "created_at": rfc3339(pred.created_wall),
            "started_at": rfc3339(started) if started is not None else None,
            "completed_at": rfc3339(pred.ended_wall) if pred.ended_wall is not None else None,
            "execution_cost": self.cost(pred),
            "run_time": self.predict_time(pred, now) if pred.ended else None,
            "output": output,
        }


def rfc3339(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC to the millisecond, e.g. ``2025-01-31T12:00:00.123Z``."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


#: The status words ``GET /v1/executions`` knows (and accepts in its ``status`` filter).
EXECUTION_STATUSES = frozenset({"created", "starting", "success", "error"})
#: ``total_count`` stops counting here and ``total_capped`` turns true (the contract's lower bound).
EXECUTIONS_COUNT_CAP = 1000


def execution_status(status: str) -> str:
    """A prediction status in the executions vocabulary: processing shows as ``starting`` and a
    cancelled prediction as ``error`` (the list has no word for either)."""
    return {"processing": "starting", "cancelled": "error"}.get(status, status)


class QueryError(ValueError):
    """A query parameter of ``GET /v1/executions`` is not acceptable (the API answers 400)."""


@dataclass(frozen=True)
class ExecutionsQuery:
    model: str | None = None
    statuses: frozenset[str] | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, inclusive
    limit: int = 20
    offset: int = 0


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise QueryError(f"{name} must be between {low} and {high}")
    return value


def _time_param(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise QueryError(f"{name} must be an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise QueryError(f"{name} must be an RFC 3339 timestamp with a time zone")
    return when.timestamp()


def parse_executions_query(params: Mapping[str, str]) -> ExecutionsQuery:
    """The filters of ``GET /v1/executions``; raises QueryError for anything the API refuses.

    ``limit`` is 1-100 (default 20), ``offset`` at least 0, ``status`` a comma list of
    EXECUTION_STATUSES, ``from``/``to`` RFC 3339 with a zone.
    """
    statuses: frozenset[str] | None = None
    if params.get("status"):
        words = {w.strip().lower() for w in params["status"].split(",") if w.strip()}
        unknown = sorted(words - EXECUTION_STATUSES)
        if unknown or not words:
            raise QueryError(f"invalid status {', '.join(unknown) or params['status']!r}")
        statuses = frozenset(words)
    return ExecutionsQuery(
        model=params.get("model") or None,
        statuses=statuses,
        since=_time_param(params, "from"),
        until=_time_param(params, "to"),
        limit=_int_param(params, "limit", 20, 1, 100),
        offset=_int_param(params, "offset", 0, 0, 10**9),
    )


def select_executions(
    preds: Iterable[Prediction], query: ExecutionsQuery, now: float
) -> tuple[list[Prediction], int]:
    """``(page, total)``: the predictions matching ``query``, newest first, sliced by offset and
    limit, and how many matched in all."""
    matched = [
        p
        for p in preds
        if (query.model is None or p.model == query.model)
        and (query.statuses is None or execution_status(p.status(now)) in query.statuses)
        and (query.since is None or p.created_wall >= query.since)
        and (query.until is None or p.created_wall <= query.until)
    ]
    matched.sort(key=lambda p: p.created, reverse=True)
    return matched[query.offset : query.offset + query.limit], len(matched)
