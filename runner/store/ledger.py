"""The results ledger: ``OUTPUT/ledger.jsonl``, append-only, one JSON object per line.

Every record has ``ts``, ``item``, ``key`` and ``event``. Records are appended and fsynced
before the runner acts on what they say, so after any crash the ledger tells what was paid for.
The file is never rewritten. Reading tolerates a torn last line (power loss mid-write: ignored
with a warning) and reports any other undecodable line by number, never silently.

The codec and the replay (records → one ``KeyState`` per item key) are pure. Reading has a
quick path for lines as ``encode`` writes them (``plain_record``) and the whole one for any
other (``checked``), which gives every reason; a replay of its own states works on drafts in
place (``advance``, ``seal``). Both give what the plain way gives (tests/unit/test_fast_reading).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, make_dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeGuard, cast

import orjson

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

    A line as ``encode`` writes it is taken by ``plain_record``; any other goes through the
    whole decoder and every check (``checked``), which give the reason.
    """
    record = plain_record(line)
    return checked(line) if record is None else record


def plain_record(line: str | bytes) -> dict[str, Any] | None:
    """The record on ``line`` (text, or its UTF-8 bytes) if it is plainly one, else None.

    The quick way in for lines as ``encode`` writes them: orjson parses the line (twice as
    fast as ``json``) and each field has a quick check (``_QUICK``). It only ever says yes:
    whatever it is unsure of (a line orjson refuses, a field that fails its quick check, a
    container or a number orjson may read otherwise than ``json``) gives None, and then
    ``checked`` decides and says why. So it takes no line ``checked`` refuses and gives the
    very record ``checked`` gives.
    """
    try:
        record = _loads(line)
    except ValueError:  # orjson.JSONDecodeError, invalid UTF-8 included
        return None
    if type(record) is not dict or "item" not in record or "key" not in record:
        return None
    event = record.get("event")
    if type(event) is not str or (event == _SUBMITTED and "prediction_id" not in record):
        return None
    quick, looked_at = _QUICK, _LOOKED_AT
    for name, value in record.items():
        if type(value) is str and name not in looked_at:
            continue
        if not quick.get(name, _unread)(value):
            return None
    return record


def checked(line: str) -> dict[str, Any]:
    """``decode`` the whole way: the JSON decoder, then every check in ``FIELD_CHECKS``'s order;
    ValueError with the reason if the line is not a record."""
    try:
        record = _DECODER.decode(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for name in ("item", "key", "event"):
        if name not in record:
            raise ValueError(f"no {name!r} field")
    for name, check in FIELD_CHECKS.items():
        if name in record and (problem := check(record[name])) is not None:
            raise ValueError(f"field {name!r} {problem}")
    if record["event"] == JobState.SUBMITTED and "prediction_id" not in record:
        raise ValueError("a 'submitted' record without a 'prediction_id'")
    return record


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a record may hold")


#: One decoder for every line (``json.loads`` with an option builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
#: The quick parser of ``plain_record``: bytes or text in; a ValueError for what it refuses.
_loads: Callable[[str | bytes], Any] = orjson.loads


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
    plain = value not in ("", ".", "..") and not ("/" in value or "\\" in value or "\0" in value)
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

#: Below this size a float orjson gives is the float ``json`` gives: orjson reads an integer
#: beyond 64 bits as a float where ``json`` keeps the int (a 1 and 19 zeros is 1e19 to it).
_EXACT = 2.0**63


def _text(value: object) -> bool:
    return type(value) is str


def _time(value: object) -> bool:
    """``_timestamp`` in line (every record has a time)."""
    if type(value) is not str:
        return False
    try:
        moment = _fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.tzinfo is not None and 1970 <= moment.year <= 9000


def _name(value: object) -> bool:
    return _file_name(value) is None


def _whole(value: object) -> bool:
    return type(value) is int and value >= 0  # type() is int: a bool is not one


def _cost(value: object) -> bool:
    if type(value) is float:
        return 0 <= value < _EXACT  # no NaN, no infinity
    return value is None or (type(value) is int and value >= 0)


def _seconds(value: object) -> bool:
    if type(value) is float:
        return -_EXACT < value < _EXACT
    return value is None or type(value) is int


def _boolean(value: object) -> bool:
    return type(value) is bool


def _unread(value: object) -> bool:
    """A field no check reads: any value both parsers read alike (a container is not sure)."""
    if type(value) is float:
        return -_EXACT < value < _EXACT
    return type(value) in _SCALARS


_SCALARS = frozenset({str, int, bool, type(None)})

#: ``plain_record``'s quick check of each field in ``FIELD_CHECKS``: true only if the field
#: passes its check there and orjson read it as ``json`` does.
_QUICK: dict[str, Callable[[object], bool]] = {
    "ts": _time,
    "item": _text,
    "key": _text,
    "event": _text,
    "prediction_id": valid_id,
    "output_url": _text,
    "public_url": _text,
    "path": _name,
    "sha256": _text,
    "error": _text,
    "error_code": _text,
    "reason": _text,
    "bytes": _whole,
    "attempt": _whole,
    "cost": _cost,
    "predict_time": _seconds,
    "reconciled": _boolean,
    "retryable": _boolean,
}
#: The fields whose string values need a look (a time, an id, a name; or a number is due):
#: in any other, a string passes without a call.
_LOOKED_AT = frozenset(name for name, accept in _QUICK.items() if accept is not _text)
_fromisoformat = datetime.fromisoformat
_SUBMITTED = JobState.SUBMITTED.value  # a plain str compares in a fifth of the enum's time


def scan(lines: Iterable[str | bytes], warnings: list[str]) -> Iterator[dict[str, Any]]:
    """The records of a ledger's ``lines`` (text, or bytes read as UTF-8 with any bad byte
    replaced; each with its newline, only a torn last line lacks one), one at a time; a
    warning in ``warnings`` for every line skipped."""
    plain = plain_record
    for number, line in enumerate(lines, start=1):
        record = plain(line)
        if record is not None:
            yield record
            continue
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            yield checked(line)
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
    try:
        with handle:
            yield scan(handle, warnings)
    except OSError as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc.strerror}") from None


def read(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of the ledger at ``path`` (none if it does not exist) and read warnings."""
    warnings: list[str] = []
    with streamed(path, warnings) as records:
        return list(records), warnings


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the ledger knows of one item key. Slots: a fraction of the memory of a
    ``__dict__``, for the hundreds of thousands of keys a large ledger replays."""

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


#: A KeyState open to change: the same fields in the same slots, not frozen. The replay
#: changes drafts in place (``advance``: a frozen class's own setattr costs ten times a plain
#: one's, and a million records would each copy a state), then ``seal`` makes each the
#: KeyState it is by switching its class, without a copy. No one sees a draft.
_Draft: Any = make_dataclass(
    "_Draft",
    [(f.name, f.type, field(default=f.default)) for f in fields(KeyState)],
    slots=True,
    eq=False,
)


def _draft_of(state: KeyState) -> Any:
    return _Draft(*[getattr(state, name) for name in _Draft.__slots__])


def _sealed(draft: Any) -> KeyState:
    """``draft`` made the KeyState it is: its class changes, nothing is copied."""
    draft.__class__ = KeyState
    return cast(KeyState, draft)


def seal(drafts: dict[str, Any]) -> dict[str, KeyState]:
    """The drafts of ``advance`` made KeyStates, in place."""
    for draft in drafts.values():
        if type(draft) is _Draft:
            _sealed(draft)
    return drafts


def apply(state: KeyState, record: Mapping[str, Any]) -> KeyState:
    """The state after one record, a new KeyState (``state`` is left as it was). Unknown events
    leave the state as it was."""
    step = _STEPS.get(record["event"])
    if step is None:
        return state
    draft = _draft_of(state)
    step(draft, record)
    return _sealed(draft)


# The steps: what each event changes in a key's state, on a draft (``_Draft``).


def _submitting(draft: Any, record: Mapping[str, Any]) -> None:
    draft.state = JobState.SUBMITTING
    draft.attempts += 1
    draft.submitting_ts = record.get("ts")
    draft.account = record.get("account")
    draft.prediction_id = None
    draft.error = None
    draft.error_code = None


def _submitted(draft: Any, record: Mapping[str, Any]) -> None:
    draft.state = JobState.SUBMITTED
    draft.prediction_id = record.get("prediction_id")
    draft.submitted_ts = record.get("ts")


def _succeeded(draft: Any, record: Mapping[str, Any]) -> None:
    draft.state = JobState.SUCCEEDED
    draft.prediction_id = record.get("prediction_id") or draft.prediction_id
    draft.output_url = record.get("output_url")
    draft.predict_time = record.get("predict_time")
    draft.cost = record.get("cost")


def _failed(draft: Any, record: Mapping[str, Any]) -> None:
    draft.state = JobState.FAILED
    draft.error = record.get("error")
    draft.error_code = record.get("error_code")
    draft.cost = record.get("cost", draft.cost)


def _downloaded(draft: Any, record: Mapping[str, Any]) -> None:
    draft.state = JobState.DOWNLOADED
    draft.path = record.get("path")
    draft.bytes = record.get("bytes")
    draft.sha256 = record.get("sha256")


def _reset(draft: Any, record: Mapping[str, Any]) -> None:
    """Back to pending: e.g. a prediction lost on the server."""
    draft.state = JobState.PENDING
    draft.prediction_id = None


#: The step of each event; any other leaves the state as it was.
_STEPS: dict[str, Callable[[Any, Mapping[str, Any]], None]] = {
    JobState.SUBMITTING.value: _submitting,
    JobState.SUBMITTED.value: _submitted,
    JobState.SUCCEEDED.value: _succeeded,
    JobState.FAILED.value: _failed,
    JobState.DOWNLOADED.value: _downloaded,
    JobState.PENDING.value: _reset,
}


def replay(records: Iterable[Mapping[str, Any]]) -> dict[str, KeyState]:
    """Fold records into one KeyState per item key (the key, not the id, is an item's identity)."""
    states: dict[str, KeyState] = {}
    for record in records:
        if record["event"] not in (EVENT_UPLOADED, EVENT_UPLOAD_GONE):
            fold(states, record)
    return states


def fold(states: dict[str, KeyState], record: Mapping[str, Any]) -> None:
    """One step of ``replay``: the state of ``record``'s key after it (not an upload's), a new
    KeyState; the one it replaces is left as it was."""
    key = record["key"]
    current = states.get(key)
    one = {} if current is None else {key: _draft_of(current)}
    advance(one, record)
    states[key] = _sealed(one[key])


def advance(drafts: dict[str, Any], record: Mapping[str, Any]) -> None:
    """``fold`` on drafts, in place: the draft of ``record``'s key is changed, or made. A
    million records then make no copies; ``seal`` the drafts before anyone sees them."""
    key, item = record["key"], record["item"]
    draft = drafts.get(key)
    if draft is None:
        draft = drafts[key] = _Draft(key, item)
    elif draft.item != item:  # the key's latest item id
        draft.item = item
    step = _STEPS.get(record["event"])
    if step is not None:
        step(draft, record)


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
