"""The run's accounts (one per API key): where a new item goes, whose slot a resumed
prediction takes, and which ledgers need a key the run was not given."""

from __future__ import annotations

import anyio
import pytest

from runner.api.ratelimit import RateLimiter
from runner.engine.accounts import Account, Accounts, missing_accounts, missing_accounts_message
from runner.jobs import JobState
from runner.manifest import Item
from runner.models import DEFAULT_MODEL
from runner.store.ledger import KeyState
from runner.store.plan import Action, Plan, Step
from tests.fakes import FakeApi

pytestmark = pytest.mark.timeout(10)


def account(name: str, limit: int) -> Account:
    limiter = RateLimiter(60, 60.0)
    return Account(name, FakeApi(limiter), limiter, limit)


async def test_new_items_go_to_the_account_with_the_most_free_slots() -> None:
    a, b = account("k-a", 2), account("k-b", 3)
    accounts = Accounts([a, b])
    taken = [(await accounts.acquire()).name for _ in range(5)]
    assert taken == ["k-b", "k-a", "k-b", "k-a", "k-b"]  # most free first, the first on a tie
    assert (a.used, b.used) == (2, 3)


async def test_a_full_house_waits_until_any_account_frees_a_slot() -> None:
    a, b = account("k-a", 1), account("k-b", 1)
    accounts = Accounts([a, b])
    await accounts.acquire()
    await accounts.acquire()
    got: list[str] = []

    async def wait_for_one() -> None:
        got.append((await accounts.acquire()).name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_one)
        await anyio.sleep(0.01)
        assert got == []  # both full: it waits
        accounts.release(b)
    assert got == ["k-b"]


async def test_resumed_predictions_count_on_their_own_account_beyond_its_limit() -> None:
    a, b = account("k-a", 1), account("k-b", 1)
    accounts = Accounts([a, b])
    accounts.force(b)
    accounts.force(b)
    assert (a.used, b.used) == (0, 2)
    assert (await accounts.acquire()) is a


def test_a_ledger_without_fingerprints_belongs_to_the_first_key_and_an_unknown_to_none() -> None:
    a, b = account("k-a", 1), account("k-b", 1)
    accounts = Accounts([a, b])
    assert accounts.named(None) is a
    assert accounts.named("k-b") is b
    assert accounts.named("k-other") is None
    with pytest.raises(ValueError):
        Accounts([a, account("k-a", 2)])
    with pytest.raises(ValueError):
        Accounts([])


def step(n: int, action: Action, account: str | None) -> Step:
    url = f"https://images.example.org/{n}.png"
    item = Item(
        id=f"item-{n}",
        index=n,
        line=n + 1,
        model=DEFAULT_MODEL,
        prompt=f"shot {n}",
        image=url,
        image_path=None,
        image_url=url,
        image_sha256=None,
        input={"prompt": f"shot {n}"},
        key=f"key-{n}",
    )
    state = KeyState(key=item.key, item=item.id, state=JobState.SUBMITTED, account=account)
    return Step(item, action, state)


def test_only_predictions_to_resume_on_a_key_not_given_are_missing() -> None:
    plan = Plan(
        (
            step(0, Action.POLL, "k-gone"),
            step(1, Action.RECONCILE, "k-gone"),
            step(2, Action.RECHECK, "k-other"),
            step(3, Action.POLL, "k-a"),
            step(4, Action.POLL, None),  # from before fingerprints: the first key's
            step(5, Action.DONE, "k-gone"),  # nothing to ask the server
            step(6, Action.DOWNLOAD, "k-gone"),  # the URL is known
        )
    )
    missing = missing_accounts(plan, ["k-a", "k-b"])
    assert missing == {"k-gone": ["item-0", "item-1"], "k-other": ["item-2"]}
    message = missing_accounts_message(missing)
    assert message.startswith("3 items have predictions in flight made with API keys")
    assert "k-gone (item-0, item-1); k-other (item-2)" in message
    assert missing_accounts(plan, ["k-a", "k-gone", "k-other"]) == {}
