"""The ledger codec, its tolerance of torn and corrupt lines, and the replay into states."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from runner.errors import LedgerError
from runner.jobs import JobState
from runner.store import ledger
from runner.store.budget import recorded_spend
from runner.store.writer import LedgerWriter


def rec(event: str, key: str = "k1", item: str = "deer", **fields: object) -> dict[str, object]:
    return {"ts": "2026-11-22T06:00:00.000Z", "item": item, "key": key, "event": event, **fields}


def test_encode_decode_round_trip() -> None:
    record = rec("submitted", prediction_id="p-1")
    line = ledger.encode(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert ledger.decode(line.decode()) == record


@pytest.mark.parametrize(
    "line",
    ["[1, 2]", '{"item": "a", "key": "k"}', '{"item": 1, "key": "k", "event": "x"}', "{oops"],
)
def test_decode_rejects_what_is_not_a_record(line: str) -> None:
    with pytest.raises(ValueError):
        ledger.decode(line)


def test_torn_last_line_is_ignored_with_a_warning() -> None:
    text = ledger.encode(rec("submitting")).decode() + '{"ts": "2026-11-22T06:00:01Z", "item": "de'
    records, warnings = ledger.parse(text)
    assert [r["event"] for r in records] == ["submitting"]
    assert warnings == ["ledger line 2: torn last line ignored (an interrupted write)"]


def test_corrupt_middle_line_is_reported_by_number_and_skipped() -> None:
    text = "".join(
        [
            ledger.encode(rec("submitting")).decode(),
            "garbage here\n",
            ledger.encode(rec("submitted", prediction_id="p")).decode(),
        ]
    )
    records, warnings = ledger.parse(text)
    assert [r["event"] for r in records] == ["submitting", "submitted"]
    assert len(warnings) == 1 and warnings[0].startswith("ledger line 2: corrupt record skipped")


def test_replay_follows_one_key_through_its_life() -> None:
    records = [
        rec("submitting", attempt=1),
        rec("submitted", prediction_id="p-1"),
        rec(
            "succeeded",
            prediction_id="p-1",
            output_url="https://cdn/x.mp4",
            predict_time=200.0,
            cost=0.43,
        ),
        rec("downloaded", path="deer.mp4", bytes=1234, sha256="ab" * 32),
    ]
    states = ledger.replay(records)
    state = states["k1"]
    assert state.state is JobState.DOWNLOADED
    assert (state.prediction_id, state.output_url, state.cost, state.path, state.bytes) == (
        "p-1",
        "https://cdn/x.mp4",
        0.43,
        "deer.mp4",
        1234,
    )
    assert state.attempts == 1


def test_replay_keeps_keys_apart_and_a_submitting_without_answer_is_ambiguous() -> None:
    records = [
        rec("submitting", key="k1"),
        rec("submitted", key="k1", prediction_id="p-1"),
        rec("submitting", key="k2", item="lake"),
    ]
    states = ledger.replay(records)
    assert states["k1"].state is JobState.SUBMITTED
    assert states["k2"].state is JobState.SUBMITTING and states["k2"].prediction_id is None


def test_a_refused_create_returns_the_key_to_pending() -> None:
    states = ledger.replay([rec("submitting"), rec("pending", reason="refused: HTTP 429")])
    assert states["k1"].state is JobState.PENDING


def test_uploads_are_remembered_by_image_hash() -> None:
    records = [rec("uploaded", sha256="aa", public_url="https://u/1.png"), rec("submitting")]
    assert ledger.uploads(records) == {"aa": "https://u/1.png"}
    assert "aa" not in ledger.replay(records)


async def test_writer_appends_fsynced_lines_and_repairs_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(ledger.encode(rec("submitting")) + b'{"torn')
    async with LedgerWriter(path) as writer:
        await writer.append("deer", "k1", "submitted", prediction_id="p-1", absent=None)
    lines = path.read_text().splitlines()
    assert lines[1] == '{"torn'
    last = json.loads(lines[2])
    assert last["event"] == "submitted" and last["prediction_id"] == "p-1" and "absent" not in last
    records, warnings = ledger.read(path)
    assert [r["event"] for r in records] == ["submitting", "submitted"]
    assert warnings and "line 2" in warnings[0]


def test_reading_a_missing_ledger_gives_nothing(tmp_path: Path) -> None:
    assert ledger.read(tmp_path / "none.jsonl") == ([], [])


# --- records of the wrong shape ------------------------------------------------------------------

NOT_A_NAME = "field 'path' must be the name of a file in the output directory"
WRONG_TYPES = [
    # (the record's odd field as JSON, the reason the warning gives)
    ('"path":123', "field 'path' must be a string"),
    ('"path":"../../etc/passwd"', NOT_A_NAME),
    ('"path":"/tmp/x.mp4"', NOT_A_NAME),
    ('"cost":{}', "field 'cost' must be a finite number of at least 0, or null"),
    ('"cost":"0.43"', "field 'cost' must be a finite number of at least 0, or null"),
    ('"cost":true', "field 'cost' must be a finite number of at least 0, or null"),
    ('"cost":-5', "field 'cost' must be a finite number of at least 0, or null"),
    ('"cost":1e999', "field 'cost' must be a finite number of at least 0, or null"),
    ('"cost":NaN', "NaN is not a number a record may hold"),
    ('"predict_time":Infinity', "Infinity is not a number a record may hold"),
    ('"predict_time":"200"', "field 'predict_time' must be a finite number or null"),
    ('"output_url":7', "field 'output_url' must be a string"),
    ('"public_url":["x"]', "field 'public_url' must be a string"),
    ('"prediction_id":"../x"', "field 'prediction_id' must be a plain prediction id"),
    ('"prediction_id":42', "field 'prediction_id' must be a string"),
    ('"bytes":"12"', "field 'bytes' must be a whole number of at least 0"),
    ('"bytes":12.0', "field 'bytes' must be a whole number of at least 0"),
    ('"bytes":-1', "field 'bytes' must be a whole number of at least 0"),
    ('"attempt":true', "field 'attempt' must be a whole number of at least 0"),
    ('"sha256":null', "field 'sha256' must be a string"),
    ('"error":{"message":"x"}', "field 'error' must be a string"),
    ('"error_code":500', "field 'error_code' must be a string"),
    ('"reason":false', "field 'reason' must be a string"),
    ('"reconciled":"yes"', "field 'reconciled' must be true or false"),
    ('"retryable":1', "field 'retryable' must be true or false"),
    ('"ts":1700000000', "field 'ts' must be a string"),
    ('"ts":"yesterday"', "field 'ts' must be an ISO 8601 time with a UTC offset"),
    ('"ts":"2026-11-22T06:00:00"', "field 'ts' must be an ISO 8601 time with a UTC offset"),
    ('"ts":"0001-01-01T00:00:00Z"', "field 'ts' must be an ISO 8601 time with a UTC offset"),
    ('"ts":"9999-12-31T23:59:59Z"', "field 'ts' must be an ISO 8601 time with a UTC offset"),
]


@pytest.mark.parametrize(("field", "reason"), WRONG_TYPES, ids=[f for f, _ in WRONG_TYPES])
def test_a_field_of_the_wrong_type_makes_the_line_corrupt_naming_the_field(
    field: str, reason: str
) -> None:
    line = '{"ts":"2026-11-22T06:00:00.000Z","item":"deer","key":"k1","event":"downloaded",'
    line += field + "}"
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(") + "$"):
        ledger.decode(line)
    good = ledger.encode(rec("submitting")).decode()
    records, warnings = ledger.parse(good * 6 + line + "\n" + good)
    assert len(records) == 7
    assert warnings == [f"ledger line 7: corrupt record skipped ({reason})"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"item":"a","key":"k","event":"submitted"}', "a 'submitted' record without"),
        ('{"item":"a","key":"k","event":"submitted","prediction_id":null}', "'prediction_id'"),
        ('{"item":"a","key":7,"event":"x"}', "field 'key' must be a string"),
        ('{"item":"a","key":"k","event":["submitted"]}', "field 'event' must be a string"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_decode_refuses_records_the_replay_could_not_use(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        ledger.decode(line)


def test_well_typed_records_of_every_event_still_decode() -> None:
    records = [
        rec("uploaded", sha256="ab" * 32, public_url="https://u/1.png"),
        rec("submitting", attempt=1),
        rec("submitted", prediction_id="p-1", reconciled=True),
        rec("failed", prediction_id="p-1", error="boom", error_code="X", retryable=True, cost=0),
        rec("pending", reason="refused: HTTP 429"),
        rec("succeeded", prediction_id="p-1", output_url="https://c/x.mp4", predict_time=1.5),
        rec("succeeded", prediction_id="p-1", output_url="https://c/x.mp4", cost=None),
        rec("succeeded", prediction_id="p-1", output_url="https://c/x.mp4", cost=0.43),
        rec("downloaded", path="deer.mp4", bytes=0, sha256="cd" * 32),
        rec("some-future-event", extra={"anything": [1, 2]}),
        {**rec("submitting", attempt=2), "ts": "1970-01-01T00:00:00+00:00"},  # a clock unset
        {**rec("submitting", attempt=3), "ts": "2026-11-22T07:00:00.123+01:00"},
        {"item": "deer", "key": "k1", "event": "pending"},  # no ts at all
    ]
    for record in records:
        assert ledger.decode(ledger.encode(record).decode()) == record


def test_a_wrongly_typed_line_leaves_the_replay_plan_and_spend_whole() -> None:
    """Each bad line is skipped, so nothing downstream ever meets its value."""
    bad = [
        rec("downloaded", path=123, bytes=5, sha256="x"),
        rec("succeeded", prediction_id="p-1", output_url=7, cost={}),
        rec("submitted", prediction_id="../x"),
        rec("downloaded", path="deer.mp4", bytes="12", sha256="x"),
        rec("submitting", attempt=True),
        rec("uploaded", sha256=5, public_url="https://u/1.png"),
    ]
    good = [rec("submitting", attempt=1), rec("submitted", prediction_id="p-1")]
    text = "".join(json.dumps(r) + "\n" for r in [*good, *bad])
    records, warnings = ledger.parse(text)
    assert records == good
    assert [w.split(":")[0] for w in warnings] == [f"ledger line {n}" for n in range(3, 9)]
    state = ledger.replay(records)["k1"]
    assert (state.state, state.prediction_id, state.path, state.cost) == (
        JobState.SUBMITTED,
        "p-1",
        None,
        None,
    )
    assert ledger.uploads(records) == {}
    assert recorded_spend(records) == 0.0


def test_a_torn_last_line_is_torn_but_a_whole_last_line_of_wrong_types_is_corrupt() -> None:
    good = ledger.encode(rec("submitting")).decode()
    _, torn = ledger.parse(good + '{"item": "deer", "key"')
    assert torn == ["ledger line 2: torn last line ignored (an interrupted write)"]
    _, corrupt = ledger.parse(good + '{"item": "deer", "key": "k1", "event": "x", "bytes": "1"}')
    assert corrupt == [
        "ledger line 2: corrupt record skipped (field 'bytes' must be a whole number of at least 0)"
    ]


@pytest.mark.timeout(10)
def test_a_ledger_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "ledger.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(LedgerError, match=r"it is a FIFO \(named pipe\), not a regular file"):
        ledger.read(fifo)
