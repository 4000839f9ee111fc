"""The simulator's accounts: one per API key, made on the key's first request.

The real service gives each API key its own account, and so does the simulator: each ``Account``
has its own in-flight cap, request rate, balance and predictions, and sees only its own (a
prediction of another account is, to it, an id that does not exist). ``Accounts`` resolves a
request's key to its account: any non-empty key with ``api_keys`` None, else only those keys.
Every account draws from the server's one ``random.Random``, so a run with one key draws the
same sequence as ever. Accounts are named by their key's fingerprint (``runner.keys``), in
``SimStats.accounts`` and everywhere else; the raw key is only looked up, never shown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

from runner.keys import fingerprint
from runner.simulator.account import Account
from runner.simulator.config import SimConfig
from runner.simulator.lifecycle import Run
from runner.simulator.stats import SimStats


def request_key(headers: Mapping[str, str]) -> str:
    """The API key a request carries: ``X-API-Key``, else ``Authorization: Bearer <key>``;
    empty if neither."""
    key = headers.get("X-API-Key", "").strip()
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if not key and scheme.lower() == "bearer":
        key = token.strip()
    return key


class Accounts:
    """The accounts of one simulator, by API key."""

    def __init__(
        self,
        config: SimConfig,
        stats: SimStats,
        rng: random.Random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.stats = stats
        self.rng = rng
        self.wall = wall
        self._by_key: dict[str, Account] = {}

    def resolve(self, key: str) -> Account | None:
        """The account of ``key``, made on its first use; None for an empty key or (with
        ``api_keys`` set) one it does not list: the request answers 401."""
        if not key:
            return None
        account = self._by_key.get(key)
        if account is None:
            allowed = self.config.api_keys
            if allowed is not None and key not in allowed:
                return None
            account = Account(
                self.config, self.stats, self.wall, rng=self.rng, name=fingerprint(key)
            )
            self._by_key[key] = account
        return account

    def named(self, name: str) -> Account | None:
        """The account whose key has fingerprint ``name``, if it has been used."""
        return next((a for a in self._by_key.values() if a.name == name), None)

    def find(self, prediction_id: str) -> Run | None:
        """The prediction ``prediction_id`` of whichever account made it (the CDN serves any
        account's videos: their URLs are not guessable), or None."""
        for account in self._by_key.values():
            run = account.predictions.get(prediction_id)
            if run is not None:
                return run
        return None

    def lookup(self, account: Account, prediction_id: str) -> Run | None:
        """``account``'s prediction ``prediction_id`` (a get or a cancel), or None. One of
        another account is not shown either: it is counted in the caller's
        ``foreign_lookups`` and answered as an unknown id."""
        run = account.predictions.get(prediction_id)
        if run is None and self.find(prediction_id) is not None:
            account.own.foreign_lookups += 1
        return run
