"""The results ledger: ``OUTPUT/ledger.jsonl``, append-only, one JSON object per line.

Every record has ``ts``, ``item``, ``key`` and ``event``. Records are appended and fsynced
before the runner acts on what they say, so after any crash the ledger tells what was paid for.
The file is never rewritten. Reading tolerates a torn last line (power loss mid-write: ignored
with a warning) and reports any other undecodable line by number, never silently.

The codec and the replay (records → one ``KeyState`` per item key) are pure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from runner.errors import LedgerError
from runner.jobs import JobState

LEDGER_NAME = "ledger.jsonl"

#: Events that are not job states: an upload remembered by the image's sha256.
EVENT_UPLOADED = "uploaded"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(record: Mapping[str, Any]) -> bytes:
    """One ledger line, newline included."""
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def decode(line: str) -> dict[str, Any]:
    """Parse one line; raise ValueError if it is not a record (JSON object with the core fields)."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for name in ("item", "key", "event"):
        if not isinstance(record.get(name), str):
            raise ValueError(f"no {name!r} field")
    return record


def parse(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All records in a ledger's text, and a warning for every line that was skipped."""
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    lines = text.split("\n")
    torn_tail = not text.endswith("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(decode(line))
        except ValueError as exc:
            if torn_tail and number == len(lines):
                warnings.append(
                    f"ledger line {number}: torn last line ignored (an interrupted write)"
                )
            else:
                warnings.append(f"ledger line {number}: corrupt record skipped ({exc})")
    return records, warnings


def read(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of the ledger at ``path`` (none if it does not exist) and read warnings."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from None
    return parse(text)


@dataclass(frozen=True)
class KeyState:
    """What the ledger knows of one item key."""

    key: str
    item: str
    state: JobState = JobState.PENDING
    attempts: int = 0  # creates sent (submitting records)
    prediction_id: str | None = None
    submitted_ts: str | None = None  # when the create was answered (wall clock, ISO 8601)
    submitting_ts: str | None = None  # when the last create was sent
    output_url: str | None = None
    predict_time: float | None = None
    cost: float | None = None
    error: str | None = None
    error_code: str | None = None
    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None


def apply(state: KeyState, record: Mapping[str, Any]) -> KeyState:
    """The state after one record. Unknown events leave the state as it was."""
    event = record["event"]
    if event == JobState.SUBMITTING:
        return replace(
            state,
            state=JobState.SUBMITTING,
            attempts=state.attempts + 1,
            submitting_ts=record.get("ts"),
            prediction_id=None,
            error=None,
            error_code=None,
        )
    if event == JobState.SUBMITTED:
        return replace(
            state,
            state=JobState.SUBMITTED,
            prediction_id=record.get("prediction_id"),
            submitted_ts=record.get("ts"),
        )
    if event == JobState.SUCCEEDED:
        return replace(
            state,
            state=JobState.SUCCEEDED,
            prediction_id=record.get("prediction_id") or state.prediction_id,
            output_url=record.get("output_url"),
            predict_time=record.get("predict_time"),
            cost=record.get("cost"),
        )
    if event == JobState.FAILED:
        return replace(
            state,
            state=JobState.FAILED,
            error=record.get("error"),
            error_code=record.get("error_code"),
            cost=record.get("cost", state.cost),
        )
    if event == JobState.DOWNLOADED:
        return replace(
            state,
            state=JobState.DOWNLOADED,
            path=record.get("path"),
            bytes=record.get("bytes"),
            sha256=record.get("sha256"),
        )
    if event == JobState.PENDING:  # a reset: e.g. a prediction lost on the server
        return replace(state, state=JobState.PENDING, prediction_id=None)
    return state


def replay(records: Iterable[Mapping[str, Any]]) -> dict[str, KeyState]:
    """Fold records into one KeyState per item key (the key, not the id, is an item's identity)."""
    states: dict[str, KeyState] = {}
    for record in records:
        if record["event"] == EVENT_UPLOADED:
            continue
        key = record["key"]
        current = states.get(key) or KeyState(key=key, item=record["item"])
        states[key] = apply(replace(current, item=record["item"]), record)
    return states


def uploads(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Image sha256 → public URL of every upload recorded, so a re-run does not upload again."""
    found: dict[str, str] = {}
    for record in records:
        if record["event"] == EVENT_UPLOADED and record.get("sha256") and record.get("public_url"):
            found[str(record["sha256"])] = str(record["public_url"])
    return found


class LedgerWriter:
    """Appends records and fsyncs each one before ``append`` returns.

    Writes run in a worker thread so the event loop never blocks on the disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = anyio.Lock()

    async def __aenter__(self) -> LedgerWriter:
        self._fd = await anyio.to_thread.run_sync(self._open)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as existing:
                    existing.seek(size - 1)
                    if existing.read(1) != b"\n":  # a torn last line: never glue a record to it
                        os.write(fd, b"\n")
                        os.fsync(fd)
        except OSError as exc:
            raise LedgerError(f"cannot open the ledger {self.path}: {exc.strerror}") from None
        return fd

    def _write(self, data: bytes) -> None:
        assert self._fd is not None, "the ledger is not open"
        try:
            os.write(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            raise LedgerError(f"cannot append to the ledger {self.path}: {exc.strerror}") from None

    async def append(self, item: str, key: str, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record and return it once it is on disk."""
        record: dict[str, Any] = {"ts": now_iso(), "item": item, "key": key, "event": event}
        record.update({name: value for name, value in fields.items() if value is not None})
        data = encode(record)
        async with self._lock:
            await anyio.to_thread.run_sync(self._write, data)
        return record
