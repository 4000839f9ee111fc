"""The simulator's switches: one field per behaviour, so a test names exactly the fault it wants.

The defaults follow the real service (``/work/shared/eachlabs-api.md``): the contract's account
(10 in flight), the seeds' timings (about 200 s a video, status visible in 5 s steps), the
gateway's terse error bodies, best-effort cancels, an executions list that lags, image URLs on
private networks that cannot be fetched. ``PROFILES`` names sets of changes (``kind`` for the
old neat server, ``realistic`` for a few percent of transient faults); ``scaled`` compresses
every duration for tests and the benchmark without changing the shape of the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from runner.models import HAILUO_I2V_PRICE_USD

OUTPUT_SHAPES = frozenset({"list", "string", "json_string", "object_url", "object_video_url"})
ERROR_SHAPES = frozenset({"full", "dispatch", "logs"})
#: What a create with a bad answer says: 200 ``{}``, 200 HTML, or 500 with a JSON error.
BAD_ANSWERS = frozenset({"empty", "html", "500"})
#: ``terse``: the real gateway's bodies (400/401/422 ``{}``, 404 ``not found``); ``helpful``:
#: texts that say what was wrong (the simulator's old answers).
ERROR_BODIES = frozenset({"terse", "helpful"})
#: What a cancel answers in its ``status`` field (the contract's conflict); ``random`` draws one.
CANCEL_ANSWERS = frozenset({"success", "cancelled", "random"})
#: The requests a transient fault (``fault_rate``) can hit: the API endpoints but create (it has
#: its own switches), the presigned upload PUT, storage reads, and (not by default) the CDN.
FAULT_ENDPOINTS = frozenset(
    {"get", "cancel", "model", "models", "executions", "presign", "upload", "storage", "cdn"}
)
DEFAULT_FAULT_ENDPOINTS = FAULT_ENDPOINTS - {"cdn"}
#: What a fault does: answer 500 (JSON), 502 or 504 (a gateway's HTML page), close the
#: connection without an answer (``reset``), or hold the request ``fault_hang`` s, then 504.
FAULT_KINDS = frozenset({"500", "502", "504", "reset", "timeout"})
DEFAULT_FAULT_KINDS = frozenset({"500", "502", "504", "reset"})
#: Without ``from``, the executions list shows the last 90 days (the contract).
EXECUTIONS_WINDOW = 90 * 24 * 3600.0

#: With ``rate_burst`` and no ``rate_limit``, the bucket refills this many per ``rate_window``:
#: the contract's 60 requests per minute.
BURST_REFILL_COUNT = 60

#: The fields holding durations in seconds; ``scaled`` divides each of them.
_TIME_FIELDS = (
    "runtime_mean",
    "runtime_min",
    "runtime_max",
    "queue_delay",
    "status_quantum",
    "create_delay",
    "create_queue_delay",
    "rate_window",
    "url_ttl",
    "retry_after",
    "executions_lag",
    "poll_not_found_for",
    "storage_ttl",
    "starting_delay",
    "fault_hang",
    "executions_window",
)


@dataclass(frozen=True)
class SimConfig:
    """How the simulated server and its accounts behave. Durations are seconds; rates are shares
    0..1. Each API key is its own account (``accounts``): the cap, rate and balance below are
    each account's."""

    concurrency: int = 10  # each account's in-flight cap; a create beyond it answers 429
    rate_limit: int | None = None  # per account: at most this many API requests in any rate_window
    rate_window: float = 60.0
    # rate_burst set: a token bucket limits API requests instead of the window, as many gateways
    # do (limits.TokenBucket): it holds rate_burst, full at first, and refills at rate_limit (or
    # BURST_REFILL_COUNT) per rate_window, so a burst legal under the window meets 429s
    rate_burst: int | None = None
    runtime_mean: float = 200.0  # run time: around the mean, clipped to [runtime_min, runtime_max],
    runtime_min: float = 150.0  # and a share outlier_rate of slow outliers (times outlier_factor)
    runtime_max: float = 300.0
    outlier_rate: float = 0.03
    outlier_factor: float = 2.0
    queue_delay: float = 1.0  # time in "created" before "starting"
    starting_delay: float = 1.0  # then time in "starting" before "processing"
    status_quantum: float = 5.0  # an outcome shows only at multiples of this after creation
    failure_rate: float = 0.0  # share ending in error PROVIDER_FAILED (retryable false)
    retryable_failure_rate: float = 0.0  # share ending in error PROVIDER_RATE_LIMIT (retryable)
    output_shape: str = "list"  # one of OUTPUT_SHAPES
    error_shape: str = "full"  # one of ERROR_SHAPES
    legacy_statuses: bool = False  # terminal "failed"/"canceled" instead of "error"/"cancelled"
    create_delay: float = 0.0  # hold a create's answer this long after the prediction exists
    create_queue_delay: float = 0.0  # hold a create this long before it makes the prediction
    create_fault_rate: float = 0.0  # share of creates that create but answer 500
    truncate_downloads_rate: float = 0.0  # share of CDN downloads cut short (full Content-Length)
    cdn_range: bool = True  # the CDN honours Range (206); False: always a full 200
    url_ttl: float | None = None  # output URLs expire after this long (403); polls re-sign
    retry_after: float | None = None  # if set, 429 answers carry Retry-After: <seconds>
    api_keys: frozenset[str] | None = None  # None: any non-empty key; each key is its own account
    balance_usd: float | None = None  # each account's; None: unlimited; else beyond it 402
    price_usd: float = HAILUO_I2V_PRICE_USD
    video_seconds: float = 3.0  # rendered MP4 length at 24 fps
    max_side: int = 512  # rendered frame: the image fitted within this many pixels
    fetch_timeout: float = 5.0  # fetching an image URL that is not one of its own uploads
    executions_enabled: bool = True  # False: /v1/executions answers 404 (an older server)
    seed: int = 0  # every random draw comes from random.Random(seed)
    # -- the real service's rough edges: on by default (PROFILES["kind"] turns them off) -------
    error_bodies: str = "terse"  # one of ERROR_BODIES
    cancel_at_once: bool = False  # False: a cancel takes effect at the next status quantum
    cancel_ignored_rate: float = 0.1  # share of cancels that never take effect
    cancel_answer_status: str = "success"  # one of CANCEL_ANSWERS: the cancel answer's status
    refuse_private_urls: bool = True  # image URLs on loopback/private/link-local hosts fail
    executions_lag: float = 3.0  # a prediction shows in /v1/executions only once this old
    executions_window: float | None = EXECUTIONS_WINDOW  # without from: only this far back
    # -- transient faults: off by default (PROFILES["realistic"] turns them on) -----------------
    fault_rate: float = 0.0  # share of requests to fault_endpoints that fault
    fault_endpoints: frozenset[str] = DEFAULT_FAULT_ENDPOINTS  # a subset of FAULT_ENDPOINTS
    fault_kinds: frozenset[str] = DEFAULT_FAULT_KINDS  # a subset of FAULT_KINDS, drawn evenly
    fault_hang: float = 60.0  # how long a "timeout" fault holds the request before its 504
    fault_first: int = 0  # an outage: the first this many requests to fault_endpoints all fault
    # -- a hostile server: every switch below is off by default ---------------------------------
    create_bad_answer: str | None = None  # one of BAD_ANSWERS: what a bad create answer says
    create_bad_answer_rate: float = 1.0  # the share of creates answered so (the switch set)
    create_bad_answer_creates: bool = True  # True: it made the prediction all the same; False: not
    poll_not_found_for: float = 0.0  # polls of a prediction younger than this answer 404
    poll_not_found_rate: float = 0.0  # and this share of all other polls answer 404 too
    redirect_polls_to: str | None = None  # a base URL: polls answer 302 to the same path there
    redirect_creates_to: str | None = None  # creates answer 307 there and create nothing here
    cdn_body_bytes: int | None = None  # the CDN sends a generated MP4-looking body of this size
    cdn_stall: bool = False  # the CDN sends headers and 4 KB (never all), then nothing at all
    storage_ttl: float | None = None  # uploads are served this long after their PUT (else 180 d)
    poll_error_status: int | None = None  # polls of existing predictions answer this status
    poll_error_rate: float = 1.0  # the share of polls answered so (the switch set)
    upload_refuse_status: int | None = None  # the presigned PUT answers this status, stores nothing
    reported_cost: float | None = None  # metrics.cost a success reports (nan, inf, < 0 allowed)
    create_answer_id: str | None = None  # creates answer with this id, not the prediction's own

    def __post_init__(self) -> None:
        if self.output_shape not in OUTPUT_SHAPES:
            raise ValueError(f"output_shape must be one of {sorted(OUTPUT_SHAPES)}")
        if self.error_shape not in ERROR_SHAPES:
            raise ValueError(f"error_shape must be one of {sorted(ERROR_SHAPES)}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 (or None for no limit)")
        if self.rate_burst is not None:
            if self.rate_burst < 1:
                raise ValueError("rate_burst must be at least 1 (or None for the sliding window)")
            if not (math.isfinite(self.rate_window) and self.rate_window > 0):
                raise ValueError("rate_window must be a positive number of seconds")
        if not 0 <= self.runtime_min <= self.runtime_max:
            raise ValueError("need 0 <= runtime_min <= runtime_max")
        if self.failure_rate + self.retryable_failure_rate > 1:
            raise ValueError("failure_rate + retryable_failure_rate must not exceed 1")
        if self.max_side < 16 or self.video_seconds <= 0:
            raise ValueError("max_side must be at least 16 and video_seconds positive")
        for name in ("poll_error_status", "upload_refuse_status"):
            status = getattr(self, name)
            if status is not None and not 400 <= status <= 599:
                raise ValueError(f"{name} must be an HTTP error status (400-599) or None")
        if not 0 <= self.poll_error_rate <= 1:
            raise ValueError("poll_error_rate must be a share from 0 to 1")
        if self.create_bad_answer is not None and self.create_bad_answer not in BAD_ANSWERS:
            raise ValueError(f"create_bad_answer must be one of {sorted(BAD_ANSWERS)} or None")
        for name in (
            "create_bad_answer_rate",
            "poll_not_found_rate",
            "cancel_ignored_rate",
            "fault_rate",
            "create_fault_rate",
            "truncate_downloads_rate",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in (
            "executions_lag",
            "poll_not_found_for",
            "starting_delay",
            "fault_hang",
            "create_queue_delay",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds, not negative")
        window = self.executions_window
        if window is not None and not (math.isfinite(window) and window > 0):
            raise ValueError("executions_window must be positive (or None for no window)")
        if self.error_bodies not in ERROR_BODIES:
            raise ValueError(f"error_bodies must be one of {sorted(ERROR_BODIES)}")
        if self.cancel_answer_status not in CANCEL_ANSWERS:
            raise ValueError(f"cancel_answer_status must be one of {sorted(CANCEL_ANSWERS)}")
        if not self.fault_endpoints <= FAULT_ENDPOINTS:
            unknown = sorted(self.fault_endpoints - FAULT_ENDPOINTS)
            raise ValueError(
                f"fault_endpoints: unknown {unknown} (creates have create_fault_rate); "
                f"choose from {sorted(FAULT_ENDPOINTS)}"
            )
        if not self.fault_kinds or not self.fault_kinds <= FAULT_KINDS:
            raise ValueError(f"fault_kinds must be a non-empty subset of {sorted(FAULT_KINDS)}")
        if self.fault_first < 0:
            raise ValueError("fault_first must not be negative")
        if self.storage_ttl is not None and self.storage_ttl <= 0:
            raise ValueError("storage_ttl must be positive (or None for the 180-day retention)")
        if self.cdn_body_bytes is not None and self.cdn_body_bytes < 1:
            raise ValueError("cdn_body_bytes must be at least 1 (or None to serve the video)")
        for name in ("redirect_polls_to", "redirect_creates_to"):
            base = getattr(self, name)
            if base is not None:
                parts = urlsplit(base)
                if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                    raise ValueError(f"{name} must be an http(s) base URL without a query")

    def scaled(self, factor: float) -> SimConfig:
        """A copy with every duration divided by ``factor`` (10 runs ten times faster).

        ``fetch_timeout`` is not scaled: it bounds real network I/O, not simulated time. Counts
        (``rate_limit``, ``rate_burst``, ``concurrency``) stay as they are, so the bucket of
        ``rate_burst`` refills ``factor`` times faster through the shorter ``rate_window``.
        """
        if factor <= 0:
            raise ValueError("factor must be positive")
        changes: dict[str, float] = {}
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value / factor
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def profile(cls, name: str, **changes: Any) -> SimConfig:
        """The config of profile ``name`` (see PROFILES), then ``changes`` on top of it.

        Raises ValueError for an unknown profile (or a change the config refuses).
        """
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
        return cls(**{**PROFILES[name], **changes})


def parse_names(text: str, allowed: frozenset[str], what: str) -> frozenset[str]:
    """A comma list of names from ``allowed`` (``"500,reset"``) as a set; ValueError naming
    ``what`` for an empty list or an unknown name."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - allowed)
    if not names or unknown:
        raise ValueError(
            f"{what}: {', '.join(unknown) or 'nothing'} is not one of {', '.join(sorted(allowed))}"
        )
    return names


#: Named sets of changes to the defaults; ``SimConfig.profile(name)`` and ``simulate --profile``.
#: ``real``: the defaults, which follow the real service. ``kind``: the old neat server (helpful
#: error texts, cancels that always take effect at once, an executions list without lag, image
#: URLs fetched wherever they point). ``realistic``: the defaults plus a few percent of transient
#: faults on every endpoint, creates and CDN downloads included.
PROFILES: dict[str, dict[str, Any]] = {
    "real": {},
    "kind": {
        "error_bodies": "helpful",
        "cancel_at_once": True,
        "cancel_ignored_rate": 0.0,
        "executions_lag": 0.0,
        "refuse_private_urls": False,
    },
    "realistic": {
        "fault_rate": 0.03,
        "create_fault_rate": 0.02,
        "truncate_downloads_rate": 0.03,
    },
}
