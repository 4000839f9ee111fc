"""The fast paths of reading stay exact: the ledger's line decoder and streamed replay give what
the reference decoder and ``ledger.replay`` give, torn and bad lines included; the manifest's
nodes keep PyYAML's marks; an item's nodes are let go once it is read; the collector's pause
restores it."""

from __future__ import annotations

import gc
import json
import weakref
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from runner import gcpause
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
    '{"item": "a", "key": "k2", "event": "x", "n": 123456789012345678901234567890}\n',
    '{"item": "a", "key": "k2", "event": "x", "item": "b"}\n',
    '{"item": "\\u00e9\\ud800", "key": "k2", "event": "submitting"}\n',
    '{"item": "a", "key": "k2", "event": "submitted"}\n',
    '{"item": "a", "key": 7, "event": "submitting"}\n',
    '{"item": "a", "event": "submitting"}\n',
    '["item", "key", "event"]\n',
    '{"item": "a", "key": "k2", "event": "submitting", "attempt": -1}\n',
    '{"item": "a", "key": "k2", "event": "downloaded", "path": "../x"}\n',
    '{"item": "a", "key": "k2", "event": "sub',
    '{"item": "a", "key": "k2", "event": "submitting"}',
]


def reference_decode(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """What ``decode`` gives with its scanner path switched off: every line through the whole
    decoder, as before the fast path."""

    def no_scan(_text: str, _index: int) -> Any:
        raise StopIteration(0)

    with monkeypatch.context() as patch:
        patch.setattr(ledger, "_SCAN", no_scan)
        return outcome(text)


def outcome(text: str) -> tuple[str, Any]:
    try:
        return "record", ledger.decode(text)
    except ValueError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("text", LINES)
def test_the_fast_decode_gives_what_the_whole_decoder_gives(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same record, or the same error with the same message, for every kind of line."""
    assert outcome(text) == reference_decode(text, monkeypatch)


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
            '{"item": "deer", "key": "k1", "event": "downloa',
        ]
    )
    warnings: list[str] = []
    replay = Replay().fold(ledger.scan(ledger._split(text), warnings))

    def no_scan(_text: str, _index: int) -> Any:
        raise StopIteration(0)

    with monkeypatch.context() as patch:
        patch.setattr(ledger, "_SCAN", no_scan)
        records, expected_warnings = ledger.parse(text)
    assert replay.states == ledger.replay(records)
    first = replay.states["k1"]
    assert (first.item, first.attempts, first.account, first.cost) == ("deer", 2, None, 0.5)
    assert replay.states["k3"].state == "pending"
    assert replay.uploads == ledger.uploads(records) == {}
    assert replay.spent == recorded_spend(records) == Decimal("0.5")
    assert replay.known_ids == {"p-1", "p-2"}
    assert replay.records == len(records) == 11
    assert warnings == expected_warnings
    assert [w.split(":")[0] for w in warnings] == ["ledger line 6", "ledger line 14"]


def test_a_new_key_starts_from_the_state_a_keystate_starts_from() -> None:
    states: dict[str, ledger.KeyState] = {}
    ledger.fold(states, {"item": "deer", "key": "k9", "event": "some-future-event"})
    assert states == {"k9": ledger.KeyState(key="k9", item="deer")}


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
