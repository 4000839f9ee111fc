"""The fast paths of reading stay exact: the ledger's quick line path (orjson) and its streamed
replay on drafts give what the whole decoder and ``ledger.replay`` give, torn and bad lines
included, and never change a state once handed out; the manifest's nodes keep PyYAML's marks;
an item's nodes are let go once it is read; the collector's pause restores it."""

from __future__ import annotations

import gc
import json
import random
import weakref
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from runner import gcpause
from runner.jobs import JobState
from runner.manifest import document, nodes, read_manifest
from runner.manifest import reader as manifest_reader
from runner.store import ledger
from runner.store.budget import recorded_spend
from runner.store.resume import Replay

TS = "2026-11-22T06:00:00.000Z"


def line(**fields: Any) -> str:
    return json.dumps({"ts": TS, "item": "deer", "key": "k1", **fields}) + "\n"


#: Lines of every kind: records as the writer makes them, and what only the full decoder
#: reads or refuses (spaces around, extra data, constants, deep nesting, big numbers, torn).
LINES = [
    ledger.encode({"ts": TS, "item": "deer", "key": "k1", "event": "submitting"}).decode(),
    line(event="submitted", prediction_id="p-1"),
    line(event="succeeded", prediction_id="p-1", output_url="https://c/x.mp4", cost=0.43),
    line(event="downloaded", path="deer.mp4", bytes=12, sha256="ab" * 32),
    '  {"item": "a", "key": "k2", "event": "submitting"}  \n',
    '{"item": "a", "key": "k2", "event": "submitting"} \t\r\n',
    '{"item": "a", "key": "k2", "event": "submitting"}{"x": 1}\n',
    '{"item": "a", "key": "k2", "event": "submitting"} x\n',
    '{"item": "a", "key": "k2", "event": "failed", "cost": NaN}\n',
    '{"item": "a", "key": "k2", "event": "failed", "cost": Infinity}\n',
    '{"item": "a", "key": "k2", "event": "x", "n": ' + "[" * 5000 + "]" * 5000 + "}\n",
    '{"item": "a", "key": "k2", "event": "x", "n": ' + "[" * 600 + "]" * 600 + "}\n",
    '{"item": "a", "key": "k2", "event": "x", "n": 123456789012345678901234567890}\n',
    '{"item": "a", "key": "k2", "event": "x", "item": "b"}\n',
    '{"item": "a", "key": "k2", "event": "x", "cost": 1, "cost": -1}\n',
    '{"item": "\\u00e9\\ud800", "key": "k2", "event": "submitting"}\n',
    '{"item": "\\ud83d\\ude00", "key": "k2", "event": "submitting"}\n',
    '{"item": "\ud800\ufffe\U0010ffff", "key": "k2", "event": "submitting"}\n',
    '{"item": "a\\u0000\\"\\/", "key": "k2", "event": "submitting"}\n',
    '{"item": "a\x01", "key": "k2", "event": "submitting"}\n',
    '\ufeff{"item": "a", "key": "k2", "event": "submitting"}\n',
    '{"item": "a", "key": "k2", "event": "submitted"}\n',
    '{"item": "a", "key": "k2", "event": "submitted", "prediction_id": null}\n',
    '{"item": "a", "key": 7, "event": "submitting"}\n',
    '{"item": "a", "event": "submitting"}\n',
    '{"item": "a", "key": "k2"}\n',
    '["item", "key", "event"]\n',
    '"item"\n',
    '{"item": "a", "key": "k2", "event": "submitting", "attempt": -1}\n',
    '{"item": "a", "key": "k2", "event": "downloaded", "path": "../x"}\n',
    '{"item": "a", "key": "k2", "event": "sub',
    '{"item": "a", "key": "k2", "event": "submitting"}',
    "\u2028\n",
    " \t\n",
]


#: JSON values to put in each checked field (and in a field no check reads): the quick path
#: must take exactly the lines the whole path takes, and give the same record, types and
#: signs of zero included. orjson reads an integer beyond 64 bits as a float, refuses what is
#: out of a float's range, lone surrogates and deep nesting; json does not.
VALUES = [
    '"x"', '""', '"."', '"a/b"', '"a\\\\b"', '"a\\u0000"', '"p-1"', '"../x"', '"deer.mp4"',
    '"2026-11-22T06:00:00.000Z"', '"2026-11-22T06:00:00Z"', '"2026-11-22T06:00:00+02:00"',
    '"2026-11-22T06:00:00"', '"2026-11-22"', '"2026-11-22Z"', '"2026-02-30T06:00:00Z"',
    '"1969-12-31T23:59:59Z"', '"9000-12-31T23:59:59.999Z"', '"9001-01-01T00:00:00Z"',
    '"2026-11-22T06:00:00.000ZZ"', '"2026-11-22T06:00:00.000z"', '"yesterday"', '"\\ud800"',
    "0", "-0", "1", "-1", "12", "0.0", "-0.0", "0.43", "1.5e3", "1E-7", "1e400", "-1e400",
    "9223372036854775807", "9223372036854775808", "18446744073709551615",
    "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
    "123456789012345678901234567890", "9.3e18", "1.9e19", "-9.3e18",
    "0.1000000000000000055511151231257827021181583404541015625", "5e-324", "1.7976931348623157e308",
    "true", "false", "null", "[]", "{}", '["x"]', '{"a": 1}', "[18446744073709551616]",
]  # fmt: skip
FIELDS = [*ledger.FIELD_CHECKS, "account", "other"]


def reference(monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]) -> Any:
    """What ``run`` gives with the quick path switched off: every line through the whole
    decoder and every check, as before there was one."""
    with monkeypatch.context() as patch:
        patch.setattr(ledger, "plain_record", lambda _line: None)
        return run()


def outcome(text: str | bytes) -> tuple[str, Any]:
    """``decode``'s answer: the record (its repr too, so ``0 == 0.0`` and ``0.0 == -0.0`` tell
    apart), or the error and its message; and what ``scan`` makes of the line."""
    warnings: list[str] = []
    records = list(ledger.scan([text], warnings))
    read = (repr(records), warnings)
    if isinstance(text, bytes):
        return "scanned", read
    try:
        record = ledger.decode(text)
    except ValueError as exc:
        return type(exc).__name__, (str(exc), read)
    return "record", (record, repr(record), read)


@pytest.mark.parametrize("text", LINES)
def test_the_quick_path_gives_what_the_whole_decoder_gives(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same record, or the same error with the same message and the same warning for the
    line, from text and from its bytes."""
    assert outcome(text) == reference(monkeypatch, lambda: outcome(text))
    raw = text.encode("utf-8", errors="surrogatepass")
    assert outcome(raw) == reference(monkeypatch, lambda: outcome(raw))


@pytest.mark.parametrize("field", FIELDS)
def test_the_quick_path_takes_what_the_checks_take_in_every_field(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each checked field (and one no check reads) with values of every kind: the quick path
    and the whole one agree on every line, and the quick path does take the plain ones."""
    taken = 0
    for value in VALUES:
        fields = f'"item":"a","key":"k","event":"x","{field}":{value}'
        text = "{" + (fields if field == "ts" else f'"ts":"{TS}",' + fields) + "}\n"
        assert outcome(text) == reference(monkeypatch, lambda text=text: outcome(text)), text
        taken += ledger.plain_record(text) is not None
    assert taken >= 2  # true and false, at least


def test_the_quick_path_reads_numbers_of_every_size_as_json_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seeded random number literals, from tiny to beyond a float's range and 64 bits, in a
    checked number field and in one no check reads: same records, same reasons."""
    rng = random.Random(12)
    digits = "0123456789"
    for _ in range(1500):
        whole = "".join(rng.choice(digits) for _ in range(rng.randint(1, 25))).lstrip("0") or "0"
        literal = rng.choice(["", "-"]) + whole
        if rng.random() < 0.6:
            literal += "." + "".join(rng.choice(digits) for _ in range(rng.randint(1, 20)))
        if rng.random() < 0.4:
            literal += f"e{rng.randint(-340, 320)}"
        for name in ("cost", "predict_time", "other"):
            text = f'{{"ts":"{TS}","item":"a","key":"k","event":"x","{name}":{literal}}}\n'
            assert outcome(text) == reference(monkeypatch, lambda text=text: outcome(text)), text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"item": "\xff", "key": "k2", "event": "submitting"}\n',
        b'{"item": "\xed\xa0\x80", "key": "k2", "event": "submitting"}\n',
        b'{"item": "\xc3", "key": "k2", "event": "submitting"}\n',
        b'{"item": "a", "key": "k2", "event": "submitting"}\xc3\n',
        b'{"item": "a", "key": "k2", "event": "sub\xc3',
        b"\xc2\xa0\n",
    ],
)
def test_bytes_that_are_not_utf8_are_read_with_replacement_as_before(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line with a bad byte: orjson refuses it, the whole path reads it with U+FFFD."""
    assert ledger.plain_record(raw) is None
    assert outcome(raw) == reference(monkeypatch, lambda: outcome(raw))
    text = raw.decode("utf-8", errors="replace")
    assert outcome(raw)[1] == outcome(text)[1][-1]


def test_every_checked_field_has_a_quick_check() -> None:
    assert list(ledger._QUICK) == list(ledger.FIELD_CHECKS)


def test_records_as_the_writer_makes_them_never_take_the_whole_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lines ``encode`` writes, of every event and field, all go the quick way (counted: the
    whole decoder is not called once), and read back as written."""
    calls: list[str] = []
    whole = ledger.checked

    def counted(text: str) -> dict[str, Any]:
        calls.append(text)
        return whole(text)

    monkeypatch.setattr(ledger, "checked", counted)
    now = ledger.now_iso()
    written = [
        {"event": "uploaded", "sha256": "ab" * 32, "public_url": "https://u/é.png"},
        {"event": "submitting", "attempt": 3, "account": "key-1a2b"},
        {"event": "submitted", "prediction_id": "2f1c-9a", "reconciled": True},
        {"event": "failed", "prediction_id": "p", "error": "boom «x»", "error_code": "HTTP_422",
         "retryable": False, "cost": Decimal("0.43")},
        {"event": "pending", "reason": "refused: HTTP 429"},
        {"event": "succeeded", "prediction_id": "p", "output_url": "https://c/x.mp4",
         "predict_time": 41.5, "cost": Decimal("0")},
        {"event": "succeeded", "prediction_id": "p", "predict_time": 12, "cost": 1},
        {"event": "downloaded", "path": "deer.mp4", "bytes": 123456, "sha256": "cd" * 32},
        {"event": "upload_gone", "sha256": "ab" * 32, "public_url": "https://u/é.png"},
    ]  # fmt: skip
    lines = [ledger.encode({"ts": now, "item": "deer", "key": "k1"} | r) for r in written]
    warnings: list[str] = []
    records = list(ledger.scan(lines, warnings))
    assert calls == [] and warnings == []
    assert records == [json.loads(raw) for raw in lines]


def test_the_streamed_replay_gives_the_reference_states_uploads_and_spend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Replay`` over a ledger with bad and torn lines: the states of ``ledger.replay``, the
    uploads of ``ledger.uploads``, the spend of ``recorded_spend``, the same warnings."""
    text = "".join(
        [
            line(event="uploaded", sha256="ab" * 32, public_url="https://u/1.png"),
            line(event="submitting", attempt=1, account="key-a"),
            line(event="submitted", prediction_id="p-1"),
            "\n",
            line(event="failed", prediction_id="p-1", error="boom", error_code="X", cost=0),
            '{"item": "deer", "key": "k1", "event": "submitting", "attempt": "2"}\n',
            json.dumps({"ts": TS, "item": "elk", "key": "k1", "event": "submitting"}) + "\n",
            line(event="submitted", prediction_id="p-2"),
            line(event="succeeded", prediction_id="p-2", output_url="https://c/x.mp4", cost=0.43),
            line(event="succeeded", prediction_id="p-2", output_url="https://c/y.mp4", cost=0.5),
            json.dumps({"ts": TS, "item": "owl", "key": "k3", "event": "submitting"}) + "\n",
            json.dumps({"ts": TS, "item": "owl", "key": "k3", "event": "pending"}) + "\n",
            line(event="upload_gone", sha256="ab" * 32, public_url="https://u/1.png"),
            line(event="downloaded", key="k3", path="owl.mp4", bytes=1, sha256="cd" * 32),
            line(event="some-future-event", key="k4", item="fox"),
            '{"item": "deer", "key": "k1", "event": "downloa',
        ]
    )
    warnings: list[str] = []
    replay = Replay().fold(ledger.scan(ledger._split(text), warnings))
    records, expected_warnings = reference(monkeypatch, lambda: ledger.parse(text))
    assert replay.states == ledger.replay(records)
    first = replay.states["k1"]
    assert (first.item, first.attempts, first.account, first.cost) == ("deer", 2, None, 0.5)
    assert replay.states["k3"].state == "downloaded"
    assert replay.states["k4"] == ledger.KeyState(key="k4", item="fox")
    assert replay.uploads == ledger.uploads(records) == {}
    assert replay.spent == recorded_spend(records) == Decimal("0.5")
    assert replay.known_ids == {"p-1", "p-2"}
    assert replay.records == len(records) == 13
    assert warnings == expected_warnings
    assert [w.split(":")[0] for w in warnings] == ["ledger line 6", "ledger line 16"]


def test_a_new_key_starts_from_the_state_a_keystate_starts_from() -> None:
    record = {"item": "deer", "key": "k9", "event": "some-future-event"}
    states: dict[str, ledger.KeyState] = {}
    ledger.fold(states, record)
    drafts: dict[str, Any] = {}
    ledger.advance(drafts, record)
    assert states == ledger.seal(drafts) == {"k9": ledger.KeyState(key="k9", item="deer")}


STEPS = [
    {"event": "submitting", "ts": "t1", "account": "key-a"},
    {"event": "submitted", "prediction_id": "p-1", "ts": "t2"},
    {"event": "failed", "error": "boom", "error_code": "X", "cost": 0},
    {"event": "submitting", "ts": "t3"},
    {"event": "pending"},
    {"event": "submitting", "ts": "t4"},
    {"event": "submitted", "prediction_id": "p-2", "ts": "t5"},
    {"event": "succeeded", "output_url": "https://c/x.mp4", "predict_time": 2.5, "cost": 0.43},
    {"event": "downloaded", "path": "elk.mp4", "bytes": 9, "sha256": "ab"},
    {"event": "some-future-event"},
]


def test_a_state_once_handed_out_is_never_changed() -> None:
    """``apply`` and ``fold`` leave the state they start from as it was (the plan and the run
    hold them); a replay that goes on from states it gave out replaces them, never changes
    them; only ``advance``, on states no one else holds, changes them in place, to the same
    end."""
    records = [{"item": "deer" if n < 5 else "elk", "key": "k1"} | s for n, s in enumerate(STEPS)]
    kept: list[tuple[ledger.KeyState, str]] = []
    state = ledger.KeyState(key="k1", item="deer")
    states: dict[str, ledger.KeyState] = {}
    replay = Replay()
    for record in records:
        kept.append((state, repr(state)))
        state = ledger.apply(state, record)
        ledger.fold(states, record)
        if replay.states:
            kept.append((replay.states["k1"], repr(replay.states["k1"])))
        replay.add(record)
    assert all(repr(held) == then for held, then in kept)
    owned: dict[str, Any] = {}
    for record in records:
        ledger.advance(owned, record)
    ledger.seal(owned)
    assert owned == states == replay.states == Replay().fold(records).states
    assert owned["k1"].item == "elk" and owned["k1"].attempts == 3
    assert replace(state, item="elk") == owned["k1"]


def reference_apply(state: ledger.KeyState, record: dict[str, Any]) -> ledger.KeyState:
    """``apply`` as it was written before the replay worked on drafts, by ``replace``."""
    event, get = record["event"], record.get
    if event == JobState.SUBMITTING:
        return replace(state, state=JobState.SUBMITTING, attempts=state.attempts + 1,
                       submitting_ts=get("ts"), account=get("account"), prediction_id=None,
                       error=None, error_code=None)  # fmt: skip
    if event == JobState.SUBMITTED:
        return replace(state, state=JobState.SUBMITTED, prediction_id=get("prediction_id"),
                       submitted_ts=get("ts"))  # fmt: skip
    if event == JobState.SUCCEEDED:
        return replace(state, state=JobState.SUCCEEDED,
                       prediction_id=get("prediction_id") or state.prediction_id,
                       output_url=get("output_url"), predict_time=get("predict_time"),
                       cost=get("cost"))  # fmt: skip
    if event == JobState.FAILED:
        return replace(state, state=JobState.FAILED, error=get("error"),
                       error_code=get("error_code"), cost=get("cost", state.cost))  # fmt: skip
    if event == JobState.DOWNLOADED:
        return replace(state, state=JobState.DOWNLOADED, path=get("path"), bytes=get("bytes"),
                       sha256=get("sha256"))  # fmt: skip
    if event == JobState.PENDING:
        return replace(state, state=JobState.PENDING, prediction_id=None)
    return state


def test_every_step_changes_what_it_changed_before() -> None:
    """Each event from states of every kind, with and without its optional fields: the
    draft steps give what ``replace`` gave."""
    full = {"ts": "t9", "account": "key-b", "prediction_id": "p-9", "output_url": "u",
            "predict_time": 3, "cost": 0.5, "error": "e", "error_code": "E", "path": "x.mp4",
            "bytes": 5, "sha256": "cd"}  # fmt: skip
    starts = [ledger.KeyState(key="k", item="a")]
    for step in STEPS:
        starts.append(ledger.apply(starts[-1], {"item": "a", "key": "k"} | step))
    events = [*(state.value for state in JobState), "uploaded", "some-future-event"]
    for start in starts:
        for event in events:
            for extra in ({}, full):
                record = {"item": "a", "key": "k", "event": event} | extra
                assert ledger.apply(start, record) == reference_apply(start, record), record


def test_the_states_a_replay_hands_out_are_frozen_keystates() -> None:
    """The replay's drafts are sealed into plain KeyStates: frozen, hashable, in slots; even
    when the records end in an error halfway."""
    records = [{"item": "deer", "key": f"k{n % 3}"} | step for n, step in enumerate(STEPS)]
    made = Replay().fold(records).states
    assert ledger._Draft.__slots__ == ledger.KeyState.__slots__
    assert [f.default for f in fields(ledger._Draft)] == [
        f.default for f in fields(ledger.KeyState)
    ]

    def broken() -> Iterator[dict[str, Any]]:
        yield from records
        raise OSError("the disk went away")

    halfway = Replay()
    with pytest.raises(OSError):
        halfway.fold(broken())
    for states in (made, halfway.states, ledger.replay(records)):
        assert {type(state) for state in states.values()} == {ledger.KeyState}
        state = states["k0"]
        with pytest.raises(FrozenInstanceError):
            state.attempts = 9  # type: ignore[misc]
        assert hash(state) == hash(replace(state))
        assert not hasattr(state, "__dict__")  # slots: a large replay's keys stay small
    assert made == halfway.states


# --- the manifest's nodes ---------------------------------------------------------------------

SAMPLE = """\
batch: b
defaults: &d {prompt_optimizer: true, input: {a: [1, 2, {b: c}]}}
items:
  - id: one
    image: "images/x.png"
    prompt: >
      a deer walks
      through the fog
    <<: *d
  - {id: two, image: 'x.png', prompt: "é é", meta: {k: [é, "ü"]}}
"""


def marks(node: Node) -> list[tuple[str, Any, int, int, int, int]]:
    found = []
    for current in walk(node):
        start, end = current.start_mark, current.end_mark
        found.append((current.tag, current.value if isinstance(current.value, str) else None,
                      start.line, start.column, end.line, end.column))  # fmt: skip
    return found


def walk(node: Node) -> list[Node]:
    out = [node]
    if isinstance(node, MappingNode):
        for key, value in node.value:
            out += walk(key) + walk(value)
    elif isinstance(node, SequenceNode):
        for value in node.value:
            out += walk(value)
    return out


@pytest.mark.parametrize("loader", ["fast", "slow"])
def test_the_manifest_nodes_keep_the_marks_pyyaml_gives(loader: str) -> None:
    """Both composers make nodes whose marks are PyYAML's own (its stock composer's)."""
    make = document._FastLoader if loader == "fast" else document._BoundedLoader
    if make is None:
        pytest.skip("libyaml is not installed")
    ours = make(SAMPLE).get_single_node()
    theirs = yaml.compose(SAMPLE, Loader=yaml.SafeLoader)
    assert ours is not None and isinstance(ours, nodes.Mapping)
    assert marks(ours) == marks(theirs)


def test_a_spot_keeps_a_nodes_place_and_catalog() -> None:
    mark = nodes.FileMark("c.csv", 0, 4, 2, None, None)
    stock = yaml.ScalarNode("tag:yaml.org,2002:str", "x", mark, mark)
    spot = nodes.spot(stock)
    assert nodes.position(spot) == ("c.csv", 4, 2)
    assert isinstance(spot.start_mark, nodes.FileMark) and spot.start_mark.name == "c.csv"
    assert nodes.position(nodes.spot(spot)) == ("c.csv", 4, 2)


def test_each_items_nodes_are_let_go_once_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While item k is read, the nodes of the items before it are gone: the document and the
    items it makes are never both held whole (it would keep 200 item nodes alive here)."""
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    lines = ["items:"]
    for index in range(200):
        lines += [f"  - id: i{index}", "    image: x.png", f"    prompt: shot {index} walks"]
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen: list[weakref.ref[Node]] = []
    alive: list[int] = []
    read_item = manifest_reader.read_item

    def watched(reader: Any, node: MappingNode, index: int, top: Any) -> Any:
        seen.append(weakref.ref(node))
        alive.append(sum(1 for ref in seen[:-1] if ref() is not None))
        return read_item(reader, node, index, top)

    monkeypatch.setattr(manifest_reader, "read_item", watched)
    reading = read_manifest(path)
    assert len(reading.items) == 200 and not reading.errors
    assert max(alive) <= 1
    assert reading.items[7].place("prompt").line == 1 + 3 * 7 + 3


# --- the collector's pause ---------------------------------------------------------------------


def test_the_collector_pause_nests_and_restores_what_it_found() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with gcpause.paused():
            assert not gc.isenabled()
            with gcpause.paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the outer reading still runs
        assert gc.isenabled()
        gc.disable()
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        (gc.enable if was else gc.disable)()
