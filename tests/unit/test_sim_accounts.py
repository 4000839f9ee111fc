"""The simulator's accounts, one per API key, without a network: the registry resolves keys, and
each account keeps its own cap, rate, balance, predictions and counters, drawing from the
server's one random source."""

from __future__ import annotations

import random

import pytest

from runner.keys import fingerprint
from runner.simulator import SimConfig, SimStats
from runner.simulator.account import Account
from runner.simulator.accounts import Accounts, request_key
from runner.simulator.executions import ExecutionsQuery


def registry(**changes: object) -> Accounts:
    config = SimConfig(**changes)  # type: ignore[arg-type]
    return Accounts(config, SimStats(), random.Random(config.seed))


def two(**changes: object) -> tuple[Accounts, Account, Account]:
    accounts = registry(**changes)
    a, b = accounts.resolve("key-a"), accounts.resolve("key-b")
    assert a is not None and b is not None
    return accounts, a, b


@pytest.mark.parametrize(
    ("headers", "key"),
    [({"X-API-Key": " k1 "}, "k1"), ({"Authorization": "Bearer k2"}, "k2"),
     ({"Authorization": "bearer  k3 "}, "k3"),
     ({"X-API-Key": "k4", "Authorization": "Bearer x"}, "k4"),
     ({"Authorization": "Basic k5"}, ""), ({"Authorization": "Bearer"}, ""), ({}, "")],
)  # fmt: skip
def test_the_key_comes_from_x_api_key_else_a_bearer_token(
    headers: dict[str, str], key: str
) -> None:
    assert request_key(headers) == key


def test_each_key_is_its_own_account_made_on_first_use_and_named_by_its_fingerprint() -> None:
    accounts = registry()
    assert accounts.resolve("") is None
    a = accounts.resolve("key-a")
    assert a is not None and accounts.resolve("key-a") is a
    b = accounts.resolve("key-b")
    assert b is not None and b is not a
    assert (a.name, b.name) == (fingerprint("key-a"), fingerprint("key-b"))
    assert accounts.stats.accounts == {a.name: a.own, b.name: b.own}
    assert accounts.named(b.name) is b and accounts.named(fingerprint("key-c")) is None
    assert "key-a" not in repr(accounts.stats) and "key-a" not in str(accounts.stats.summary())


def test_with_api_keys_only_those_keys_have_accounts() -> None:
    accounts = registry(api_keys=frozenset({"good"}))
    assert accounts.resolve("bad") is None and accounts.resolve("") is None
    assert accounts.stats.accounts == {}  # a refused key leaves no trace
    good = accounts.resolve("good")
    assert good is not None and list(accounts.stats.accounts) == [fingerprint("good")]


def test_each_account_has_its_own_in_flight_cap_and_the_server_sums_them() -> None:
    accounts, a, b = two(concurrency=2)
    a.create("m", {}, 0.0, None)
    a.create("m", {}, 0.0, None)
    refusal = a.create_refusal()
    assert refusal is not None and refusal[0] == 429
    assert "2 concurrent executions (2 in flight)" in refusal[1]["details"]
    assert b.create_refusal() is None  # B's slots are its own
    b_run = b.create("m", {}, 0.0, None)
    stats = accounts.stats
    assert (stats.in_flight, stats.max_in_flight, stats.refused_cap) == (3, 3, 1)
    assert (a.own.in_flight, a.own.max_in_flight, a.own.refused_cap) == (2, 2, 1)
    assert (b.own.in_flight, b.own.max_in_flight, b.own.refused_cap) == (1, 1, 0)
    b.finish(b_run, "success", 1.0)
    assert (stats.in_flight, b.own.in_flight, b.own.max_in_flight) == (2, 0, 1)


@pytest.mark.parametrize("burst", [None, 2])
def test_each_account_has_its_own_request_rate(burst: int | None) -> None:
    accounts, a, b = two(rate_limit=2, rate_window=10.0, rate_burst=burst)
    assert [a.rate_refusal(t) is None for t in (0.0, 0.1, 0.2)] == [True, True, False]
    assert [b.rate_refusal(t) is None for t in (0.3, 0.4, 0.5)] == [True, True, False]
    assert (accounts.stats.refused_rate, a.own.refused_rate, b.own.refused_rate) == (2, 1, 1)


def test_each_account_has_its_own_balance() -> None:
    accounts, a, b = two(balance_usd=0.5, price_usd=0.43)
    run = a.create("m", {}, 0.0, None)
    refusal = a.create_refusal()  # its one prediction in flight reserves the estimate
    assert refusal is not None and refusal[0] == 402
    assert b.create_refusal() is None
    a.finish(run, "success", 1.0)
    assert (a.spent_usd, a.own.spent_usd, b.spent_usd) == (pytest.approx(0.43), 0.43, 0.0)
    assert a.create_refusal() is not None and b.create_refusal() is None
    assert (accounts.stats.refused_balance, a.own.refused_balance, b.own.refused_balance) == (
        2,
        2,
        0,
    )


def test_a_prediction_is_visible_only_to_the_account_that_made_it() -> None:
    accounts, a, b = two()
    run = a.create("m", {"prompt": "p"}, 0.0, "abc")
    assert run.account == a.name
    assert accounts.stats.creates[-1].account == a.name and a.own.predictions == [run.id]
    assert accounts.lookup(a, run.id) is run
    assert accounts.lookup(b, run.id) is None  # as an id that does not exist
    assert accounts.lookup(b, "nope") is None  # truly unknown: not a foreign lookup
    assert (a.own.foreign_lookups, b.own.foreign_lookups) == (0, 1)
    assert accounts.find(run.id) is run and accounts.find("nope") is None  # the CDN's view


def test_executions_list_only_the_callers_own() -> None:
    _, a, b = two(executions_lag=0.0)
    mine = [a.create("m", {}, float(t), None) for t in range(3)]
    theirs = b.create("m", {}, 1.5, None)
    assert a.executions(ExecutionsQuery(), 5.0) == (mine[::-1], 3)
    assert b.executions(ExecutionsQuery(), 5.0) == ([theirs], 1)


def test_all_accounts_draw_from_the_servers_one_random_source() -> None:
    """Two keys' creates draw the run times a single key's creates would, in the same order:
    adding accounts does not change any run's sequence of draws."""
    config = SimConfig(failure_rate=0.3)
    _, a, b = two(failure_rate=0.3)
    lone = Account(config, SimStats(), rng=random.Random(config.seed))
    shared = [account.create("m", {}, 0.0, None) for account in (a, b, a, b, b)]
    alone = [lone.create("m", {}, 0.0, None) for _ in range(5)]
    assert [(r.run_time, r.failure) for r in shared] == [(r.run_time, r.failure) for r in alone]
    assert a.rng is b.rng
