"""The simulator's switches: one field per behaviour, so a test names exactly the fault it wants.

The defaults are the contract's account (10 in flight) and the seeds' timings (about 200 s a
video, status visible in 5 s steps); ``scaled`` compresses every duration for tests and the
benchmark without changing the shape of the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runner.models import HAILUO_I2V_PRICE_USD

OUTPUT_SHAPES = frozenset({"list", "string", "json_string", "object_url", "object_video_url"})
ERROR_SHAPES = frozenset({"full", "dispatch", "logs"})

#: The fields holding durations in seconds; ``scaled`` divides each of them.
_TIME_FIELDS = (
    "runtime_mean",
    "runtime_min",
    "runtime_max",
    "queue_delay",
    "status_quantum",
    "create_delay",
    "rate_window",
    "url_ttl",
    "retry_after",
)


@dataclass(frozen=True)
class SimConfig:
    """How the simulated account and server behave. Durations are seconds; rates are shares 0..1."""

    concurrency: int = 10  # account in-flight cap; a create beyond it answers 429
    rate_limit: int | None = None  # at most this many API requests in any rate_window; else 429
    rate_window: float = 60.0
    runtime_mean: float = 200.0  # run time: around the mean, clipped to [runtime_min, runtime_max],
    runtime_min: float = 150.0  # and a share outlier_rate of slow outliers (times outlier_factor)
    runtime_max: float = 300.0
    outlier_rate: float = 0.03
    outlier_factor: float = 2.0
    queue_delay: float = 1.0  # time in "created" before "processing"
    status_quantum: float = 5.0  # an outcome shows only at multiples of this after creation
    failure_rate: float = 0.0  # share ending in error PROVIDER_FAILED (retryable false)
    retryable_failure_rate: float = 0.0  # share ending in error PROVIDER_RATE_LIMIT (retryable)
    output_shape: str = "list"  # one of OUTPUT_SHAPES
    error_shape: str = "full"  # one of ERROR_SHAPES
    legacy_statuses: bool = False  # terminal "failed"/"canceled" instead of "error"/"cancelled"
    create_delay: float = 0.0  # hold a create's answer this long after the prediction exists
    create_fault_rate: float = 0.0  # share of creates that create but answer 500
    truncate_downloads_rate: float = 0.0  # share of CDN downloads cut short (full Content-Length)
    cdn_range: bool = True  # the CDN honours Range (206); False: always a full 200
    url_ttl: float | None = None  # output URLs expire after this long (403); polls re-sign
    retry_after: float | None = None  # if set, 429 answers carry Retry-After: <seconds>
    api_keys: frozenset[str] | None = None  # None: any non-empty key is accepted
    balance_usd: float | None = None  # None: unlimited; else creates beyond it answer 402
    price_usd: float = HAILUO_I2V_PRICE_USD
    video_seconds: float = 3.0  # rendered MP4 length at 24 fps
    max_side: int = 512  # rendered frame: the image fitted within this many pixels
    fetch_timeout: float = 5.0  # fetching an image URL that is not one of its own uploads
    executions_enabled: bool = True  # False: /v1/executions answers 404 (an older server)
    seed: int = 0  # every random draw comes from random.Random(seed)

    def __post_init__(self) -> None:
        if self.output_shape not in OUTPUT_SHAPES:
            raise ValueError(f"output_shape must be one of {sorted(OUTPUT_SHAPES)}")
        if self.error_shape not in ERROR_SHAPES:
            raise ValueError(f"error_shape must be one of {sorted(ERROR_SHAPES)}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1 (or None for no limit)")
        if not 0 <= self.runtime_min <= self.runtime_max:
            raise ValueError("need 0 <= runtime_min <= runtime_max")
        if self.failure_rate + self.retryable_failure_rate > 1:
            raise ValueError("failure_rate + retryable_failure_rate must not exceed 1")
        if self.max_side < 16 or self.video_seconds <= 0:
            raise ValueError("max_side must be at least 16 and video_seconds positive")

    def scaled(self, factor: float) -> SimConfig:
        """A copy with every duration divided by ``factor`` (10 runs ten times faster).

        ``fetch_timeout`` is not scaled: it bounds real network I/O, not simulated time.
        """
        if factor <= 0:
            raise ValueError("factor must be positive")
        changes: dict[str, float] = {}
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value / factor
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
