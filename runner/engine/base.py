"""What every part of the engine shares: one item's live ``Job``, how a run ended
(``RunOutcome``), and ``RunContext``, the state of one run with the few
moves every phase makes (record an event, stop submitting, hold money against the budget).

The phases are mixins over ``RunContext`` (``create``, ``poll``, ``fetch``); ``scheduler``'s
``BatchRunner`` puts them together and drives the plan.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio

from runner.api.port import Api, VideoFetcher
from runner.api.protocol import Prediction
from runner.config import RunConfig
from runner.engine import policy
from runner.engine.accounts import Account, Accounts
from runner.errors import (
    AccountError,
    ApiBrokenError,
    ApiUnavailableError,
    RunnerError,
    StorageError,
)
from runner.events import Events, ItemChanged, SpendChanged, logged
from runner.jobs import JobState, transition
from runner.manifest import Item
from runner.night import DOWNLOAD_SHARE, FIT_QUANTILE, TYPICAL_QUANTILE, NightStop, Pace, fits
from runner.store.budget import Budget
from runner.store.ledger import KeyState, apply, seconds_since
from runner.store.plan import Plan, past_runtimes
from runner.store.writer import LedgerWriter

log = logging.getLogger("runner")

#: Errors that end the whole run (each has its exit code); ``run`` turns them into a Stop.
RUN_STOPPERS = (StorageError, ApiUnavailableError, ApiBrokenError, AccountError)

#: Distinct lines ``say_once`` says in one run.
SAY_ONCE_MAX = 100
#: Downloads running at once; they share the machine's bandwidth, not the API's request window.
DOWNLOAD_CONCURRENCY = 4


@dataclass
class Job:
    """The live state of one item during a run."""

    item: Item
    state: KeyState
    submitted_at: float | None = None  # monotonic
    last_poll_at: float | None = None
    attempts_this_run: int = 0
    #: The account (API key) its prediction lives on: set when it takes a slot, or from the
    #: ledger's record of the key that created it.
    account: Account | None = None
    #: Its prediction was cancelled at the night's end (--cancel-at-deadline).
    night_cancelled: bool = False


@dataclass(frozen=True)
class Stop:
    """Why a run stopped before its work was done: ``kind`` picks the exit code."""

    kind: str  # "storage" (exit 5), "api_unavailable" (exit 6), "api_broken" (exit 7)
    message: str


@dataclass
class RunOutcome:
    """What a run ended with, for the summary and the exit code."""

    jobs: dict[str, Job] = field(default_factory=dict)  # by item id
    account_error: str | None = None
    budget_reached: bool = False
    interrupted: bool = False
    stopped: Stop | None = None
    #: What ended submitting for the night (--until, --max-wall, --max-items, --max-spend).
    night_stop: NightStop | None = None


def mono_from_iso(ts: str | None, now_mono: float) -> float | None:
    """The moment ``ts`` (a ledger time) on the monotonic clock that reads ``now_mono`` now."""
    ago = seconds_since(ts, datetime.now(UTC))
    return None if ago is None else now_mono - ago


class RunContext:
    """The state of one run, shared by its phases."""

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
        events: Events | None = None,
    ) -> None:
        self.config = config
        assert config.output_dir is not None, "the output directory is resolved before a run"
        self.output_dir = config.output_dir
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
        self.night = config.night
        #: The run's deadline on the monotonic clock (``begin_night``); None: no deadline.
        self.deadline: float | None = None
        #: Run times per model, for the deadline's fit: the ledger's earlier successes first.
        self.model_runtimes = policy.by_model(past_runtimes(plan), config.limits.expected_runtime)
        # A download's length, learned as they come.
        self.download_seconds = DOWNLOAD_SHARE * config.limits.expected_runtime
        self._downloads_seen = 0
        self.night_items = 0  # items this run took up to create (--max-items)
        #: Where item changes, spend and the lines for the user go (``runner.events``): the
        #: run's hub, which the request window reports to as well (None: one that only logs).
        self.events = events or logged(log)
        #: What the batch has spent and reserved, against --budget (no cap without one).
        self.spend = spend or Budget(None)
        self.spend.watch(self._spend_changed)
        self.outcome = RunOutcome()
        self._stop_submitting = False
        self._shielded: set[anyio.CancelScope] = set()  # creates on the wire
        self._nonsense = 0  # create answers in a row that made no sense
        self._upload_locks: dict[str, anyio.Lock] = {}
        # Items' tasks still running, and whether the feeder may start more: when both are
        # done the run is idle (the deadline's watch stops waiting).
        self._working = 0
        self._feeding = True
        self._idle = anyio.Event()
        self._downloads = anyio.CapacityLimiter(DOWNLOAD_CONCURRENCY)
        self._said: set[str] = set()  # the lines said once per run (say_once)
        #: The API keys the run works with (``accounts``), set when it starts.
        self.accounts: Accounts
        self.fetcher: VideoFetcher

    def account(self, job: Job) -> Account:
        """The account ``job``'s prediction lives on: the one whose slot it took, else the one
        the ledger says created it (the batch service refuses to run a plan that needs a key
        it was not given; should one slip through, the primary answers 404 and the item is
        polled as missing, never created again blindly)."""
        if job.account is None:
            job.account = self.accounts.named(job.state.account) or self.accounts.primary
        return job.account

    def api(self, job: Job) -> Api:
        """The client of ``job``'s account: every request about its prediction goes there."""
        return self.account(job).client

    # -- the night shift (runner.night) --------------------------------------------------------

    def model_runtime(self, model: str) -> policy.RuntimeModel:
        """What the batch has learned of ``model``'s run times."""
        return self.model_runtimes[model]

    def _typical_runtime(self, model: str) -> float:
        """``model``'s typical run time as learned so far (what shortest-first sorts by)."""
        return self.model_runtime(model).quantile(TYPICAL_QUANTILE)

    def begin_night(self) -> None:
        """Put the night's deadline (a wall-clock time) on the run's monotonic clock."""
        if self.night.deadline is not None:
            left = (self.night.deadline - datetime.now(UTC)).total_seconds()
            self.deadline = anyio.current_time() + left

    def fits_tonight(self, job: Job) -> bool:
        """Whether ``job``, created now, is expected on disk by the deadline (always, without
        one): its model's FIT_QUANTILE run time, a poll step to see its end, a download."""
        if self.deadline is None:
            return True
        pace = Pace(
            slots=self.accounts.limit,
            see_end=self.limits.poll_min,
            download=self.download_seconds,
        )
        runtime = self.model_runtime(job.item.model).quantile(FIT_QUANTILE)
        return fits(now=anyio.current_time(), deadline=self.deadline, runtime=runtime, pace=pace)

    def night_refuses(self, job: Job) -> NightStop | None:
        """Why ``job`` may not be taken up tonight (--max-items, the deadline), or None."""
        most = self.night.max_items
        if most is not None and self.night_items >= most:
            return NightStop.MAX_ITEMS
        if not self.fits_tonight(job):
            return NightStop.DEADLINE
        return None

    def stop_for_night(self, why: NightStop, job: Job | None = None) -> None:
        """No new item is taken up tonight: said once, the rest stays pending for the next run.
        Items already taken up go on (a create that could no longer finish by the deadline is
        still not sent: ``fits_tonight`` before each)."""
        if self.outcome.night_stop is None:
            self.outcome.night_stop = why
            reason = {
                NightStop.DEADLINE: "the next item could not finish by the deadline",
                NightStop.MAX_ITEMS: f"--max-items {self.night.max_items} items were taken up",
                NightStop.MAX_SPEND: "the next create could take this run over --max-spend",
            }[why]
            self.say(
                logging.WARNING,
                "%s%s: no more creates tonight; %d running are followed, the rest is left for "
                "the next run",
                "" if job is None else f"{job.item.id}: ",
                reason,
                len(self._running()),
            )

    def _running(self) -> list[Job]:
        """The jobs whose prediction is running on the server, as far as the run knows."""
        return [job for job in self.outcome.jobs.values() if job.state.state is JobState.SUBMITTED]

    def _stopped(self, kind: str, exc: BaseException) -> None:
        if self.outcome.stopped is None:
            self.outcome.stopped = Stop(kind, str(exc))
            self.say(
                logging.ERROR, "%s; the run stops, unfinished items are left for the next run", exc
            )
        self.stop_submitting()

    def stop_submitting(self) -> None:
        """No new create is sent after this (a signal, an account error, ...): creates waiting
        for the request window give up at once; creates already on the wire are recorded."""
        if not self._stop_submitting:
            self._stop_submitting = True
            if hasattr(self, "accounts"):
                self.accounts.close()  # ends creates' waits for the window

    def _reserve(self, job: Job) -> bool:
        """Hold this item's price against the budget unless it holds it already."""
        key = job.item.key
        return self.spend.holds(key) or self.spend.reserve(key, job.item.price_usd)

    def _budget_reached(self, job: Job) -> None:
        """The next create could take the batch over --budget (or this run over
        --max-spend): no new item is started (items that hold their reservation go on)."""
        if not self.spend.fits_run(job.item.price_usd):
            self.stop_for_night(NightStop.MAX_SPEND, job)
            return
        if not self.outcome.budget_reached:
            self.outcome.budget_reached = True
            self.say(
                logging.WARNING,
                "%s: the budget of $%.2f is reached ($%.2f spent, $%.2f reserved); "
                "submitting stopped, the remaining items stay pending",
                job.item.id,
                self.spend.budget_usd or 0.0,
                self.spend.spent,
                self.spend.reserved,
            )

    def _refused(self, exc: RunnerError, job: Job) -> bool:
        """The API refused the account of ``job``'s create (401/402): no new item goes to that
        key. True if another key takes new items; when none is left, stop creating (predictions
        in flight go on)."""
        account = self.account(job)
        first = account.refused is None
        if self.accounts.refuse(account, str(exc)):
            if first:
                self.say(
                    logging.ERROR,
                    "the API refused the key %s: %s; new items go to the other keys",
                    account.name,
                    exc,
                )
            return True
        if self.outcome.account_error is None:
            self.outcome.account_error = str(exc)
            self.say(logging.ERROR, "the API refused the account: %s; submitting stopped", exc)
        self.stop_submitting()
        return False

    async def _move_to_open_account(self, job: Job) -> bool:
        """Move ``job``'s slot from its refused account to an open one, waiting for a free
        slot there; False (the slot stays where it was) if no account takes new items."""
        refused = self.account(job)
        if refused.refused is None or self._stop_submitting:
            return False
        self.accounts.release(refused)
        account = await self.accounts.acquire()
        if account is None:
            self.accounts.force(refused)  # its task still releases one slot when it ends
            return False
        job.account = account
        return True

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
        """Append one event for ``job`` and apply it; IllegalTransition if the move is a bug.
        Subscribers hear of it once the record is on disk."""
        transition(job.state.state, event)
        record = await self.ledger.append(job.item.id, job.item.key, event.value, **fields)
        job.state = apply(job.state, record)
        self.events.emit(ItemChanged(job.item.id, event, record))
        if job.state.prediction_id:
            self.known_ids.add(job.state.prediction_id)

    def say(self, level: int, message: str, *args: object) -> None:
        """A line for the user (``message % args``), to the subscribers (the log among them)."""
        self.events.say(level, message, *args)

    def say_once(self, level: int, text: str) -> None:
        """``text`` for the user, unless this run said it already (or said a hundred such
        lines: a server inventing a new word on every answer is heard, not echoed)."""
        if text not in self._said and len(self._said) < SAY_ONCE_MAX:
            self._said.add(text)
            self.say(level, "%s", text)

    def _spend_changed(self) -> None:
        self.events.emit(SpendChanged(self.spend.spent, self.spend.reserved))
