"""The API keys a run works with: each key is an account of its own on the server, with its
own in-flight cap and request window, so each gets its own client, ``RateLimiter`` and count
of predictions in flight here.

New items go to the account with the most free slots (the first listed on a tie); an account
whose creates the API refuses (401, 402: a revoked key, a spent balance) takes no new item, and
the item it refused goes to another. A
prediction belongs to the account that created it: the ledger records the key's fingerprint
(``runner.keys``) with each create, and polls, cancels and lookups of that prediction go
through that account, this run and every later one. Records from before fingerprints were
kept belong to the first key, the only one a run could have then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
import anyio

from runner.api.client import EachlabsClient
from runner.api.port import Api
from runner.api.ratelimit import RateLimiter
from runner.config import Limits
from runner.keys import fingerprint
from runner.store.plan import Action, Plan


@dataclass(eq=False)
class Account:
    """One API key's share of the run: its client, its request window, its in-flight count."""

    name: str  # the key's fingerprint: what the ledger records and messages show, never the key
    client: Api
    limiter: RateLimiter
    limit: int  # predictions new creates may keep in flight (resumed ones come on top)
    used: int = 0
    #: Why the API refused this account's creates (401, 402): no new item goes to it.
    refused: str | None = None
    #: Set when this account sends no more creates (refused, or the run stops submitting):
    #: creates still waiting for its window give up, unsent.
    closed: anyio.Event = field(default_factory=anyio.Event)
    #: A 429 on a create holds this account's creates until then (monotonic), or until one
    #: of its predictions ends (``ended``, set and renewed each time).
    creates_paused_until: float = 0.0
    ended: anyio.Event = field(default_factory=anyio.Event)

    def one_ended(self) -> None:
        """One of this account's predictions ended here: its paused creates may try again."""
        self.ended.set()
        self.ended = anyio.Event()

    @classmethod
    def of_key(
        cls,
        session: aiohttp.ClientSession,
        base_url: str,
        key: str,
        limiter: RateLimiter,
        limits: Limits,
    ) -> Account:
        """``key``'s account on the API at ``base_url``: a client sending through ``limiter``,
        up to ``limits.concurrency`` in flight."""
        client = EachlabsClient.for_limits(session, base_url, key, limiter, limits)
        return cls(fingerprint(key), client, limiter, limits.concurrency)

    @property
    def free(self) -> int:
        return self.limit - self.used


class Accounts:
    """The run's accounts, in the order the keys were given (the first is the primary)."""

    def __init__(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            raise ValueError("a run needs at least one account")
        self.all = tuple(accounts)
        self.primary = self.all[0]
        self._by_name = {account.name: account for account in self.all}
        if len(self._by_name) != len(self.all):
            raise ValueError("two accounts have the same name")
        self._changed = anyio.Event()
        self._closed = False

    @property
    def limit(self) -> int:
        """The most predictions new creates may keep in flight over every key."""
        return sum(account.limit for account in self.all)

    def named(self, name: str | None) -> Account | None:
        """The account a ledger's ``account`` names (None, from before keys were recorded: the
        primary); None if no key of this run has that fingerprint."""
        return self.primary if name is None else self._by_name.get(name)

    async def acquire(self) -> Account | None:
        """A slot for a new create on the open account with the most free, waiting for one;
        None once every account has refused creates, or the run sends no more (``close``)."""
        while True:
            open_ = [account for account in self.all if account.refused is None]
            if not open_ or self._closed:
                return None
            best = max(open_, key=lambda account: account.free)  # the first on a tie
            if best.free > 0:
                best.used += 1
                return best
            await self._changed.wait()

    def refuse(self, account: Account, why: str) -> bool:
        """The API refused ``account``'s creates: no new item goes to it (its predictions in
        flight are still followed). Whether another account still takes new items."""
        account.refused = account.refused or why
        account.closed.set()
        account.limiter.notify()
        self._wake()
        return any(other.refused is None for other in self.all)

    def force(self, account: Account) -> None:
        """Count a prediction already running on ``account``'s server (a resumed one)."""
        account.used += 1

    def release(self, account: Account) -> None:
        """A prediction of ``account`` ended here: its slot is free for a new create."""
        account.used -= 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def close(self) -> None:
        """The run sends no more creates: end every account's creates waiting for a window,
        and the waits for a slot."""
        self._closed = True
        self._wake()
        for account in self.all:
            account.closed.set()
            account.limiter.notify()


#: The plan's actions that send requests about a prediction an earlier run created.
RESUMED = (Action.POLL, Action.RECONCILE, Action.RECHECK)


def missing_accounts(plan: Plan, names: Iterable[str]) -> dict[str, list[str]]:
    """The accounts (by fingerprint) that created predictions ``plan`` must resume but that
    are not among ``names``, each with its items' ids: a run without those keys could neither
    poll those predictions nor tell whether they exist, so it must not start."""
    given = set(names)
    missing: dict[str, list[str]] = {}
    for step in plan.steps:
        name = step.state.account
        if step.action in RESUMED and name is not None and name not in given:
            missing.setdefault(name, []).append(step.item.id)
    return missing


def missing_accounts_message(missing: dict[str, list[str]], shown: int = 3) -> str:
    """One line saying which keys are missing and for which items."""
    parts = []
    for name, ids in missing.items():
        more = f", and {len(ids) - shown} more" if len(ids) > shown else ""
        parts.append(f"{name} ({', '.join(ids[:shown])}{more})")
    count = sum(len(ids) for ids in missing.values())
    return (
        f"{count} items have predictions in flight made with API keys this run was not given: "
        f"{'; '.join(parts)}. Give those keys too (one per line in --api-key-file, or "
        "EACHLABS_API_KEYS): only the key that made a prediction can poll it. Nothing was "
        "submitted"
    )
