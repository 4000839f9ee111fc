"""The scheduler against the in-memory fake API (``tests.fakes``), on looptime's virtual clock.

Each test runs a whole batch at the real service's scale (the documented 60 requests per 60 s,
10 in flight, minutes per video, a 30-minute item timeout) in well under a second of real time,
and reads what happened from the fake's log of calls, its predictions and the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.api.ratelimit import RateLimiter
from runner.config import Limits, RunConfig
from runner.engine.accounts import Account, Accounts
from runner.engine.base import RunOutcome
from runner.engine.scheduler import BatchRunner
from runner.errors import (
    AccountError,
    ApiBrokenError,
    CapacityError,
    DownloadError,
    RunnerError,
)
from runner.events import Event, Events
from runner.jobs import JobState, item_key
from runner.keys import fingerprint
from runner.manifest import Item
from runner.models import DEFAULT_MODEL, image_field
from runner.night import Night, NightStop
from runner.store import ledger
from runner.store.budget import Budget
from runner.store.plan import NIGHT_CANCELLED, TIMEOUT, Action, make_plan
from runner.store.writer import LedgerWriter
from tests.fakes import NEVER_ENDS, Call, FakeApi, FakeFetcher, Fetch, Script, gone

pytestmark = [pytest.mark.looptime, pytest.mark.timeout(10)]


#: The service as documented: the engine's defaults.
LIMITS = Limits()
PRICE = Decimal("0.30")


@pytest.fixture(autouse=True)
def _threads_the_clock_waits_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger and the videos are real files, written in worker threads.

    looptime jumps its clock to the next timer once the loop is idle, after a few no-op cycles
    (``noop_cycles``), which pass long before a thread's fsync is done: each write would seem
    to take until the next timer, seconds of virtual time, differently on every run. For the
    threads of ``loop.run_in_executor`` it waits instead: in real time, the clock standing
    still while the thread runs (``idle_step`` None, the default; it moves only if a thread
    outlasts, in real time, the wait for the next timer). But anyio starts its own threads,
    which looptime cannot see, so here ``anyio.to_thread.run_sync`` goes through
    ``run_in_executor``, shielded from cancellation like anyio's default (the caller waits
    for the thread to finish). A slow disk is ``run(disk_delay=...)``, on the virtual clock.
    """

    async def run_sync(
        func: Callable[..., Any],
        *args: Any,
        abandon_on_cancel: bool = False,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        with anyio.CancelScope(shield=not abandon_on_cancel):
            return await loop.run_in_executor(None, functools.partial(func, *args))

    monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)


def make_items(count: int) -> list[Item]:
    items = []
    for index in range(count):
        prompt = f"shot {index}"
        url = f"https://images.example.org/{index}.png"
        items.append(
            Item(
                id=f"item-{index:02d}",
                index=index,
                line=index + 1,
                model=DEFAULT_MODEL,
                prompt=prompt,
                image=url,
                image_path=None,
                image_url=url,
                image_sha256=None,
                input={"prompt": prompt},
                key=item_key(DEFAULT_MODEL, {"prompt": prompt, image_field(DEFAULT_MODEL): url}),
                price_usd=PRICE,
            )
        )
    return items


def shot(input: Mapping[str, Any]) -> int:
    """The index of the item a create's input belongs to."""
    return int(str(input["prompt"]).removeprefix("shot "))


def fake(limits: Limits = LIMITS, **options: Any) -> FakeApi:
    return FakeApi(RateLimiter(limits.rate_limit, limits.rate_window), **options)


class SlowDisk(LedgerWriter):
    """A ledger on a disk where every record takes ``delay`` seconds to be on it."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay

    async def append(self, item: str, key: str, event: str, **fields: Any) -> dict[str, Any]:
        await anyio.sleep(self.delay)
        return await super().append(item, key, event, **fields)


@dataclass
class Ran:
    outcome: RunOutcome
    records: list[dict[str, Any]]
    began: float
    ended: float

    def state(self, item: Item) -> JobState:
        return self.outcome.jobs[item.id].state.state

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record["event"] == name]


async def run(
    tmp_path: Path,
    items: Sequence[Item],
    api: FakeApi,
    fetcher: FakeFetcher | None = None,
    *,
    limits: Limits = LIMITS,
    budget: Decimal | None = None,
    meanwhile: Callable[[BatchRunner], Coroutine[Any, Any, None]] | None = None,
    disk_delay: float = 0.0,
    more: Sequence[FakeApi] = (),
    states: Mapping[str, ledger.KeyState] | None = None,
    night: Night | None = None,
    listen: Callable[[Event], None] | None = None,
) -> Ran:
    """Run ``items`` as ``runner.batch`` does, against ``api``; ``meanwhile(runner)`` runs
    beside it (to stop it, say); each ledger record takes ``disk_delay`` s to write. ``more``
    are further accounts (keys ``fake-key-2``, ...), sharing ``fetcher``'s CDN. ``states``:
    what an earlier run's ledger says (the plan resumes from it). ``listen`` hears the
    engine's events."""
    config = RunConfig(
        manifest_path=tmp_path / "batch.yaml",
        output_dir=tmp_path,
        api_base="https://api.fake.invalid",
        api_key="fake-key",
        limits=limits,
        more_api_keys=tuple(f"fake-key-{n}" for n in range(2, len(more) + 2)),
        night=night or Night(),
    )
    plan = make_plan(items, states or {}, file_ok={})
    path = tmp_path / ledger.LEDGER_NAME
    async with SlowDisk(path, disk_delay) if disk_delay else LedgerWriter(path) as writer:
        spend = Budget(budget, run_cap=config.night.max_spend)
        events = Events((listen,)) if listen is not None else None
        runner = BatchRunner(config, plan, writer, {}, spend=spend, events=events)
        began = anyio.current_time()
        async with anyio.create_task_group() as tg:
            if meanwhile is not None:
                tg.start_soon(meanwhile, runner)
            fetcher = fetcher or FakeFetcher(api)
            if more:
                accounts = [
                    Account(fingerprint(key), one, one.limiter, limits.concurrency)
                    for key, one in zip(config.api_keys, (api, *more), strict=True)
                ]
                for one in more:
                    one.urls = api.urls  # one CDN
                outcome = await runner.run_on(Accounts(accounts), fetcher)
            else:
                outcome = await runner.run_with(api, fetcher, api.limiter)
            tg.cancel_scope.cancel()
        ended = anyio.current_time()
    records, warnings = await anyio.to_thread.run_sync(ledger.read, path)
    assert warnings == []
    return Ran(outcome, records, began, ended)


def most_in_any_window(times: list[float], length: float) -> int:
    return max((sum(1 for t in times if start <= t < start + length) for start in times), default=0)


def creates_per_item(api: FakeApi) -> dict[int, int]:
    counts: dict[int, int] = {}
    for prediction in api.runs.values():
        counts[shot(prediction.input)] = counts.get(shot(prediction.input), 0) + 1
    return counts


async def test_a_batch_is_created_once_each_within_the_cap_and_the_window(
    tmp_path: Path,
) -> None:
    items = make_items(25)
    api = fake(script=lambda input, attempt: Script(runtime=150.0 + 5 * shot(input)))
    ran = await run(tmp_path, items, api)
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    assert all((tmp_path / f"{item.id}.mp4").is_file() for item in items)
    assert api.count("create") == len(items)
    assert creates_per_item(api) == {index: 1 for index in range(len(items))}
    assert api.peak <= LIMITS.concurrency
    times = [call.at for call in api.calls]
    assert most_in_any_window(times, LIMITS.rate_window) <= LIMITS.rate_limit


async def test_the_makespan_is_near_the_bound_of_the_cap(tmp_path: Path) -> None:
    """No schedule can beat ceil(n / concurrency) waves of one runtime each; the engine's
    polling (every poll_min at best, within the window) may add a little to each wave."""
    items = make_items(25)
    runtime = 200.0
    api = fake(script=lambda input, attempt: Script(runtime=runtime))
    ran = await run(tmp_path, items, api)
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    bound = math.ceil(len(items) / LIMITS.concurrency) * runtime
    assert bound <= ran.ended - ran.began <= 1.5 * bound


def gets_by_account(apis: Sequence[FakeApi]) -> list[set[str]]:
    """The prefixes of the prediction ids each account was asked about (get, cancel)."""
    return [
        {call.target.split("-")[0] for call in api.calls if call.method in ("get", "cancel")}
        for api in apis
    ]


async def test_two_keys_share_the_batch_each_within_its_cap_and_window(tmp_path: Path) -> None:
    """Each key is an account with its own cap and window: the batch spreads over both, each
    account's predictions are polled only through it, and two accounts take half the waves."""
    items = make_items(40)
    runtime = 200.0
    apis = [fake(script=lambda i, a: Script(runtime=runtime), prefix=p) for p in ("a", "b")]
    ran = await run(tmp_path, items, apis[0], more=apis[1:])
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    assert [api.count("create") for api in apis] == [20, 20]
    assert sorted(creates_per_item(apis[0]) | creates_per_item(apis[1])) == list(range(40))
    for api in apis:
        assert api.peak <= LIMITS.concurrency
        times = [call.at for call in api.calls]
        assert most_in_any_window(times, LIMITS.rate_window) <= LIMITS.rate_limit
    assert gets_by_account(apis) == [{"a"}, {"b"}]
    # The ledger names the creating key of every prediction by its fingerprint.
    names = {fingerprint("fake-key"): "a", fingerprint("fake-key-2"): "b"}
    submitting = ran.events("submitting")
    submitted = {r["item"]: r["prediction_id"] for r in ran.events("submitted")}
    assert {names[r["account"]] == submitted[r["item"]][0] for r in submitting} == {True}
    # 40 items on 2 x 10 slots: two waves, as one account needs for 20.
    bound = math.ceil(len(items) / (2 * LIMITS.concurrency)) * runtime
    assert bound <= ran.ended - ran.began <= 1.5 * bound


async def test_a_resumed_prediction_is_polled_with_the_key_that_created_it(
    tmp_path: Path,
) -> None:
    """A run on two keys stops with predictions in flight; the next run polls each through
    the account whose key created it (the ledger's fingerprint), never the other."""
    items = make_items(12)
    first = [fake(script=lambda i, a: Script(runtime=300.0), prefix=p) for p in ("a", "b")]

    async def stop_soon(runner: BatchRunner) -> None:
        await anyio.sleep(30.0)
        runner.cancel()

    ran = await run(tmp_path, items, first[0], more=first[1:], meanwhile=stop_soon)
    assert all(ran.state(item) is JobState.SUBMITTED for item in items)
    states = ledger.replay(ran.records)
    # The same two accounts, as a new process sees them: their predictions, fresh windows.
    again = [fake(prefix=p) for p in ("a", "b")]
    for old, new in zip(first, again, strict=True):
        new.runs, new.urls = old.runs, old.urls
    ran = await run(tmp_path, items, again[0], more=again[1:], states=states)
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    assert [api.count("create") for api in again] == [0, 0]
    assert gets_by_account(again) == [{"a"}, {"b"}]


async def test_a_retryable_failure_is_submitted_again_up_to_max_attempts(
    tmp_path: Path,
) -> None:
    limits = Limits(max_attempts=3)
    retryable = Script(error="the provider is overloaded", error_code="PROVIDER_SERVER_ERROR")
    permanent = Script(error="the image breaks the content policy", error_code="CONTENT_POLICY")

    def script(input: Mapping[str, Any], attempt: int) -> Script:
        match shot(input):
            case 0:  # fails every time, retryably
                return retryable
            case 1:  # fails for good
                return permanent
            case 2:  # fails once, then succeeds
                return retryable if attempt == 1 else Script()
        return Script()

    items = make_items(4)
    api = fake(limits, script=script)
    ran = await run(tmp_path, items, api, limits=limits)
    assert creates_per_item(api) == {0: limits.max_attempts, 1: 1, 2: 2, 3: 1}
    states = [ran.state(item) for item in items]
    assert states == [JobState.FAILED, JobState.FAILED, JobState.DOWNLOADED, JobState.DOWNLOADED]
    codes = [ran.outcome.jobs[item.id].state.error_code for item in items[:2]]
    assert codes == [retryable.error_code, permanent.error_code]  # the server's own reasons


async def test_an_ambiguous_create_is_found_in_executions_and_attached(tmp_path: Path) -> None:
    """The create made its prediction but the answer was lost; the list shows it only after
    30 s, so the first look finds nothing and the engine looks again rather than create."""
    items = make_items(3)
    api = fake(
        script=lambda input, attempt: Script(answer_lost=shot(input) == 1),
        listed_after=30.0,
    )
    ran = await run(tmp_path, items, api)
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    assert creates_per_item(api) == {0: 1, 1: 1, 2: 1}
    (lost,) = [p for p in api.runs.values() if shot(p.input) == 1]
    attached = [r for r in ran.events("submitted") if r["item"] == items[1].id]
    assert [(r["prediction_id"], r.get("reconciled")) for r in attached] == [(lost.id, True)]
    assert api.count("executions") >= 2


async def test_a_prediction_the_server_does_not_know_yet_is_polled_on(tmp_path: Path) -> None:
    """Polls answer 404 for its first 30 s (well within ``lost_after``): the engine polls on
    with back-off, neither creating it again nor calling it lost."""
    items = make_items(3)
    api = fake(script=lambda input, attempt: Script(unknown_for=30.0 if shot(input) == 1 else 0))
    ran = await run(tmp_path, items, api)
    (late,) = [p for p in api.runs.values() if shot(p.input) == 1]
    polls = [call for call in api.calls if call.method == "get" and call.target == late.id]
    assert any(call.at < late.created + late.script.unknown_for for call in polls)  # a 404
    assert creates_per_item(api) == {0: 1, 1: 1, 2: 1}
    assert api.count("executions") == 0  # not looked up before lost_after
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)


async def test_a_stop_sends_no_create_after_it_and_records_every_create_sent(
    tmp_path: Path,
) -> None:
    """More slots than the window has places: creates are still waiting for the window (and
    some are on the wire, answers taking a second) when the stop comes."""
    limits = Limits(concurrency=80)
    items = make_items(80)
    api = fake(limits, latency=1.0)
    stopped_at: list[float] = []

    async def stop_soon(runner: BatchRunner) -> None:
        await anyio.sleep(0.5)
        stopped_at.append(anyio.current_time())
        runner.cancel()

    ran = await run(tmp_path, items, api, limits=limits, meanwhile=stop_soon)
    creates = [call for call in api.calls if call.method == "create"]
    assert 0 < len(creates) < len(items)  # the stop came while creates waited
    # Creates the window let go before the stop are sent (shielded, their record written
    # first); none is let go after it.
    assert all(call.granted <= stopped_at[0] for call in creates)
    recorded = {r["prediction_id"] for r in ran.events("submitted")}
    assert recorded == set(api.runs)
    assert len(ran.events("submitting")) == len(api.runs)
    unsent = [item for item in items if shot(item.input) not in creates_per_item(api)]
    assert all(ran.state(item) is JobState.PENDING for item in unsent)


async def test_an_account_refusal_stops_creates_and_the_running_ones_finish(
    tmp_path: Path,
) -> None:
    """The balance runs out after ten creates: the eleventh is refused (402) when the
    shortest first prediction ends, while nine others are still running."""
    items = make_items(25)

    def out_of_money(call: Call) -> AccountError | None:
        if call.method == "create" and call.nth > LIMITS.concurrency:
            return AccountError(402, "the account's balance is too low")
        return None

    api = fake(
        script=lambda input, attempt: Script(runtime=150.0 + 10 * shot(input)),
        fault=out_of_money,
    )
    ran = await run(tmp_path, items, api)
    assert ran.outcome.account_error is not None
    creates = [call for call in api.calls if call.method == "create"]
    refused = [call for call in creates if call.nth > LIMITS.concurrency]
    assert refused
    # The refusal is known once it reached the server (no latency here): no create is let go
    # after that (one granted while the refused create wrote its record ahead still goes).
    assert all(call.granted <= refused[0].at for call in creates)
    made = {shot(p.input) for p in api.runs.values()}
    assert len(made) == LIMITS.concurrency
    for item in items:
        expected = JobState.DOWNLOADED if shot(item.input) in made else JobState.PENDING
        assert ran.state(item) is expected, item.id


async def test_a_key_whose_account_is_refused_takes_no_new_item_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    """Two keys; the second's balance runs out after three creates (402). Its item is
    created on the first key instead, no new item goes to the refused key, and the batch
    ends complete, not stopped."""
    items = make_items(30)

    def out_of_money(call: Call) -> AccountError | None:
        if call.method == "create" and call.nth > 3:
            return AccountError(402, "the account's balance is too low")
        return None

    script = functools.partial(lambda input, attempt: Script(runtime=120.0 + shot(input)))
    one = fake(script=script, prefix="a")
    # The second key's window lets five creates go at once, the rest a minute later.
    two = FakeApi(RateLimiter(5, 60.0), script=script, prefix="b", fault=out_of_money)
    ran = await run(tmp_path, items, one, more=[two])
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    assert ran.outcome.account_error is None
    assert len(two.runs) == 3 and len(one.runs) == len(items) - 3
    assert sorted(creates_per_item(one) | creates_per_item(two)) == list(range(len(items)))
    # No create goes to the refused key once its refusal came back (the five its window let
    # go before it are on the wire; those still waiting for its window give up).
    creates = [call for call in two.calls if call.method == "create"]
    refused = [call for call in creates if call.nth > 3]
    assert all(call.granted <= refused[0].at for call in creates)
    assert len(ran.events("submitting")) == len(items) + len(refused)


async def test_a_prediction_that_never_ends_is_cancelled_after_the_item_timeout(
    tmp_path: Path,
) -> None:
    items = make_items(3)
    api = fake(script=lambda input, attempt: NEVER_ENDS if shot(input) == 1 else Script())
    ran = await run(tmp_path, items, api)
    (stuck,) = [p for p in api.runs.values() if shot(p.input) == 1]
    cancels = [call for call in api.calls if call.method == "cancel"]
    assert [call.target for call in cancels] == [stuck.id]
    waited = cancels[0].at - stuck.created
    assert LIMITS.item_timeout <= waited <= LIMITS.item_timeout + 60
    assert ran.state(items[1]) is JobState.FAILED
    assert ran.outcome.jobs[items[1].id].state.error_code == TIMEOUT
    assert [ran.state(items[0]), ran.state(items[2])] == [JobState.DOWNLOADED] * 2


async def test_an_expired_output_url_is_polled_once_for_a_fresh_one(tmp_path: Path) -> None:
    items = make_items(3)
    api = fake()

    def first_url_expired(fetch: Fetch) -> DownloadError | None:
        first = fetch.label == items[1].id and len(fetcher.of(items[1].id)) == 1
        return gone(fetch.url) if first else None

    fetcher = FakeFetcher(api, fault=first_url_expired)
    ran = await run(tmp_path, items, api, fetcher)
    fetches = fetcher.of(items[1].id)
    assert len(fetches) == 2
    expired, fresh = fetches
    assert fresh.url != expired.url
    assert api.urls[fresh.url] == api.urls[expired.url]  # the same prediction's video
    polls_between = [
        call
        for call in api.calls
        if call.method == "get"
        and call.target == api.urls[expired.url]
        and expired.at < call.at <= fresh.at
    ]
    assert len(polls_between) == 1
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)


async def test_a_budget_admits_only_the_first_items_that_fit(tmp_path: Path) -> None:
    items = make_items(10)
    budget = Decimal("1.00")
    api = fake(script=lambda input, attempt: Script(cost=float(PRICE)))
    ran = await run(tmp_path, items, api, budget=budget)
    fit = int(budget // PRICE)
    assert sorted(creates_per_item(api)) == list(range(fit))
    assert ran.outcome.budget_reached
    states = [ran.state(item) for item in items]
    assert states == [JobState.DOWNLOADED] * fit + [JobState.PENDING] * (len(items) - fit)


@pytest.mark.parametrize(
    "refusal",
    [
        AccountError(402, "the account's balance is too low"),
        ApiBrokenError("POST /v1/prediction/: redirected to another host; nothing was created"),
    ],
    ids=["account-402", "api-broken"],
)
async def test_no_create_is_let_go_once_a_refusal_that_stops_submitting_came_back(
    tmp_path: Path, refusal: RunnerError
) -> None:
    """A slow disk (2 s a record) and a fast window (1 request a second, so a place opens
    while the refusal's record is being written): the third item's create, waiting for the
    window, must give up once the second's refusal is in, not go out after it. (Before, the
    pending record was written first and submitting stopped only after it.)"""
    limits = Limits(concurrency=3, rate_limit=1, rate_window=1.0)
    items = make_items(3)

    def refuse(call: Call) -> RunnerError | None:
        if call.method == "create" and call.nth > 1:
            return refusal
        return None

    api = fake(limits, fault=refuse)
    ran = await run(tmp_path, items, api, limits=limits, disk_delay=2.0)
    assert ran.outcome.account_error is not None or ran.outcome.stopped is not None
    creates = [call for call in api.calls if call.method == "create"]
    refused = [call for call in creates if call.nth > 1]
    assert all(call.granted <= refused[0].at for call in creates), creates


# -- the night shift (runner.night) ---------------------------------------------------------


def tonight(seconds: float, **options: Any) -> Night:
    """A night whose deadline is ``seconds`` from now (the run's clock counts from here)."""
    return Night(deadline=datetime.now(UTC) + timedelta(seconds=seconds), **options)


async def test_a_deadline_lets_no_create_go_that_could_not_finish_and_every_created_item_ends(
    tmp_path: Path,
) -> None:
    items = make_items(40)
    runtime = 200.0
    api = fake(script=lambda input, attempt: Script(runtime=runtime))
    ran = await run(tmp_path, items, api, night=tonight(700))
    creates = [call.at for call in api.calls if call.method == "create"]
    deadline = ran.began + 700
    # No create went after the point where its item could no longer finish; the ones that
    # did go all ended done (none cancelled, none lost), and the rest waits, never sent.
    assert creates and max(creates) + runtime <= deadline
    created = {shot(p.input) for p in api.runs.values()}
    assert 0 < len(created) < len(items)
    assert all(ran.state(items[i]) is JobState.DOWNLOADED for i in created)
    assert all(ran.state(item) is JobState.PENDING for item in items if item.index not in created)
    assert api.count("cancel") == 0
    assert ran.outcome.night_stop is NightStop.DEADLINE
    assert ran.ended <= deadline


async def test_predictions_running_at_the_deadline_are_waited_for_the_grace_then_left(
    tmp_path: Path,
) -> None:
    items = make_items(3)
    api = fake(script=lambda input, attempt: Script(runtime=5000.0 if shot(input) == 0 else 200))
    ran = await run(tmp_path, items, api, night=tonight(700, grace=120.0))
    assert ran.began + 700 + 120 - 1 <= ran.ended <= ran.began + 700 + 120 + 30
    assert ran.state(items[0]) is JobState.SUBMITTED  # still running: the next run polls it
    assert [ran.state(items[1]), ran.state(items[2])] == [JobState.DOWNLOADED] * 2
    assert api.count("cancel") == 0
    assert ran.outcome.night_stop is NightStop.DEADLINE


async def test_with_cancel_at_deadline_a_prediction_still_running_is_cancelled_and_resubmitted(
    tmp_path: Path,
) -> None:
    items = make_items(2)
    api = fake(script=lambda input, attempt: Script(runtime=5000.0 if shot(input) == 0 else 200))
    night = tonight(700, grace=60.0, cancel_at_deadline=True)
    ran = await run(tmp_path, items, api, night=night)
    (long,) = [p for p in api.runs.values() if shot(p.input) == 0]
    cancels = [call for call in api.calls if call.method == "cancel"]
    assert [call.target for call in cancels] == [long.id]
    assert ran.began + 759 <= cancels[0].at <= ran.began + 770
    state = ran.outcome.jobs[items[0].id].state
    assert state.state is JobState.FAILED and state.error_code == NIGHT_CANCELLED
    # Cancelled for the night, not failed: the next run submits it again by itself.
    again = make_plan(items, {items[0].key: state}, file_ok={})
    assert again.steps[0].action is Action.SUBMIT


async def test_max_items_takes_up_that_many_items_and_leaves_the_rest_pending(
    tmp_path: Path,
) -> None:
    items = make_items(25)
    api = fake()
    ran = await run(tmp_path, items, api, night=Night(max_items=7))
    assert sorted(creates_per_item(api)) == list(range(7))
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * 7 + [
        JobState.PENDING
    ] * 18
    assert ran.outcome.night_stop is NightStop.MAX_ITEMS


async def test_max_spend_counts_this_runs_creates_only(tmp_path: Path) -> None:
    items = make_items(10)
    first = fake(script=lambda input, attempt: Script(runtime=300.0))

    async def stop_soon(runner: BatchRunner) -> None:
        await anyio.sleep(30.0)
        runner.cancel()

    ran = await run(tmp_path, items, first, night=Night(max_items=1), meanwhile=stop_soon)
    assert ran.state(items[0]) is JobState.SUBMITTED
    again = fake()
    again.runs, again.urls = first.runs, first.urls
    states = ledger.replay(ran.records)
    # The prediction resumed from the first run does not count against this run's $1.00:
    # three creates at $0.30 do, a fourth would not fit.
    ran = await run(tmp_path, items, again, night=Night(max_spend=Decimal("1.00")), states=states)
    assert again.count("create") == 3
    assert sorted(creates_per_item(again)) == [0, 1, 2, 3]
    assert [ran.state(item) for item in items[:4]] == [JobState.DOWNLOADED] * 4
    assert all(ran.state(item) is JobState.PENDING for item in items[4:])
    assert ran.outcome.night_stop is NightStop.MAX_SPEND


async def test_an_items_priority_puts_its_create_first(tmp_path: Path) -> None:
    items = make_items(5)
    items[3] = dataclasses.replace(items[3], priority=5)
    one_at_a_time = Limits(concurrency=1)
    api = fake(one_at_a_time)
    await run(tmp_path, items, api, limits=one_at_a_time)
    assert [shot(p.input) for p in api.runs.values()] == [3, 0, 1, 2, 4]


async def test_a_429_on_one_keys_create_pauses_that_key_only(tmp_path: Path) -> None:
    """The first key's account is full (another client's predictions fill it) for 300 s: its
    creates are answered 429 with Retry-After 300 s and wait that long, or until one of its
    own predictions ends (it has none); the second key's predictions ending does not send
    them again early, and the second key's creates go on."""
    items = make_items(12)
    two_each = Limits(concurrency=2)

    def full(call: Call) -> CapacityError | None:
        if call.method == "create" and call.at < 300.0:
            return CapacityError(429, "too many predictions in flight", retry_after=300.0)
        return None

    script = functools.partial(lambda input, attempt: Script(runtime=20.0))
    one = fake(two_each, script=script, prefix="a", fault=full)
    two = fake(two_each, script=script, prefix="b")
    ran = await run(tmp_path, items, one, more=[two], limits=two_each)
    assert [ran.state(item) for item in items] == [JobState.DOWNLOADED] * len(items)
    first = [call.at for call in one.calls if call.method == "create"]
    second = [call.at for call in two.calls if call.method == "create"]
    assert all(at < 1.0 or at >= 300.0 for at in first)  # the paused key waited its pause
    assert any(1.0 < at < 300.0 for at in second)  # the other did not
