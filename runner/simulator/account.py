"""One simulated account (one API key): its runs, in-flight cap, request rate, balance,
best-effort cancels, and the draws of the hostile switches that act on its predictions.

No I/O: every method takes ``now`` (the event loop's monotonic time; the wall clock, injectable,
only stamps the times ``GET /v1/executions`` shows). Random draws come from the ``random.Random``
it is given: the server's one ``Random(seed)``, shared by all its accounts (``accounts``), so the
same seed and the same requests give the same run. The routes (``predictions``, ``lookups``)
turn HTTP requests into calls on the caller's ``Account``; ``wire`` shapes what it holds into the
contract's JSON. It counts into the server's ``SimStats`` and into its own ``AccountStats``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.simulator.config import SimConfig
from runner.simulator.executions import ExecutionsQuery, select_executions
from runner.simulator.lifecycle import Run, draw_failure, draw_run_time, next_quantum, quantize
from runner.simulator.limits import rate_limiter
from runner.simulator.stats import AccountStats, Completion, CreateRecord, SimStats

#: The name of an account built on its own (unit tests): shaped as a key's fingerprint.
LONE_ACCOUNT = "k-00000000"


@dataclass(frozen=True)
class CancelPlan:
    """What a cancel request does: when it ends the prediction (None: never, it was ignored or
    came too late) and the ``status`` word its answer carries (which says nothing of either)."""

    takes_effect_at: float | None
    answer_status: str


class Account:
    """One simulated account: its predictions, request rate, in-flight cap, balance and
    counters. ``name`` is its key's fingerprint (``runner.keys.fingerprint``), never the key;
    ``own`` its counters, also ``stats.accounts[name]``. Without ``rng`` it draws from a
    ``Random(config.seed)`` of its own (an account alone, as unit tests build one)."""

    def __init__(
        self,
        config: SimConfig,
        stats: SimStats,
        wall: Callable[[], float] = time.time,
        *,
        rng: random.Random | None = None,
        name: str = LONE_ACCOUNT,
    ) -> None:
        self.config = config
        self.stats = stats
        self.wall = wall
        self.rng = rng if rng is not None else random.Random(config.seed)
        self.name = name
        self.own = stats.accounts[name] = AccountStats()
        self.predictions: dict[str, Run] = {}  # by prediction id
        self.limiter = rate_limiter(config)  # rate_limit's window, rate_burst's bucket, or None

    @property
    def spent_usd(self) -> float:
        """What its successes have cost (``price_usd`` each)."""
        return self.own.spent_usd

    def rate_refusal(self, now: float) -> dict[str, Any] | None:
        """The 429 body for an API request at ``now`` over the request rate (the ``rate_limit``
        window, or the ``rate_burst`` bucket), else None: the request is admitted and counted.
        A refused request is not counted, so waiting it out works."""
        limiter = self.limiter
        if limiter is None or limiter.admit(now):
            return None
        self.stats.refused_rate += 1
        self.own.refused_rate += 1
        details = (
            f"Rate limit exceeded: at most {limiter.limit} requests per {limiter.window:g} seconds"
        )
        return {"status": 429, "error": "too many requests", "details": details}

    def create_refusal(self) -> tuple[int, dict[str, Any]] | None:
        """``(status, body)`` if a create must be refused now (this account's cap, then its
        balance), else None."""
        c = self.config
        own = self.own
        if own.in_flight >= c.concurrency:
            self.stats.refused_cap += 1
            own.refused_cap += 1
            details = (
                f"Account rate limited: account is limited to {c.concurrency} concurrent "
                f"executions ({own.in_flight} in flight)"
            )
            return 429, {"status": 429, "error": "too many requests", "details": details}
        if c.balance_usd is not None:
            available = c.balance_usd - own.spent_usd - own.in_flight * c.price_usd
            if available + 1e-9 < c.price_usd:
                self.stats.refused_balance += 1
                own.refused_balance += 1
                details = (
                    f"Insufficient balance: ${max(0.0, available):.2f} available "
                    f"(in-flight predictions reserve their estimate), ${c.price_usd:.2f} required"
                )
                return 402, {"status": 402, "error": "payment required", "details": details}
        return None

    def create(
        self, model: str, input: dict[str, Any], now: float, image_sha256: str | None
    ) -> Run:
        """Make a prediction: draw its run time and outcome, take an in-flight slot."""
        c = self.config
        run_time = draw_run_time(self.rng, c)
        run = Run(
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
            account=self.name,
        )
        self.predictions[run.id] = run
        record = CreateRecord(now, run.id, model, input, image_sha256, account=self.name)
        self.stats.creates.append(record)
        self.own.predictions.append(run.id)
        for counts in (self.stats, self.own):
            counts.in_flight += 1
            counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
        return run

    def bad_answer(self) -> str | None:
        """The bad answer (``create_bad_answer``) this create gets, drawn at
        ``create_bad_answer_rate``; None for the documented answer. Draws only when the switch
        is set, so other runs keep their sequence of draws."""
        c = self.config
        if c.create_bad_answer is None or self.rng.random() >= c.create_bad_answer_rate:
            return None
        self.stats.bad_create_answers += 1
        return c.create_bad_answer

    def poll_hidden(self, run: Run, now: float) -> bool:
        """Whether a poll of ``run`` answers 404 as if it did not exist: while it is younger than
        ``poll_not_found_for``, and at random for a share ``poll_not_found_rate`` of polls."""
        c = self.config
        hidden = now - run.created < c.poll_not_found_for or (
            c.poll_not_found_rate > 0 and self.rng.random() < c.poll_not_found_rate
        )
        if hidden:
            self.stats.hidden_polls += 1
        return hidden

    def cancel(self, run: Run, now: float) -> CancelPlan:
        """A cancel of ``run`` asked at ``now``: best effort, as the real service's.

        An ended prediction is left as it is. Otherwise a share ``cancel_ignored_rate`` of
        cancels never take effect; the others take effect at the prediction's next status
        quantum (at once with ``cancel_at_once``), unless one already asked takes effect
        sooner. Whether it still ends the prediction then is ``cancel_due``'s decision. The
        answer's ``status`` is ``cancel_answer_status`` (``random``: drawn), whatever happens.
        """
        c = self.config
        at: float | None = None
        if run.ended is None:
            self.stats.cancels += 1
            if c.cancel_ignored_rate > 0 and self.rng.random() < c.cancel_ignored_rate:
                self.stats.cancels_ignored += 1
            else:
                elapsed = now - run.created
                at = (
                    now
                    if c.cancel_at_once
                    else run.created + next_quantum(elapsed, c.status_quantum)
                )
                if run.cancel_at is None or at < run.cancel_at:
                    run.cancel_at = at
                at = run.cancel_at
        answer = c.cancel_answer_status
        if answer == "random":
            answer = self.rng.choice(("success", "cancelled"))
        return CancelPlan(at, answer)

    def cancel_due(self, run: Run, now: float) -> bool:
        """End ``run`` as cancelled at ``now`` (its cancel's time) unless its own end came
        first: it ended already, or its end is due no later (that end stands, and a success is
        billed). Returns whether the cancel took effect."""
        if run.ended is not None or run.due <= now:
            return False
        self.finish(run, "cancelled", now)
        return True

    def listed(self, now: float) -> list[Run]:
        """This account's predictions ``GET /v1/executions`` knows of: those
        ``executions_lag`` old."""
        lag = self.config.executions_lag
        return [p for p in self.predictions.values() if now - p.created >= lag]

    def visible_time(self, run: Run, ready: float) -> float:
        """When an outcome ready at ``ready`` may show: the next status quantum after creation."""
        return run.created + quantize(max(ready - run.created, 0.0), self.config.status_quantum)

    def finish(self, run: Run, status: str, now: float) -> None:
        """End an in-flight prediction (success, error or cancelled) and free its slot.

        Only a success is billed. Ending an already ended prediction does nothing.
        """
        if run.ended is not None:
            return
        run.ended, run.ended_at, run.ended_wall = status, now, round(self.wall(), 3)
        if status == "success":
            self.own.spent_usd += self.config.price_usd
        self.stats.in_flight -= 1
        self.own.in_flight -= 1
        took = run.run_time if status == "success" else run.elapsed(now)
        self.stats.completions[run.id] = Completion(run.created, now, took, status)

    def poll_fails(self) -> bool:
        """Whether this poll of an existing prediction answers ``poll_error_status``."""
        c = self.config
        if c.poll_error_status is None:
            return False
        return c.poll_error_rate >= 1 or self.rng.random() < c.poll_error_rate

    def executions(self, query: ExecutionsQuery, now: float) -> tuple[list[Run], int]:
        """``(page, total)`` of ``GET /v1/executions``: this account's predictions listed by now
        (``executions_lag``) matching ``query``; without ``from``, only those created within
        ``executions_window`` of the wall clock."""
        window = self.config.executions_window
        earliest = None if query.since is not None or window is None else self.wall() - window
        return select_executions(self.listed(now), query, now, earliest=earliest)
