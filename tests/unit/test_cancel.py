"""The pure parts of ``cancel`` (which items it cancels, what it records for each ending, its
exit code), its refusals to stop a runner it must not signal, and the live summary.json's
refresh; no network."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner import livesummary
from runner.api.protocol import Prediction, RemoteStatus
from runner.cancel import (
    CancelConfig,
    CancelResult,
    Ending,
    Settled,
    cancel_batch,
    record_of,
    targets,
)
from runner.errors import LockedError
from runner.jobs import JobState
from runner.stoprunner import take_lock
from runner.store.ledger import LEDGER_NAME, KeyState, encode
from runner.store.outdir import LOCK_NAME, LockOwner, output_lock, read_lock


def state(
    item: str, job: JobState, prediction: str | None = None, code: str | None = None
) -> KeyState:
    return KeyState(
        key=f"k-{item}", item=item, state=job, prediction_id=prediction, error_code=code
    )


def test_cancel_targets_every_prediction_that_may_still_run_and_reports_ambiguous_creates() -> None:
    states = [
        state("pending", JobState.PENDING),
        state("unsure", JobState.SUBMITTING),
        state("running", JobState.SUBMITTED, "p-running"),
        state("fetching", JobState.SUCCEEDED, "p-fetching"),
        state("done", JobState.DOWNLOADED, "p-done"),
        state("failed", JobState.FAILED, "p-failed", "PROVIDER_FAILED"),
        state("timed-out", JobState.FAILED, "p-timed-out", "timeout"),
        state("lost", JobState.FAILED, "p-lost", "LOST"),
        state("unanswered", JobState.FAILED, None, "timeout"),
    ]  # fmt: skip
    to_cancel, ambiguous = targets(states)
    assert [s.item for s in to_cancel] == ["running", "timed-out", "lost"]
    assert [s.item for s in ambiguous] == ["unsure"]


def prediction(status: RemoteStatus, **fields: Any) -> Prediction:
    return Prediction(id="p-1", status=status, **fields)


SUCCESS = prediction(
    RemoteStatus.SUCCESS, output_url="http://cdn/v.mp4", predict_time=3.0, cost=Decimal("0.43")
)
CANCELLED = prediction(RemoteStatus.CANCELLED, error="the prediction was cancelled")
ERROR = prediction(
    RemoteStatus.ERROR, error="boom", error_code="PROVIDER_RATE_LIMIT", retryable=True
)


@pytest.mark.parametrize(
    ("polled", "expected"),
    [
        (prediction(RemoteStatus.RUNNING), None),
        (
            SUCCESS,
            (
                JobState.SUCCEEDED,
                {
                    "prediction_id": "p-1",
                    "cost": Decimal("0.43"),
                    "output_url": "http://cdn/v.mp4",
                    "predict_time": 3.0,
                },
            ),
        ),
        (
            CANCELLED,
            (
                JobState.FAILED,
                {
                    "prediction_id": "p-1",
                    "cost": None,
                    "error": "cancelled by i2v-runner cancel",
                    "error_code": "cancelled",
                },
            ),
        ),
        (
            ERROR,
            (
                JobState.FAILED,
                {
                    "prediction_id": "p-1",
                    "cost": None,
                    "error": "boom",
                    "error_code": "PROVIDER_RATE_LIMIT",
                    "retryable": True,
                },
            ),
        ),
    ],
    ids=["running", "success", "cancelled", "error"],
)
def test_each_ending_is_recorded_as_the_run_records_it(
    polled: Prediction, expected: tuple[JobState, dict[str, Any]] | None
) -> None:
    assert record_of(polled) == expected


@pytest.mark.parametrize(
    ("endings", "code"),
    [
        ([], 0),
        ([Ending.CANCELLED, Ending.SUCCEEDED, Ending.FAILED], 0),
        ([Ending.CANCELLED, Ending.RUNNING], 1),
        ([Ending.UNKNOWN], 1),
        ([Ending.AMBIGUOUS], 1),
    ],
)
def test_cancel_exits_0_only_when_every_prediction_in_flight_ended(
    endings: list[Ending], code: int
) -> None:
    settled = tuple(Settled(f"i{n}", None, e, "") for n, e in enumerate(endings))
    assert CancelResult(settled).exit_code == code


# -- the lock and the runner holding it ------------------------------------------------------


async def test_cancel_refuses_a_held_directory_naming_its_runner(tmp_path: Path) -> None:
    with output_lock(tmp_path, command="i2v-runner run m.yaml"):
        with contextlib.ExitStack() as stack, pytest.raises(LockedError) as refused:
            await take_lock(stack, tmp_path, "i2v-runner cancel", stop=False)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(refused.value)
        assert "--stop-runner" in str(refused.value)
        with contextlib.ExitStack() as stack, pytest.raises(LockedError, match="this process"):
            await take_lock(stack, tmp_path, "i2v-runner cancel", stop=True)  # never signals us


async def test_stop_runner_refuses_a_runner_on_another_host(tmp_path: Path) -> None:
    with output_lock(tmp_path, command="i2v-runner run m.yaml"):
        owner = read_lock(tmp_path).owner
        assert owner is not None
        elsewhere = dataclasses.replace(owner, host=f"not-{socket.gethostname()}")
        (tmp_path / LOCK_NAME).write_text(json.dumps(dataclasses.asdict(elsewhere)))
        with contextlib.ExitStack() as stack, pytest.raises(LockedError, match="another host"):
            await take_lock(stack, tmp_path, "i2v-runner cancel", stop=True)


@pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="only /proc tells which process holds a file"
)
async def test_stop_runner_refuses_a_pid_that_does_not_hold_the_lock(tmp_path: Path) -> None:
    with output_lock(tmp_path, command="i2v-runner run m.yaml"):
        stranger = LockOwner(
            os.getppid(), socket.gethostname(), "2026-11-22T06:00:00+00:00", "", ""
        )
        (tmp_path / LOCK_NAME).write_text(json.dumps(dataclasses.asdict(stranger)))
        with contextlib.ExitStack() as stack, pytest.raises(LockedError, match="does not hold"):
            await take_lock(stack, tmp_path, "i2v-runner cancel", stop=True)


async def test_cancel_with_nothing_in_flight_sends_nothing_and_keeps_the_resume_command(
    tmp_path: Path,
) -> None:
    done = {"item": "a", "key": "k", "ts": "2026-11-22T06:00:00.000Z"}
    records = [
        {**done, "event": "submitting"},
        {**done, "event": "submitted", "prediction_id": "p-a"},
        {**done, "event": "succeeded", "prediction_id": "p-a", "output_url": "http://c/a"},
        {**done, "event": "downloaded", "path": "a.mp4", "bytes": 1, "sha256": "00"},
    ]
    (tmp_path / LEDGER_NAME).write_bytes(b"".join(encode(r) for r in records))
    with output_lock(tmp_path, command="i2v-runner run m.yaml"):
        pass
    ledger_before = (tmp_path / LEDGER_NAME).read_bytes()
    config = CancelConfig(tmp_path, "http://127.0.0.1:9", "k", command="i2v-runner cancel")
    result = await cancel_batch(config)  # nothing listens on port 9: no request was made
    assert result.settled == () and result.exit_code == 0
    assert (tmp_path / LEDGER_NAME).read_bytes() == ledger_before
    owner = read_lock(tmp_path).owner  # it held the lock, keeping the run's command
    assert owner is not None
    assert (owner.command, owner.resume) == ("i2v-runner cancel", "i2v-runner run m.yaml")


async def test_cancel_in_a_directory_where_nothing_ran_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a batch")
    result = await cancel_batch(CancelConfig(tmp_path, "http://127.0.0.1:9", "k"))
    assert result.settled == () and result.exit_code == 0
    assert os.listdir(tmp_path) == ["notes.txt"]


# -- summary.json kept current during the run ------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Wait (in small real steps, at most 10 s) until ``condition`` holds."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (counters another task moves)
            await anyio.sleep(0.001)


async def test_the_live_summary_is_written_at_once_then_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.json"
    written: list[dict[str, Any]] = []
    real_write = livesummary.write_json_atomically

    def write(where: Path, data: Any) -> None:
        real_write(where, data)
        written.append(json.loads(json.dumps(data)))

    monkeypatch.setattr(livesummary, "write_json_atomically", write)
    done = {"n": 0}
    built = {"times": 0}

    def build() -> dict[str, Any]:
        built["times"] += 1
        return {"done": done["n"]}

    async def work() -> str:
        await until(lambda: len(written) == 1)  # written at once
        done["n"] = 1
        await until(lambda: len(written) == 2)  # and again once it changed
        seen = built["times"]
        await until(lambda: built["times"] >= seen + 5)  # five looks that found no change
        return "finished"

    said: list[str] = []
    result = await livesummary.refreshing(
        work(), path, build, lambda *a: said.append(a[1] % a[2:]), every=0.001
    )
    assert result == "finished"
    assert written == [{"done": 0}, {"done": 1}]
    assert json.loads(path.read_text()) == {"done": 1}
    assert said == []


async def test_a_live_summary_that_cannot_be_written_is_said_once_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "blocked").write_text("a file where a directory should be")
    path = tmp_path / "blocked" / "summary.json"
    said: list[tuple[int, str]] = []
    built = {"times": 0}

    def build() -> dict[str, Any]:
        built["times"] += 1
        return {"tick": built["times"]}  # a change every time: a write every time

    async def work() -> str:
        await until(lambda: built["times"] >= 5)
        return "finished"

    result = await livesummary.refreshing(
        work(), path, build, lambda lvl, msg, *a: said.append((lvl, msg % a)), every=0.001
    )
    assert result == "finished"
    assert len(said) == 1 and said[0][0] == logging.WARNING
    assert str(path) in said[0][1]
