"""What reading and checking a large catalog keeps per item stays small, and its shortcuts give
what the long way gives: counted objects and calls, not seconds.

An item keeps its places as numbers (``manifest.places``), a catalog's rows are the light nodes
a YAML manifest composes into (``manifest.nodes``), a schema of the usual shape is checked one
property at a time (``schema._Split``), the plan counts its steps once, and the prompt lint's
repeat finder gives what a word-by-word scan gives."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner import diagnostics, models
from runner.bench import scale
from runner.checks import prompts, schema
from runner.diagnostics import Place
from runner.jobs import JobState
from runner.manifest import nodes, read_manifest
from runner.manifest import reader as manifest_reader
from runner.manifest.places import Places, PlacesMaker
from runner.store.ledger import KeyState
from runner.store.plan import Action, Plan, Step, make_plan, select

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # the manifest reads names and bytes, not pixels
ITEMS = 300


def yaml_manifest(folder: Path, count: int = ITEMS) -> Path:
    (folder / "x.png").write_bytes(PNG)
    lines = ["model: minimax-i2v-01", "defaults: {input: {seed: 3}}", "items:"]
    for n in range(count):
        lines += [f"  - id: i{n}", "    image: x.png", f"    prompt: shot {n} of a deer walking"]
        if n % 3 == 0:
            lines.append("    input: {duration: 6}")
    path = folder / "m.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def csv_catalog(folder: Path, count: int = ITEMS) -> Path:
    (folder / "x.png").write_bytes(PNG)
    path = folder / "c.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        table = csv.writer(out, lineterminator="\n")
        table.writerow(["id", "image", "prompt", "input.duration", "meta.client"])
        for n in range(count):
            table.writerow([f"i{n}", "x.png", f"shot {n}, a deer walking", "6", "acme"])
    return path


class Counting:
    """Counts the instances of ``cls`` made while it is patched in (``__init__`` calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
        self.made = 0
        real = cls.__init__

        def counted(instance: Any, *args: Any, **kwargs: Any) -> None:
            self.made += 1
            real(instance, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counted)


# --- an item's places ----------------------------------------------------------------------------


def test_reading_makes_no_place_object_per_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items keep their places as numbers, and a place is made for a problem only: reading 300
    items makes the top level's few Place objects, not several per field of every item (3,813
    before)."""
    path = yaml_manifest(tmp_path)
    places = Counting(monkeypatch, diagnostics.Place)
    reading = read_manifest(path)
    assert len(reading.items) == ITEMS and not reading.problems
    assert places.made <= 10
    assert all(isinstance(item.places, Places) for item in reading.items)


def test_an_items_places_read_as_the_reader_placed_them(tmp_path: Path) -> None:
    reading = read_manifest(yaml_manifest(tmp_path, count=4))
    first, second = reading.items[0], reading.items[1]
    file = str(tmp_path / "m.yaml")
    assert first.place() == Place(file, 4, 5, item=0, item_id="i0")
    assert first.place("prompt") == Place(file, 6, 13, item=0, item_id="i0", field="prompt")
    assert first.input_place("duration") == Place(
        file, 7, 23, item=0, item_id="i0", field="input.duration"
    )
    # what the item does not set comes from the top level, where the top level writes it
    assert first.input_place("seed") == Place(
        file, 2, 26, item=0, item_id="i0", field="defaults.input.seed"
    )
    assert second.place("model") == Place(file, 1, 8, item=1, item_id="i1", field="model")
    assert second.input_place("duration") == second.place()  # set nowhere: the item
    assert dict(first.places) == {
        "item": Place(file, 4, 5),
        "id": Place(file, 4, 9, field="id"),
        "image": Place(file, 5, 12, field="image"),
        "prompt": Place(file, 6, 13, field="prompt"),
        "input.duration": Place(file, 7, 23, field="input.duration"),
        "model": Place(file, 1, 8, field="model"),
        "input.seed": Place(file, 2, 26, field="defaults.input.seed"),
    }


def test_places_fall_back_on_the_shared_ones_and_items_share_their_field_names() -> None:
    shared = {"model": Place("m.yaml", 1, 8, field="model"), "id": Place("m.yaml", 9, 9)}
    maker = PlacesMaker(shared)
    one = maker.make({"item": ("c.csv", 2, 1), "id": ("c.csv", 2, 4)})
    two = maker.make({"item": ("c.csv", 3, 1), "id": ("c.csv", 3, 70_000)})
    assert one["id"] == Place("c.csv", 2, 4, field="id")  # its own before the shared one
    assert two["id"] == Place("c.csv", 3, 70_000, field="id")
    assert one["model"] == shared["model"]
    assert one.get("prompt") is None and "prompt" not in one
    assert list(one) == ["item", "id", "model"] and len(one) == 3
    assert one._names is two._names  # one tuple of names for every item that has them
    # places in two files (never made so) stay Place objects
    mixed = maker.make({"item": ("c.csv", 2, 1), "id": ("m.yaml", 5, 5)})
    assert mixed["id"] == Place("m.yaml", 5, 5, field="id") and mixed["model"] == shared["model"]


# --- a catalog's rows ----------------------------------------------------------------------------


def walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, MappingNode):
        for key, value in node.value:
            yield from walk(key)
            yield from walk(value)
    elif isinstance(node, SequenceNode):
        for value in node.value:
            yield from walk(value)


@pytest.mark.parametrize("form", ["csv", "jsonl"])
def test_catalog_rows_are_the_light_nodes_and_make_no_marks(
    tmp_path: Path, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row's node and every node in it place themselves by numbers, as a YAML item's do:
    reading 300 rows makes no ``Mark`` (2,101 for the CSV rows before), and each value still
    names its line and column in the catalog."""
    if form == "csv":
        path = csv_catalog(tmp_path)
    else:
        (tmp_path / "x.png").write_bytes(PNG)
        path = tmp_path / "c.jsonl"
        rows = [
            {
                "id": f"i{n}",
                "image": "x.png",
                "prompt": f"shot {n}",
                "input": {"a": [1, {"b": None}]},
            }
            for n in range(ITEMS)
        ]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    kinds: set[type] = set()
    read_item = manifest_reader.read_item

    def watched(reader: Any, node: MappingNode, index: int, top: Any) -> Any:
        kinds.update(type(each) for each in walk(node))
        return read_item(reader, node, index, top)

    monkeypatch.setattr(manifest_reader, "read_item", watched)
    marks = Counting(monkeypatch, yaml.Mark)
    reading = read_manifest(path)
    assert len(reading.items) == ITEMS and not reading.errors
    assert marks.made == 0
    assert kinds <= {nodes.Mapping, nodes.Scalar, nodes.Sequence}
    last = reading.items[-1]
    if form == "csv":
        assert last.place("prompt") == Place(
            str(path), ITEMS + 1, 3, item=ITEMS - 1, item_id=last.id, field="prompt"
        )
        assert last.input_place("duration").column == 4
        assert last.input == {"prompt": last.prompt, "duration": 6}
    else:
        assert last.place("prompt").line == ITEMS and last.input["a"] == [1, {"b": None}]


def test_a_catalog_and_its_yaml_twin_from_the_bench_give_the_same_items(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from_yaml = read_manifest(scale.write_catalog(tmp_path / "a", 30))
    from_csv = read_manifest(scale.write_catalog(tmp_path / "b", 30, "csv"))
    assert [(i.id, i.key, i.prompt) for i in from_csv.items] == [
        (i.id, i.key, i.prompt) for i in from_yaml.items
    ]
    assert len(from_csv.warnings) == 0 and not from_csv.errors


# --- schemas: one property at a time -------------------------------------------------------------

CUSTOM: dict[str, Any] = {
    "type": "object",
    "required": ["prompt", "steps"],
    "properties": {
        "prompt": {"type": "string", "description": "what to animate"},
        "steps": {"type": "integer", "minimum": 1, "maximum": 50},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "mode": {"enum": ["fast", 1, True, None]},
        "code": {"type": "string", "pattern": "^[a-z]+$"},
        "nested": {"type": "object", "required": ["x"]},
    },
}
SCHEMAS = [
    CUSTOM,
    {**CUSTOM, "additionalProperties": False},
    {**CUSTOM, "$schema": "http://json-schema.org/draft-04/schema#"},
    *(model.request_schema() for model in models.MODELS.values()),
]
VALUES: list[Any] = [None, True, 0, 1, 7, 51, 1.0, 2.5, -0.0, "", "x", "A1", "fast", [], ["a", 3]]
KEYS = ["prompt", "steps", "ratio", "tags", "mode", "code", "nested", "duration", "zz", "promt"]


@pytest.mark.parametrize("request_schema", SCHEMAS)
def test_checking_one_property_at_a_time_gives_what_checking_the_whole_input_gives(
    request_schema: dict[str, Any],
) -> None:
    split = schema.InputValidator(request_schema)
    whole = schema.InputValidator(request_schema)
    assert split._split is not None
    whole._split = None  # jsonschema over the whole input
    rnd = random.Random(12)
    for _ in range(1500):
        value = {key: rnd.choice(VALUES) for key in rnd.sample(KEYS, rnd.randint(0, 6))}
        assert split.validate(value) == whole.validate(value), value


@pytest.mark.parametrize(
    "request_schema",
    [
        {**CUSTOM, "minProperties": 1},  # a keyword of the whole input
        {**CUSTOM, "additionalProperties": {"type": "string"}},
        {**CUSTOM, "$schema": "http://json-schema.org/draft-03/schema#", "required": None},
    ],
)
def test_other_schemas_are_checked_whole(request_schema: dict[str, Any]) -> None:
    shown = {k: v for k, v in request_schema.items() if v is not None}
    assert schema.InputValidator(shown)._split is None


def test_inputs_that_fit_or_repeat_a_value_cost_no_validator_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """300 fitting inputs: no jsonschema validator made (one per property per item before:
    1,200 descents); 99 inputs with the same bad value: its errors are found once."""
    v2 = models.MODELS["minimax-hailuo-v2-standard-image-to-video"].request_schema()
    validator = schema.InputValidator(v2)
    descents = 0
    descend = type(validator._validator).descend

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal descents
        descents += 1
        return descend(self, *args, **kwargs)

    monkeypatch.setattr(type(validator._validator), "descend", counted)
    good = {"prompt": "p", "image_url": "https://u/x.png", "duration": 6, "resolution": "768P"}
    for n in range(ITEMS):
        assert validator.validate({**good, "prompt": f"shot {n}"}) == []
    assert descents <= 2 * len(v2["properties"])  # the enums' values, once each
    before = descents
    found = [validator.validate({**good, "prompt": f"shot {n}", "duration": 7}) for n in range(99)]
    assert descents == before + 1
    assert all(
        f == [schema.error("must be one of 6, 10, not 7", subject="duration")] for f in found
    )


# --- the plan ------------------------------------------------------------------------------------


class CountingSteps(tuple[Step, ...]):
    walks = 0

    def __iter__(self) -> Iterator[Step]:
        CountingSteps.walks += 1
        return super().__iter__()


def test_the_plan_counts_its_steps_once_for_every_action(tmp_path: Path) -> None:
    items = read_manifest(yaml_manifest(tmp_path, count=6)).items
    states = {items[1].key: KeyState(key=items[1].key, item="i1", state=JobState.DOWNLOADED)}
    planned = make_plan(items, states, file_ok={items[1].key: True})
    plan = Plan(CountingSteps(planned.steps))
    CountingSteps.walks = 0
    counts = {action: plan.count(action) for action in Action} | {
        Action.DONE: plan.count(Action.DONE)
    }
    assert counts[Action.SUBMIT] == 5 and counts[Action.DONE] == 1 and counts[Action.LEFT] == 0
    assert CountingSteps.walks == 1
    assert select(plan) is plan  # nothing left out: the same plan
    assert select(plan, limit=2).count(Action.LEFT) == 3


# --- the prompt lint -----------------------------------------------------------------------------


def reference_repeats(words: list[str]) -> list[tuple[str, str]]:
    """The repeats a scan of every word finds: (phrase, as shown) of each, once per phrase."""
    folded = [w.casefold() for w in words]
    found: list[tuple[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    i = 0
    while i < len(folded):
        for n in range(1, prompts.MAX_REPEAT_WORDS + 1):
            phrase = folded[i : i + n]
            if len(phrase) < n or folded[i + n : i + 2 * n] != phrase:
                continue
            times = 2
            while folded[i + times * n : i + (times + 1) * n] == phrase:
                times += 1
            if tuple(phrase) not in seen:
                seen.add(tuple(phrase))
                found.append((" ".join(words[i : i + n]), " ".join(words[i : i + times * n])))
            i += times * n - 1
            break
        i += 1
    return found


def test_the_repeat_finder_gives_what_a_scan_of_every_word_gives() -> None:
    vocabulary = ["a", "A", "run", "RUN", "the", "cat", "ß", "SS", "x-y", "fast"]
    rnd = random.Random(3)
    for _ in range(3000):
        words = [rnd.choice(vocabulary[: rnd.randint(2, 10)]) for _ in range(rnd.randint(0, 14))]
        expected = [
            f"repeats {json.dumps(phrase, ensure_ascii=False)} back to back "
            f"({json.dumps(shown, ensure_ascii=False)}); the vendor warns that repeated words "
            "make the animation unstable"
            for phrase, shown in reference_repeats(words)
        ]
        assert [d.message for d in prompts._repeats(words)] == expected, words


def test_a_scalar_keeps_its_end_as_a_small_distance() -> None:
    """A one-line value's end is its width from its start: no number object of its own."""
    node = nodes.Scalar(
        "tag:yaml.org,2002:str", "walks", 300_000 * nodes.COLUMNS + 12, 0, None, None
    )
    node.ends_at(300_000 * nodes.COLUMNS + 17)
    assert node._span == 5 and (node.end_mark.line, node.end_mark.column) == (300_000, 17)
    assert isinstance(node, ScalarNode)
