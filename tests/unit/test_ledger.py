"""The ledger codec, its tolerance of torn and corrupt lines, and the replay into states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import ledger
from runner.jobs import JobState


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
    async with ledger.LedgerWriter(path) as writer:
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
