"""Several API keys against a simulator with one account per key: each key's in-flight cap
and request window hold on the server, the batch spreads over both accounts, and every poll
and cancel of a prediction uses the key that created it, in the run that made it and in the
next one; a resume without a key that made predictions in flight is refused.

The server's own per-account counters (``sim.stats.accounts``, by key fingerprint) are the
independent record: a request with the wrong key is answered 404 there and counted in
``foreign_lookups``.
"""

from __future__ import annotations

import dataclasses
import io
import signal
from pathlib import Path
from typing import Any

import pytest

from runner import run_batch
from runner.cli import command
from runner.keys import fingerprint

from .helpers import (
    API_KEY,
    FAST,
    cli_args,
    count_events,
    ledger_events,
    run_config,
    start_cli,
    wait_for,
    write_manifest,
)

pytestmark = pytest.mark.timeout(120)

KEYS = (API_KEY, "second-test-key-not-secret")
#: Each account's request window: tight enough that polling four predictions is bound by it.
WINDOW = 20


def accounts(sim: Any) -> list[Any]:
    """The server's counters of the accounts of ``KEYS``, in that order."""
    return [sim.stats.accounts[fingerprint(key)] for key in KEYS]


def busiest(times: list[float], length: float) -> int:
    """The most requests in any window of ``length`` seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= length:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_two_keys_each_hold_their_cap_and_window_and_poll_their_own_predictions(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator(concurrency=2, rate_limit=WINDOW, rate_window=1.0)
    manifest = write_manifest(tmp_path, count=12)
    output = tmp_path / "out"
    limits = dataclasses.replace(FAST, concurrency=2, rate_limit=WINDOW, rate_window=1.0)
    config = run_config(manifest, sim.base_url, output, limits, more_api_keys=KEYS[1:])
    result = await run_batch(config)
    assert result.exit_code == 0, result.text
    assert len(list(output.glob("*.mp4"))) == 12

    one, two = accounts(sim)
    assert set(sim.stats.accounts) == {fingerprint(key) for key in KEYS}
    # The batch ran on both accounts, each up to its own cap: four in flight, not two.
    assert one.max_in_flight == two.max_in_flight == 2
    assert one.predictions and two.predictions
    # Each key kept to its own window, and together they sent more than one window allows.
    for account in (one, two):
        assert account.refused_rate == 0 and account.refused_cap == 0
        assert busiest([t for t, _ in account.api_requests], 1.0) <= WINDOW
    both = [t for account in (one, two) for t, _ in account.api_requests]
    assert busiest(both, 1.0) > WINDOW
    # No request about a prediction went out with the other key.
    assert one.foreign_lookups == two.foreign_lookups == 0
    # The ledger names, for every create, the key whose account made the prediction.
    made_by = {pid: fingerprint(KEYS[0]) for pid in one.predictions}
    made_by |= {pid: fingerprint(KEYS[1]) for pid in two.predictions}
    events = ledger_events(output)
    account_of_item = {}
    for record in events:
        if record["event"] == "submitting":
            account_of_item[record["item"]] = record["account"]
        elif record["event"] == "submitted":
            assert made_by[record["prediction_id"]] == account_of_item[record["item"]]
    assert all(KEYS[1] not in line for line in (output / "ledger.jsonl").read_text().splitlines())


async def killed_on_two_keys(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, list[str], Path]:
    """A batch of four run on both keys (two in flight each) and killed once all four
    predictions are recorded: the simulator, the command line and the output directory."""
    monkeypatch.setenv("EACHLABS_API_KEYS", ",".join(KEYS))
    sim = await simulator(concurrency=2, runtime_mean=3.0, runtime_min=2.5, runtime_max=3.5)
    manifest = write_manifest(tmp_path, count=4)
    output = tmp_path / "out"
    args = cli_args(manifest, sim.base_url, output, "--concurrency", "2")
    runner = await start_cli(args)
    await wait_for(lambda: count_events(output, "submitted") == 4)
    runner.send_signal(signal.SIGKILL)
    await runner.wait()
    assert [len(account.predictions) for account in accounts(sim)] == [2, 2]
    return sim, args, output


def about_predictions(sim: Any) -> int:
    """Requests that concern a prediction: creates, polls, cancels."""
    return sum(
        1 for _, endpoint in sim.stats.api_requests if endpoint in ("create", "get", "cancel")
    )


async def test_a_resume_polls_each_prediction_with_its_key_and_refuses_without_one(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, args, output = await killed_on_two_keys(simulator, tmp_path, monkeypatch)

    # Only the first key: the second's predictions could not be polled. Refused, naming it.
    monkeypatch.setenv("EACHLABS_API_KEYS", KEYS[0])
    before = about_predictions(sim)
    alone = await start_cli(args)
    _, stderr = await alone.communicate()
    assert alone.returncode == 2, stderr.decode()
    message = stderr.decode()
    assert "2 items have predictions in flight made with API keys" in message
    assert fingerprint(KEYS[1]) in message and KEYS[1] not in message
    assert about_predictions(sim) == before

    # Both keys: every prediction is polled on its own account, none is created again.
    monkeypatch.setenv("EACHLABS_API_KEYS", ",".join(KEYS))
    created = len(sim.stats.creates)
    rerun = await start_cli(args)
    _, stderr = await rerun.communicate()
    assert rerun.returncode == 0, stderr.decode()
    assert len(sim.stats.creates) == created
    assert [account.foreign_lookups for account in accounts(sim)] == [0, 0]
    assert len(list(output.glob("*.mp4"))) == 4


async def test_cancel_on_two_keys_cancels_each_prediction_with_its_key(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, _, output = await killed_on_two_keys(simulator, tmp_path, monkeypatch)
    out, err = io.StringIO(), io.StringIO()
    code = await command(
        ["cancel", str(output), "--api-base", sim.base_url, "--rate", "1000/1", "--wait", "0"],
        out=out,
        err=err,
    )
    assert code in (0, 1), out.getvalue() + err.getvalue()
    cancels = [
        sum(1 for _, endpoint in account.api_requests if endpoint == "cancel")
        for account in accounts(sim)
    ]
    assert cancels == [2, 2]
    assert [account.foreign_lookups for account in accounts(sim)] == [0, 0]
