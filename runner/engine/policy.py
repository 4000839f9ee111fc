"""When to poll what: pure functions of (now, the job, what the batch has learned), table-tested.

The request window (60 a minute by default) is shared by everything in flight, and a slot
whose prediction finished unnoticed sits idle. So the budget is spent where a completion is
likely:

- ``RuntimeModel`` learns the batch's run times from its own completed predictions, starting
  from a broad prior around ``--expected-runtime``. Its CDF gives, for a prediction of a given
  age, the chance it has finished.
- Before a prediction can plausibly finish (below the model's ``earliest`` age) it is polled
  at ages doubling from ``poll_min`` (5, 10, 20, 40, 80 s): a prior that is wrong by 100x
  costs a few polls, never a stall (a finish is seen by twice its age at the latest). From
  ``earliest`` on, it may be polled every ``poll_min`` (the service's status is quantised to
  ~5 s: polling faster gains nothing).
- When several polls wait for the budget, ``poll_score`` ranks them: the chance that this poll
  finds the prediction finished, given that the last one did not.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from runner.api.answers import backoff as backoff  # the engine's back-offs are the API's

#: Spread of the prior in log space: with a 200 s prior, 1 % of runs under ~90 s, 1 % over ~450 s.
PRIOR_SIGMA = 0.35
#: How many observations the prior counts as once real ones arrive.
PRIOR_WEIGHT = 2.0
#: Observations before the model's own minimum replaces the prior's low quantile.
TRUSTED_AFTER = 5
#: The earliest plausible finish, as a share of the fastest run seen so far.
EARLIEST_MARGIN = 0.9
#: Polls land at least this share of a quantum after a quantum boundary (boundaries are counted
#: from our create time, which is later than the server's, so they are never early).
GRID_OFFSET = 0.1
#: Predictions created together fall due together, quantum after quantum: a thousand created
#: in the same second would all be woken in the same few milliseconds, and the last of them
#: polled late by all the work of the others. So each prediction's schedule is moved later by
#: an offset of its own, drawn from its id, of up to this share of a quantum (``poll_offset``)...
MAX_SPREAD = 0.8
#: ...once this many may be in flight; fewer spread over proportionally less (10: a tenth of
#: it), so a small batch keeps its polls just after the boundaries.
SPREAD_FULL_AT = 100
#: Polls fall due on ticks of this share of a quantum on the event loop's clock (``on_tick``),
#: so those due within one tick go in the same turn of the loop: it wakes once for them all,
#: and their answers come back together. At a thousand in flight that is about 15 polls a
#: tick and 10-15 % less CPU per request than a wake-up per poll. A poll moves to the nearest
#: tick, at most half a tick (2 % of a quantum) either way, so two polls of a prediction may be
#: that much less than ``poll_min`` apart: rounding always up would add up, poll after poll
#: (each poll goes a little after its due time), and drift the polls away from just after the
#: quantum boundaries, where they see an end soonest.
TICK = 1 / 25
#: Share of the request window that must be free for polls in the window every quantum.
SPARE_FOR_FULL_PACE = 0.2
#: Only the most recent run times are kept: the model adapts to drift and stays cheap.
MEMORY = 256
_Z01 = 2.326  # the standard normal's 99 % quantile


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass
class RuntimeModel:
    """Run times seen in this batch, blended with a lognormal prior centred on ``expected``."""

    expected: float
    observed: list[float] = field(default_factory=list)  # sorted
    _recent: list[float] = field(default_factory=list)

    def observe(self, runtime: float) -> None:
        """Learn one completed prediction's run time (seconds from create to finish)."""
        if runtime <= 0 or not math.isfinite(runtime):
            return
        self._recent.append(runtime)
        bisect.insort(self.observed, runtime)
        if len(self._recent) > MEMORY:
            oldest = self._recent.pop(0)
            del self.observed[bisect.bisect_left(self.observed, oldest)]

    def prior_cdf(self, age: float) -> float:
        if age <= 0:
            return 0.0
        return _normal_cdf(math.log(age / self.expected) / PRIOR_SIGMA)

    def empirical_cdf(self, age: float) -> float:
        """The share of observed run times below ``age``, interpolated between observations."""
        obs = self.observed
        if not obs or age < obs[0]:
            return 0.0
        if age >= obs[-1]:
            return 1.0
        i = bisect.bisect_right(obs, age)  # obs[i-1] <= age < obs[i]
        lo, hi = obs[i - 1], obs[i]
        frac = (age - lo) / (hi - lo) if hi > lo else 0.0
        return (i - 1 + frac) / (len(obs) - 1) if len(obs) > 1 else 1.0

    def cdf(self, age: float) -> float:
        """The chance that a prediction of this age has finished."""
        n = len(self.observed)
        weight = PRIOR_WEIGHT / (PRIOR_WEIGHT + n)
        return weight * self.prior_cdf(age) + (1 - weight) * self.empirical_cdf(age)

    def quantile(self, share: float) -> float:
        """The run time below which ``share`` (0 to 1, exclusive) of predictions finish: the
        inverse of ``cdf``, found by bisection (the prior's share keeps it above 0)."""
        low, high = 0.0, max([self.expected * math.exp(5 * PRIOR_SIGMA), *self.observed[-1:]])
        while self.cdf(high) < share:
            high *= 2
        for _ in range(60):
            middle = (low + high) / 2
            if self.cdf(middle) < share:
                low = middle
            else:
                high = middle
        return high

    @property
    def trusted(self) -> bool:
        """Whether enough runs were seen for the model's own minimum to replace the prior's."""
        return len(self.observed) >= TRUSTED_AFTER

    def earliest(self) -> float:
        """The age below which a finish is implausible: from experience once there is enough."""
        if self.trusted:
            return EARLIEST_MARGIN * self.observed[0]
        return self.expected * math.exp(-_Z01 * PRIOR_SIGMA)


def by_model(runs: Iterable[tuple[str, float]], expected: float) -> defaultdict[str, RuntimeModel]:
    """A RuntimeModel per model slug, each learning the ``(model, seconds)`` runs given (an
    earlier run's successes, say), from a prior around ``expected``; a model not seen yet
    gets one at its first mention."""
    models: defaultdict[str, RuntimeModel] = defaultdict(partial(RuntimeModel, expected))
    for model, seconds in runs:
        models[model].observe(seconds)
    return models


def poll_score(model: RuntimeModel, age_now: float, age_last: float) -> float:
    """The chance that a poll now finds the prediction finished, given the last one did not."""
    f_last = model.cdf(age_last)
    gain = model.cdf(age_now) - f_last
    return max(0.0, gain) / max(1e-12, 1.0 - f_last)


def poll_offset(prediction_id: str, in_flight_cap: int, poll_min: float) -> float:
    """How much later than its create a prediction's poll schedule is counted from, so that
    predictions created together are not all polled at once: up to MAX_SPREAD of a quantum
    (``poll_min``), scaled down below SPREAD_FULL_AT in flight, drawn evenly from the
    prediction's id. The same id always gets the same offset; a thousand ids share the spread
    about evenly. Each poll lands that much later than the grid's GRID_OFFSET: the price of
    the spread, on average half of it, in seeing an end."""
    spread = MAX_SPREAD * min(1.0, in_flight_cap / SPREAD_FULL_AT)
    draw = zlib.crc32(prediction_id.encode()) / 2**32
    return spread * draw * poll_min


def next_poll_at(
    *,
    now: float,
    submitted_at: float,
    last_poll_at: float | None,
    model: RuntimeModel,
    poll_min: float,
    spare: float = 1.0,
) -> float:
    """The monotonic time at which a prediction becomes eligible for its next poll.

    Never sooner than ``poll_min`` after the create or the last poll; before the model's
    earliest plausible finish, on a doubling schedule of ages; after it, every ``poll_min``
    while at least SPARE_FOR_FULL_PACE of the request window is free (``spare``, 0 to 1), else
    every other quantum, so that a busy budget goes to the likeliest finishes and to creates.
    """
    age_last = 0.0 if last_poll_at is None else last_poll_at - submitted_at
    earliest = model.earliest()
    early = poll_min
    if model.trusted:  # experience shows where runs end: fewer early looks
        early = max(poll_min, earliest / 4)
    while early <= age_last + 1e-9:
        early *= 2
    pace = poll_min if spare >= SPARE_FOR_FULL_PACE else 2 * poll_min
    target_age = max(age_last + poll_min, min(early, max(earliest, age_last + pace)))
    # The service shows an end only at the next status quantum (~poll_min) after the create.
    # A poll that would land just on a quantum boundary waits a moment, so it sees that
    # boundary's state rather than racing it: polls settle on the grid just after boundaries.
    boundary = math.floor(target_age / poll_min + 1e-9)
    if target_age - boundary * poll_min < GRID_OFFSET * poll_min:
        target_age = (boundary + GRID_OFFSET) * poll_min
    return max(now, submitted_at + target_age)


def on_tick(at: float, poll_min: float) -> float:
    """The tick (a multiple of ``TICK * poll_min``) nearest to ``at``."""
    tick = TICK * poll_min
    return round(at / tick) * tick


def finished_age(submitted_at: float, last_miss: float | None, seen_at: float) -> float:
    """Best guess of a prediction's run time: midway between the last poll that missed its end
    and the poll that saw it."""
    before = submitted_at if last_miss is None else last_miss
    return (before + seen_at) / 2 - submitted_at
