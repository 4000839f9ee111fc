"""``status`` from hand-written output directories: every state, ambiguous creates, failures
grouped by reason, spend as Decimal, a torn last line; the lock file's owner and whether the
lock is held; the CLI's screen, ``--json`` and its errors."""

from __future__ import annotations

import io
import json
import os
import socket
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner.cli import command
from runner.errors import ConfigError, LedgerError, LockedError
from runner.jobs import JobState
from runner.status import as_json, describe, fold_ledger, item_states, read_status
from runner.store import ledger
from runner.store.outdir import LockOwner, LockState, output_lock, parse_owner, read_lock

RUN = "i2v-runner run batch/manifest.yaml --output out"
NOW = datetime(2026, 11, 22, 6, 1, 0, tzinfo=UTC)


def rec(event: str, item: str, *, key: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "ts": fields.pop("ts", "2026-11-22T06:00:00.000Z"),
        "item": item,
        "key": key or f"k-{item}",
        "event": event,
        **fields,
    }


def every_state() -> list[dict[str, Any]]:
    """One item in each state, two failures alike, one failure a plain run takes up."""
    fail = {"error": "The provider failed to generate the video.", "error_code": "PROVIDER_FAILED"}
    return [
        rec("submitting", "done", attempt=1),
        rec("submitted", "done", prediction_id="p-done"),
        rec("succeeded", "done", prediction_id="p-done", output_url="http://cdn/1", cost=0.1),
        rec("downloaded", "done", path="done.mp4", bytes=10, sha256="ab"),
        rec("submitting", "fetching", attempt=1),
        rec("submitted", "fetching", prediction_id="p-fetching"),
        rec("succeeded", "fetching", prediction_id="p-fetching", output_url="http://c/2", cost=0.2),
        rec("submitting", "running", attempt=1),
        rec("submitted", "running", prediction_id="p-running"),
        rec("submitting", "unsure", attempt=1),
        rec("submitting", "bad-1"),
        rec("submitted", "bad-1", prediction_id="p-bad-1"),
        rec("failed", "bad-1", prediction_id="p-bad-1", **fail),
        rec("submitting", "bad-2"),
        rec("submitted", "bad-2", prediction_id="p-bad-2"),
        rec("failed", "bad-2", prediction_id="p-bad-2", **fail),
        rec("submitting", "lost-video"),
        rec("submitted", "lost-video", prediction_id="p-lv"),
        rec("succeeded", "lost-video", prediction_id="p-lv", output_url="http://c/3", cost=0.2),
        rec("failed", "lost-video", error="the CDN kept failing", error_code="DOWNLOAD_FAILED"),
        rec("submitting", "nothing-made"),
        rec("pending", "nothing-made", reason="429", ts="2026-11-22T06:00:30.000Z"),
    ]


def write_dir(
    path: Path,
    records: list[dict[str, Any]],
    *,
    tail: str = "",
    summary: dict[str, Any] | None = None,
    owner: LockOwner | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = b"".join(ledger.encode(r) for r in records) + tail.encode()
    (path / ledger.LEDGER_NAME).write_bytes(text)
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    if owner is not None:
        (path / ".lock").write_text(json.dumps(owner.__dict__))
    return path


def last_runner(command: str = RUN) -> LockOwner:
    return LockOwner(4242, "night-box", "2026-11-22T05:59:00+01:00", command, command)


def test_every_state_is_counted_in_the_summary_words_and_the_finer_states(tmp_path: Path) -> None:
    status = read_status(write_dir(tmp_path / "out", every_state()))
    assert {state: status.count(state) for state in JobState} == {
        JobState.PENDING: 1,
        JobState.SUBMITTING: 1,
        JobState.SUBMITTED: 1,
        JobState.SUCCEEDED: 1,
        JobState.DOWNLOADED: 1,
        JobState.FAILED: 3,
    }
    assert status.counts == {"total": 8, "done": 1, "failed": 3, "pending": 1, "running": 3}
    assert status.ambiguous == ["unsure"]
    assert [(s.item, s.prediction_id) for s in status.in_flight] == [("running", "p-running")]
    assert status.last_event == "2026-11-22T06:00:30.000Z"


def test_spend_is_the_decimal_sum_of_the_recorded_costs_once_per_prediction(
    tmp_path: Path,
) -> None:
    records = [
        *every_state(),
        # the same prediction recorded twice (a fresh URL): counted once, its last cost
        rec("succeeded", "fetching", prediction_id="p-fetching", output_url="http://c/2", cost=0.2),
    ]
    status = read_status(write_dir(tmp_path / "out", records))
    assert isinstance(status.spent, Decimal)
    assert status.spent == Decimal("0.5")  # 0.1 + 0.2 + 0.2, exactly (floats give 0.5000...1)
    assert as_json(status, NOW)["spent_usd"] == 0.5


def test_failures_are_grouped_by_reason_with_counts_and_item_ids(tmp_path: Path) -> None:
    status = read_status(write_dir(tmp_path / "out", every_state()))
    groups = [(g.error_code, g.error, g.resumed, g.items) for g in status.failures]
    assert groups == [
        (
            "PROVIDER_FAILED",
            "The provider failed to generate the video.",
            False,
            ("bad-1", "bad-2"),
        ),
        ("DOWNLOAD_FAILED", "the CDN kept failing", True, ("lost-video",)),
    ]
    failures = as_json(status, NOW)["failures"]
    assert [(f["count"], f["next_run_resumes"]) for f in failures] == [(2, False), (1, True)]


def test_the_commands_to_resume_and_retry_come_from_the_lock_file(tmp_path: Path) -> None:
    status = read_status(write_dir(tmp_path / "out", every_state(), owner=last_runner()))
    assert status.resume_command == RUN
    assert status.retry_command == f"{RUN} --retry-failed"
    retrying = read_status(
        write_dir(tmp_path / "again", every_state(), owner=last_runner(f"{RUN} --retry-failed"))
    )
    assert retrying.retry_command == f"{RUN} --retry-failed"  # not twice


def test_a_finished_batch_needs_no_command(tmp_path: Path) -> None:
    status = read_status(write_dir(tmp_path / "out", every_state()[:4], owner=last_runner()))
    assert status.counts["done"] == status.counts["total"] == 1
    assert (status.resume_command, status.retry_command) == (None, None)
    assert status.last_command == RUN


def test_a_torn_last_line_is_ignored_with_a_warning(tmp_path: Path) -> None:
    torn = '{"ts":"2026-11-22T06:00:31.000Z","item":"running","key":"k-running","event":"succ'
    status = read_status(write_dir(tmp_path / "out", every_state(), tail=torn))
    assert status.count(JobState.SUBMITTED) == 1  # the torn record is not applied
    assert any("torn last line ignored" in w for w in status.warnings)
    assert as_json(status, NOW)["warnings"] == list(status.warnings)


def test_items_the_summary_lists_but_the_ledger_never_recorded_are_pending(tmp_path: Path) -> None:
    summary = {
        "batch": "night",
        "items": [
            {"id": "done", "status": "done"},
            {"id": "fresh", "status": "pending"},
            {"id": "copy", "status": "done", "duplicate_of": "done"},
        ],
    }
    status = read_status(write_dir(tmp_path / "out", every_state()[:4], summary=summary))
    assert status.batch == "night"
    assert status.counts == {"total": 3, "done": 2, "failed": 0, "pending": 1, "running": 0}


def test_an_id_under_two_keys_counts_by_its_latest_record() -> None:
    records = [
        rec("submitting", "deer", key="old"),
        rec("submitted", "deer", key="old", prediction_id="p-old"),
        rec("submitting", "deer", key="edited"),  # the prompt was edited: a new key
    ]
    assert item_states(fold_ledger(records))["deer"].key == "edited"
    again = records[:2] + records[2:] + records[1:2]
    assert item_states(fold_ledger(again))["deer"].key == "old"


def test_an_empty_directory_says_nothing_has_run(tmp_path: Path) -> None:
    status = read_status(tmp_path)
    assert not status.ran and status.counts["total"] == 0
    assert as_json(status, NOW)["ran"] is False


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda p: p / "missing", ConfigError, "does not exist"),
        (lambda p: (p / "f").write_text("x") and p / "f", ConfigError, "is not a directory"),
        (lambda p: (p / "notes.txt").write_text("x") and p, ConfigError, "holds no ledger"),
        (lambda p: (p / ledger.LEDGER_NAME).mkdir() or p, LedgerError, "cannot read the ledger"),
    ],
    ids=["missing", "a-file", "foreign-directory", "ledger-is-a-directory"],
)
def test_a_path_that_is_not_an_output_directory_is_refused(
    tmp_path: Path, setup: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        read_status(setup(tmp_path))


# -- the lock file ---------------------------------------------------------------------------


OWNER = {"pid": 12, "host": "h", "started": "2026-11-22T06:00:00+00:00", "command": "c"}
WHOLE = LockOwner(12, "h", "2026-11-22T06:00:00+00:00", "c", "r")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps({**OWNER, "resume": "r"}), WHOLE),
        (json.dumps({**OWNER, "resume": "r", "later": 1}), WHOLE),  # a later runner's field
        ("", None),  # an older runner's empty lock file
        ('{"pid": 12, "host": "h", "star', None),  # caught half way through a write
        ("[1, 2]", None),
        (json.dumps({**OWNER, "pid": True, "resume": "r"}), None),
        (json.dumps({**OWNER, "pid": "12", "resume": "r"}), None),
        (json.dumps({**OWNER, "pid": 0, "resume": "r"}), None),
        (json.dumps({**OWNER}), None),  # no resume
        (json.dumps({**OWNER, "host": None, "resume": "r"}), None),
    ],
)  # fmt: skip
def test_the_lock_files_owner_is_read_only_when_whole(
    text: str, expected: LockOwner | None
) -> None:
    assert parse_owner(text) == expected


def test_a_held_lock_names_this_process_and_is_free_again_after(tmp_path: Path) -> None:
    with output_lock(tmp_path, command=RUN):
        state = read_lock(tmp_path)
        assert state.held
        assert state.owner is not None
        assert (state.owner.pid, state.owner.host) == (os.getpid(), socket.gethostname())
        assert state.owner.command == state.owner.resume == RUN
        assert datetime.fromisoformat(state.owner.started).utcoffset() is not None
        with pytest.raises(LockedError):  # the peek did not take it for good
            output_lock(tmp_path).__enter__()
    after = read_lock(tmp_path)
    assert not after.held and after.owner == state.owner  # the last runner stays named


def test_a_cancel_holding_the_lock_keeps_the_runs_resume_command(tmp_path: Path) -> None:
    with output_lock(tmp_path, command=RUN):
        pass
    with output_lock(tmp_path, command="i2v-runner cancel out", keep_resume=True):
        owner = read_lock(tmp_path).owner
    assert owner is not None and (owner.command, owner.resume) == ("i2v-runner cancel out", RUN)


def test_reading_the_lock_writes_nothing(tmp_path: Path) -> None:
    assert read_lock(tmp_path) == LockState(held=False, owner=None)
    assert list(tmp_path.iterdir()) == []


# -- the command line ------------------------------------------------------------------------


async def run_status(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await command(["status", *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_status_json_is_one_object_with_the_documented_keys(tmp_path: Path) -> None:
    directory = write_dir(tmp_path / "out", every_state(), owner=last_runner())
    code, out, err = await run_status(str(directory), "--json")
    assert (code, err) == (0, "")
    status = json.loads(out)
    assert list(status) == [
        "directory", "batch", "ran", "counts", "states", "spent_usd", "in_flight", "ambiguous",
        "failures", "lock", "last_event", "last_command", "resume_command", "retry_command",
        "night", "warnings",
    ]  # fmt: skip
    assert status["states"] == {
        "pending": 1, "submitting": 1, "submitted": 1, "succeeded": 1, "downloaded": 1,
        "failed": 3,
    }  # fmt: skip
    assert status["in_flight"] == [
        {"item": "running", "prediction_id": "p-running", "submitted": "2026-11-22T06:00:00.000Z"}
    ]
    assert status["lock"] == {
        "held": False,
        "owner": {
            "pid": 4242,
            "host": "night-box",
            "started": last_runner().started,
            "command": RUN,
        },
    }
    assert status["last_event"]["ts"] == "2026-11-22T06:00:30.000Z"
    assert status["last_event"]["seconds_ago"] > 0


async def test_status_on_a_screen_tells_states_failures_and_next_commands(tmp_path: Path) -> None:
    directory = write_dir(tmp_path / "out", every_state(), owner=last_runner())
    code, out, _ = await run_status(str(directory))
    assert code == 0
    assert "8 items: 1 done, 3 failed, 3 running, 1 pending; spent $0.50" in out
    assert "2 × [PROVIDER_FAILED] The provider failed to generate the video.: bad-1, bad-2" in out
    assert "lost-video" in out and "ambiguous" in out and "unsure" in out
    assert "no runner holds the lock (the last to hold it: pid 4242 on night-box" in out
    assert f"to resume: {RUN}\n" in out
    assert f"to submit the failed items again: {RUN} --retry-failed" in out


async def test_status_names_the_runner_that_holds_the_lock(tmp_path: Path) -> None:
    directory = write_dir(tmp_path / "out", every_state())
    with output_lock(directory, command=RUN):
        code, out, _ = await run_status(str(directory))
    assert code == 0
    assert f"a runner holds the lock now: pid {os.getpid()} on {socket.gethostname()}" in out
    assert f"its command: {RUN}" in out


async def test_status_of_an_empty_directory_says_nothing_has_run(tmp_path: Path) -> None:
    code, out, _ = await run_status(str(tmp_path))
    assert code == 0 and "nothing has run here yet" in out


@pytest.mark.parametrize("where", ["missing", "file"])
async def test_status_of_what_is_no_directory_is_one_line_and_exit_2(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / where
    if where == "file":
        path.write_text("not a directory")
    code, out, err = await run_status(str(path), "--json")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err


async def test_status_of_an_unreadable_ledger_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / ledger.LEDGER_NAME).mkdir()
    code, _, err = await run_status(str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "cannot read the ledger" in err


def test_describe_is_pure_over_its_inputs(tmp_path: Path) -> None:
    records = every_state()
    status = describe(tmp_path, records, [], None, LockState(held=True, owner=None))
    assert status.lock.held and status.last_command is None and status.resume_command is None
