"""The results ledger: ``OUTPUT/ledger.jsonl``, append-only, one JSON object per line.

Every record has ``ts``, ``item``, ``key`` and ``event``. Records are appended and fsynced
before the runner acts on what they say, so after any crash the ledger tells what was paid for.
The file is never rewritten. Reading tolerates a torn last line (power loss mid-write: ignored
with a warning) and reports any other undecodable line by number, never silently.

The codec and the replay (records → one ``KeyState`` per item key) are pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeGuard, cast

from runner.config import open_regular_file
from runner.errors import LedgerError
from runner.jobs import JobState, valid_id
from runner.money import json_number

LEDGER_NAME = "ledger.jsonl"

#: Events that are not job states: an upload remembered by the image's sha256.
EVENT_UPLOADED = "uploaded"
#: The server could not fetch an image we uploaded (it expired or vanished): upload it again.
EVENT_UPLOAD_GONE = "upload_gone"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(ts: str | None) -> datetime | None:
    """A time written as ``now_iso`` does (any ISO 8601 time with an offset); None when it is
    missing, unreadable or has no offset."""
    try:
        moment = datetime.fromisoformat((ts or "").replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def seconds_since(ts: str | None, now: datetime) -> float | None:
    """Seconds from ``ts`` (``parse_iso``) to ``now``, at least 0; None if ``ts`` is unknown."""
    then = parse_iso(ts)
    return None if then is None else max(0.0, (now - then).total_seconds())


def encode(record: Mapping[str, Any]) -> bytes:
    """One ledger line, newline included. Decimal amounts are written as JSON numbers."""
    plain = {name: json_number(value) for name, value in record.items()}
    return (json.dumps(plain, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def decode(line: str) -> dict[str, Any]:
    """Parse one line into a record; raise ValueError saying why it is not one.

    A record is a JSON object with string ``item``, ``key`` and ``event``, in which every
    field the replay and the run read has its type (``FIELD_CHECKS``), and a ``submitted``
    record names its prediction. JSON's NaN and Infinity are refused anywhere. The reason
    names the field, never its value.

    A line as ``encode`` writes it (an object, nothing after it but its newline) is parsed by
    the JSON scanner alone; any other, or one it cannot parse, by the whole decoder, which
    gives the reason. A string field is checked in line; the other checks are called.
    """
    record: Any = None
    if line[:1] == "{":
        try:
            record, end = _SCAN(line, 0)
        except (ValueError, StopIteration, RecursionError):
            record = None  # the decoder below says why
        else:
            if end != len(line) and line[end:] != "\n" and line[end:].strip(_JSON_SPACE):
                record = None  # "Extra data": the decoder says it
    if record is None:
        try:
            record = _DECODER.decode(line)
        except RecursionError:
            raise ValueError("nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "item" not in record or "key" not in record or "event" not in record:
        for name in ("item", "key", "event"):
            if name not in record:
                raise ValueError(f"no {name!r} field")
    checks = FIELD_CHECKS
    strings = _STRING_FIELDS
    for name, value in record.items():  # a record's few fields, not every check
        if name in strings and type(value) is str:
            continue
        check = checks.get(name)
        if check is not None and check(value) is not None:
            for name, check in checks.items():  # the first bad field in the checks' order
                if name in record and (problem := check(record[name])) is not None:
                    raise ValueError(f"field {name!r} {problem}")
    if record["event"] == JobState.SUBMITTED and "prediction_id" not in record:
        raise ValueError("a 'submitted' record without a 'prediction_id'")
    return record


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a record may hold")


#: One decoder for every line (``json.loads`` with an option builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
#: Its scanner: an object from a position, without the decoder's steps around it.
_SCAN: Callable[[str, int], tuple[Any, int]] = cast(Any, _DECODER).scan_once
#: What JSON counts as white space (``str.strip`` alone would take more).
_JSON_SPACE = " \t\n\r"


def _string(value: object) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _timestamp(value: object) -> str | None:
    """A time as ``now_iso`` writes it: ISO 8601 with a UTC offset, in a year any clock could
    show (the reconciliation window is computed around it, days either side)."""
    if not isinstance(value, str):
        return "must be a string"
    moment = parse_iso(value)
    if moment is None or not 1970 <= moment.year <= 9000:
        return "must be an ISO 8601 time with a UTC offset"
    return None


def _prediction_id(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    return None if valid_id(value) else "must be a plain prediction id"


def _file_name(value: object) -> str | None:
    """A video's file name, joined to the output directory: never a path out of it."""
    if not isinstance(value, str):
        return "must be a string"
    plain = value not in ("", ".", "..") and not any(c in value for c in "/\\\0")
    return None if plain else "must be the name of a file in the output directory"


def _count(value: object) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a whole number of at least 0"


def _finite(value: object) -> TypeGuard[int | float | Decimal]:
    """A finite number, not a boolean (a Decimal too, for a reader that parses money so)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    return math.isfinite(value)


def _number(value: object) -> str | None:
    return None if value is None or _finite(value) else "must be a finite number or null"


def _amount(value: object) -> str | None:
    """A cost: a negative one would hide spend from ``--budget``."""
    if value is None or (_finite(value) and value >= 0):
        return None
    return "must be a finite number of at least 0, or null"


def _flag(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


#: The check of each field the replay, the plan, the spend and the run read from a record:
#: one that fails it makes the record corrupt (reported and skipped), so nothing later meets
#: a value of the wrong type. ``cost`` stays as JSON gives it (an int or a float).
FIELD_CHECKS: dict[str, Callable[[object], str | None]] = {
    "ts": _timestamp,
    "item": _string,
    "key": _string,
    "event": _string,
    "prediction_id": _prediction_id,
    "output_url": _string,
    "public_url": _string,
    "path": _file_name,
    "sha256": _string,
    "error": _string,
    "error_code": _string,
    "reason": _string,
    "bytes": _count,
    "attempt": _count,
    "cost": _amount,
    "predict_time": _number,
    "reconciled": _flag,
    "retryable": _flag,
}
#: The fields whose check is ``_string``: a ``str`` passes it without a call.
_STRING_FIELDS = frozenset(name for name, check in FIELD_CHECKS.items() if check is _string)


def scan(lines: Iterable[str], warnings: list[str]) -> Iterator[dict[str, Any]]:
    """The records of a ledger's ``lines`` (each with its newline; only a torn last line
    lacks one), one at a time; a warning in ``warnings`` for every line skipped."""
    for number, line in enumerate(lines, start=1):
        if line[:1] != "{" and not line.strip():  # a record's line is not blank: no strip
            continue
        try:
            yield decode(line)
        except ValueError as exc:
            if not line.endswith("\n") and isinstance(exc, json.JSONDecodeError):
                warnings.append(
                    f"ledger line {number}: torn last line ignored (an interrupted write)"
                )
            else:
                warnings.append(f"ledger line {number}: corrupt record skipped ({exc})")


def _split(text: str) -> Iterator[str]:
    pieces = text.split("\n")
    for piece in pieces[:-1]:
        yield piece + "\n"
    yield pieces[-1]


def parse(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All records in a ledger's text, and a warning for every line that was skipped."""
    warnings: list[str] = []
    return list(scan(_split(text), warnings)), warnings


@contextmanager
def streamed(path: Path, warnings: list[str]) -> Iterator[Iterator[dict[str, Any]]]:
    """The records of the ledger at ``path`` (none if it does not exist), read line by line
    so that no more than one is held at a time; read warnings go to ``warnings``. Raises
    LedgerError if the file cannot be opened or read."""
    try:
        handle = open_regular_file(path)  # a FIFO or a device would hang or never end
    except FileNotFoundError:
        yield iter(())
        return
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from None
    lines = (raw.decode("utf-8", errors="replace") for raw in handle)
    try:
        with handle:
            yield scan(lines, warnings)
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from None


def read(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of the ledger at ``path`` (none if it does not exist) and read warnings."""
    warnings: list[str] = []
    with streamed(path, warnings) as records:
        return list(records), warnings


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
    #: The fingerprint (``runner.keys``) of the API key that made the last create: polls,
    #: cancels and lookups of its prediction use that key. None in ledgers from before keys.
    account: str | None = None


def _evolve(current: KeyState, /, **changes: Any) -> KeyState:
    """``dataclasses.replace`` without its checks: a copy of ``current`` with ``changes``, for
    the replay's million records (it costs a third of ``replace``'s time)."""
    fields = current.__dict__.copy()
    fields.update(changes)
    new = object.__new__(KeyState)
    object.__setattr__(new, "__dict__", fields)  # the frozen class refuses its own setattr
    return new


def apply(state: KeyState, record: Mapping[str, Any]) -> KeyState:
    """The state after one record. Unknown events leave the state as it was."""
    event = record["event"]
    if event == JobState.SUBMITTING:
        return _evolve(
            state,
            state=JobState.SUBMITTING,
            attempts=state.attempts + 1,
            submitting_ts=record.get("ts"),
            account=record.get("account"),
            prediction_id=None,
            error=None,
            error_code=None,
        )
    if event == JobState.SUBMITTED:
        return _evolve(
            state,
            state=JobState.SUBMITTED,
            prediction_id=record.get("prediction_id"),
            submitted_ts=record.get("ts"),
        )
    if event == JobState.SUCCEEDED:
        return _evolve(
            state,
            state=JobState.SUCCEEDED,
            prediction_id=record.get("prediction_id") or state.prediction_id,
            output_url=record.get("output_url"),
            predict_time=record.get("predict_time"),
            cost=record.get("cost"),
        )
    if event == JobState.FAILED:
        return _evolve(
            state,
            state=JobState.FAILED,
            error=record.get("error"),
            error_code=record.get("error_code"),
            cost=record.get("cost", state.cost),
        )
    if event == JobState.DOWNLOADED:
        return _evolve(
            state,
            state=JobState.DOWNLOADED,
            path=record.get("path"),
            bytes=record.get("bytes"),
            sha256=record.get("sha256"),
        )
    if event == JobState.PENDING:  # a reset: e.g. a prediction lost on the server
        return _evolve(state, state=JobState.PENDING, prediction_id=None)
    return state


def replay(records: Iterable[Mapping[str, Any]]) -> dict[str, KeyState]:
    """Fold records into one KeyState per item key (the key, not the id, is an item's identity)."""
    states: dict[str, KeyState] = {}
    for record in records:
        if record["event"] not in (EVENT_UPLOADED, EVENT_UPLOAD_GONE):
            fold(states, record)
    return states


def fold(states: dict[str, KeyState], record: Mapping[str, Any]) -> None:
    """One step of ``replay``: the state of ``record``'s key after it (not an upload's)."""
    key, item = record["key"], record["item"]
    current = states.get(key)
    if current is None:
        current = _evolve(_NEW, key=key, item=item)  # KeyState(key=key, item=item), faster
    elif current.item != item:  # the key's latest item id
        current = _evolve(current, item=item)
    states[key] = apply(current, record)


#: The state of a key no record has named yet: ``fold`` copies it for each new key.
_NEW = KeyState(key="", item="")


def uploads(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Image sha256 → public URL of every upload recorded, so a re-run does not upload again."""
    found: dict[str, str] = {}
    for record in records:
        fold_upload(found, record)
    return found


def fold_upload(found: dict[str, str], record: Mapping[str, Any]) -> None:
    """One step of ``uploads``: an upload recorded, or one the server could no longer fetch
    (the URL it recorded is forgotten); any other record changes nothing."""
    sha, url = record.get("sha256"), record.get("public_url")
    if not sha:
        return
    if record["event"] == EVENT_UPLOADED and url:
        found[str(sha)] = str(url)
    elif record["event"] == EVENT_UPLOAD_GONE and found.get(str(sha)) == url:
        del found[str(sha)]
