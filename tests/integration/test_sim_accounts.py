"""Each API key is its own account on the simulator, over real HTTP: its own in-flight cap,
request window, balance, predictions and executions, and counters that add up to the server's.

Two keys (two client sessions) talk to one simulator; the server's own counters
(``sim.stats``, ``sim.stats.accounts`` by key fingerprint) are the independent record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from runner.keys import fingerprint
from runner.simulator import SimStats, Simulator

from .conftest import StartSimulator
from .test_simulator import MODEL, upload, wait_end

#: Tests of the simulator itself stay on its default profile, whatever ``SIM_PROFILE`` says:
#: each answer below is the one its behaviour is about, never a transient fault.
SIM_PROFILE = "real"

KEY_A, KEY_B = "key-of-account-a", "key-of-account-b"
A, B = fingerprint(KEY_A), fingerprint(KEY_B)
#: Predictions that stay in flight for the whole test.
LONG_RUNS = {"runtime_mean": 60.0, "runtime_min": 60.0, "runtime_max": 60.0}


@pytest.fixture
async def sessions() -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    """Two client sessions, one sending each key."""
    async with (
        aiohttp.ClientSession(headers={"X-API-Key": KEY_A}) as a,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY_B}"}) as b,
    ):
        yield a, b


async def try_create(
    session: aiohttp.ClientSession, sim: Simulator, image: str
) -> tuple[int, dict[str, Any]]:
    body = {"model": MODEL, "input": {"prompt": "a red kite", "first_frame_image": image}}
    async with session.post(f"{sim.base_url}/v1/prediction", json=body) as r:
        return r.status, await r.json()


async def created(session: aiohttp.ClientSession, sim: Simulator, image: str) -> str:
    status, answer = await try_create(session, sim, image)
    assert status == 200, answer
    return str(answer["predictionID"])


async def answer(session: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any]:
    async with session.request(method, url) as r:
        return r.status, await r.json(content_type=None)


#: The model lookups need no key: one without a key is the server's request, no account's.
OPEN_ENDPOINTS = ("model", "models")


def assert_accounts_add_up(stats: SimStats) -> None:
    """Per-account counters sum to the server's: every API request that needs a key is an
    account's or a 401 (no transient faults here), and so for creates, refusals and what is in
    flight."""
    assert stats.faults == {}

    def keyed(requests: list[tuple[float, str]]) -> int:
        return sum(1 for _, endpoint in requests if endpoint not in OPEN_ENDPOINTS)

    own = stats.accounts.values()
    assert sum(keyed(o.api_requests) for o in own) + stats.unauthorized == keyed(stats.api_requests)
    assert sorted(p for o in own for p in o.predictions) == sorted(
        c.prediction_id for c in stats.creates
    )
    for name in ("in_flight", "refused_cap", "refused_rate", "refused_balance"):
        assert sum(getattr(o, name) for o in own) == getattr(stats, name), name
    assert max(o.max_in_flight for o in own) <= stats.max_in_flight
    assert {c.account for c in stats.creates} <= set(stats.accounts)


async def test_each_keys_in_flight_cap_refuses_on_its_own(
    simulator: StartSimulator,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    """A at its cap gets the concurrency 429 while B still creates, up to its own cap."""
    a, b = sessions
    sim = await simulator(concurrency=2, **LONG_RUNS)
    image = await upload(a, sim)  # one shared file host: B uses A's upload
    first_a = [await created(a, sim, image) for _ in range(2)]
    status, refusal = await try_create(a, sim, image)
    assert status == 429
    assert "limited to 2 concurrent executions (2 in flight)" in refusal["details"]
    first_b = [await created(b, sim, image) for _ in range(2)]  # B's slots are its own
    assert (await try_create(b, sim, image))[0] == 429
    stats = sim.stats
    assert (stats.in_flight, stats.max_in_flight, stats.refused_cap) == (4, 4, 2)
    assert stats.accounts[A].predictions == first_a and stats.accounts[B].predictions == first_b
    for name in (A, B):
        own = stats.accounts[name]
        assert (own.in_flight, own.max_in_flight, own.refused_cap) == (2, 2, 1)
    assert [c.account for c in stats.creates] == [A, A, B, B]
    assert_accounts_add_up(stats)


async def test_each_keys_request_window_is_its_own(
    simulator: StartSimulator,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    """A exhausts its window and gets the rate 429; B is admitted, then meets its own limit. A
    wrong key is 401 and counts against no account; a model lookup without a key neither."""
    a, b = sessions
    sim = await simulator(api_keys=frozenset({KEY_A, KEY_B}), rate_limit=3, rate_window=600.0)
    url = f"{sim.base_url}/v1/executions"
    assert [(await answer(a, "GET", url))[0] for _ in range(4)] == [200, 200, 200, 429]
    status, body = await answer(a, "GET", url)
    assert status == 429 and body["details"] == (
        "Rate limit exceeded: at most 3 requests per 600 seconds"
    )
    async with aiohttp.ClientSession(headers={"X-API-Key": "not-a-key"}) as stranger:
        assert (await answer(stranger, "GET", url))[0] == 401
        model_url = f"{sim.base_url}/v1/model?slug={MODEL}"
        async with stranger.get(model_url, headers={"X-API-Key": ""}) as r:
            assert r.status == 200  # the model schema needs no key, and counts against nobody
    assert [(await answer(b, "GET", url))[0] for _ in range(4)] == [200, 200, 200, 429]
    stats = sim.stats
    assert (stats.refused_rate, stats.unauthorized) == (3, 1)
    assert (stats.accounts[A].refused_rate, stats.accounts[B].refused_rate) == (2, 1)
    assert [len(stats.accounts[n].api_requests) for n in (A, B)] == [5, 4]
    assert len(stats.api_requests) == 5 + 4 + 2  # and the 401 and the keyless model lookup
    assert set(stats.accounts) == {A, B}  # the wrong key made no account
    assert_accounts_add_up(stats)


@pytest.mark.parametrize("error_bodies", ["terse", "helpful"])
async def test_another_accounts_prediction_answers_as_an_unknown_id(
    simulator: StartSimulator,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
    error_bodies: str,
) -> None:
    """B's get and cancel of A's prediction answer exactly as for an id that does not exist, are
    counted as B's foreign lookups, and leave the prediction as it was."""
    a, b = sessions
    sim = await simulator(error_bodies=error_bodies, cancel_at_once=True, **LONG_RUNS)
    prediction = await created(a, sim, await upload(a, sim))
    base = f"{sim.base_url}/v1/prediction"
    for method, path in (("GET", "{}"), ("POST", "{}/cancel")):
        unknown = await answer(b, method, f"{base}/" + path.format("no-such-prediction"))
        assert unknown[0] in (404, 500)  # the contract's answers to an unknown id
        foreign = await answer(b, method, f"{base}/" + path.format(prediction))
        assert foreign == unknown, method
    assert sim.stats.accounts[B].foreign_lookups == 2  # the unknown ids are not counted
    assert sim.stats.accounts[A].foreign_lookups == 0
    assert sim.stats.cancels == 0
    status, envelope = await answer(a, "GET", f"{base}/{prediction}")
    assert status == 200 and envelope["id"] == prediction
    assert envelope["status"] in ("created", "starting", "processing")  # B's cancel did nothing
    assert sim.stats.accounts[A].foreign_lookups == 0
    assert_accounts_add_up(sim.stats)


async def test_executions_list_only_the_callers_own_predictions(
    simulator: StartSimulator,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    a, b = sessions
    sim = await simulator(executions_lag=0.0, concurrency=5, **LONG_RUNS)
    image = await upload(a, sim)
    for session, count in ((a, 3), (b, 2)):
        for _ in range(count):
            await created(session, sim, image)
    listed: dict[str, list[str]] = {}
    for name, session in ((A, a), (B, b)):
        status, page = await answer(session, "GET", f"{sim.base_url}/v1/executions?limit=100")
        assert status == 200
        listed[name] = [row["id"] for row in page["executions"]]
        assert page["total_count"] == len(listed[name])
    assert sorted(listed[A]) == sorted(sim.stats.accounts[A].predictions)
    assert sorted(listed[B]) == sorted(sim.stats.accounts[B].predictions)
    assert (len(listed[A]), len(listed[B])) == (3, 2)
    assert_accounts_add_up(sim.stats)


async def test_each_account_has_its_own_balance(
    simulator: StartSimulator,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    """A balance of $0.50 pays one $0.43 video per account: A's second create is refused 402
    while B's first is made."""
    a, b = sessions
    sim = await simulator(balance_usd=0.5, **LONG_RUNS)
    image = await upload(a, sim)
    await created(a, sim, image)
    status, refusal = await try_create(a, sim, image)
    assert status == 402 and refusal["error"] == "payment required"
    await created(b, sim, image)
    assert (await try_create(b, sim, image))[0] == 402
    stats = sim.stats
    assert [stats.accounts[n].refused_balance for n in (A, B)] == [1, 1]
    assert [len(stats.accounts[n].predictions) for n in (A, B)] == [1, 1]
    assert_accounts_add_up(stats)


async def test_spend_is_each_accounts_own_and_the_stats_endpoint_shows_it_by_fingerprint(
    simulator: StartSimulator,
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    a, b = sessions
    sim = await simulator()
    image = await upload(a, sim)
    envelope, _ = await wait_end(b, sim, await created(b, sim, image))
    assert envelope["status"] == "success"
    status, summary = await answer(a, "GET", f"{sim.base_url}/_sim/stats")
    assert status == 200
    assert set(summary["accounts"]) == {A, B}
    assert summary["accounts"][B]["spent_usd"] == pytest.approx(sim.config.price_usd)
    assert summary["accounts"][A]["spent_usd"] == 0
    assert summary["accounts"][A]["api_requests"] == 1  # the presign
    assert KEY_A not in str(summary) and KEY_B not in str(summary)
    assert_accounts_add_up(sim.stats)
