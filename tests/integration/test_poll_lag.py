"""The events ``make bench`` measures poll lag with, against the simulator: each poll is
announced due (``PollDue``) before the request window lets its GET go (``RequestSent``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.batch import run_batch
from runner.events import Event, PollDue, RequestSent
from tests.integration.helpers import run_config, write_manifest

POLL = "GET /v1/prediction/"


async def test_every_poll_is_announced_due_before_the_window_lets_it_go(
    simulator: Any, tmp_path: Path
) -> None:
    sim = await simulator()
    manifest = write_manifest(tmp_path, count=4)
    heard: list[Event] = []
    result = await run_batch(
        run_config(manifest, sim.base_url, tmp_path / "out"),
        resume_command="x",
        on_event=heard.append,
    )
    assert result.exit_code == 0, result.text
    due: dict[str, float] = {}
    lags: list[float] = []
    for event in heard:
        if isinstance(event, PollDue):
            assert event.prediction_id not in due, "announced twice without being sent"
            due[event.prediction_id] = event.due
        elif isinstance(event, RequestSent) and event.what.startswith(POLL):
            prediction_id = event.what.removeprefix(POLL)
            if prediction_id in due:  # else a transient fault's retry, of a poll already sent
                lags.append(event.at - due.pop(prediction_id))
    assert due == {}, "a poll announced due was never sent"
    polls = sum(1 for _, endpoint in sim.stats.api_requests if endpoint == "get")
    assert 4 <= len(lags) <= polls  # the server saw each (and any retries)
    assert all(lag >= -1e-3 for lag in lags)  # never sent before it was due
