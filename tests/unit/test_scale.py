"""Reading and checking a large catalog stays linear: counted operations, not seconds; and the
plan's money and counts print right at 100,000 items."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from runner import models
from runner.checks import items, schema
from runner.checks.preflight import Report
from runner.checks.render import render_plan
from runner.config import CheckConfig, Limits
from runner.cost import Estimate, usd
from runner.diagnostics import Diagnostic, Severity
from runner.engine.policy import RuntimeModel
from runner.manifest import Item, document, read_manifest
from runner.manifest import reader as manifest_reader
from runner.manifest.yamlnodes import Reader
from runner.night import FIT_QUANTILE, Night, Order
from runner.store.ledger import KeyState
from runner.store.plan import Action, Plan, Step

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # the manifest reads names and bytes, not pixels


def write(directory: Path, lines: list[str]) -> Path:
    path = directory / "m.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the reader: quadratic in problems -----------------------------------------------------


class CountingList(list[Diagnostic]):
    """The reader's problems, counting every one visited by a scan of them."""

    visits = 0

    def __iter__(self) -> Iterator[Diagnostic]:
        for found in super().__iter__():
            CountingList.visits += 1
            yield found


def test_reading_visits_each_problem_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each item asks how many errors there are so far; asking must not scan every problem
    found before (600 items with a warning each: ~180,000 visits if it did)."""

    class Counted(Reader):
        def __init__(self, file: str) -> None:
            super().__init__(file)
            self._found = CountingList()

    monkeypatch.setattr(manifest_reader, "Reader", Counted)
    (tmp_path / "still.img").write_bytes(PNG)  # a suffix the API does not name: a warning
    lines = ["items:"]
    for n in range(600):
        lines += [f"  - id: i{n}", "    image: still.img", f"    prompt: shot {n} of a deer"]
    lines += ["  - id: bad", "    image: still.img", "    prompt: 7"]  # an error: a flawed item
    CountingList.visits = 0
    reading = read_manifest(write(tmp_path, lines))
    assert len(reading.warnings) >= 600
    assert reading.flawed == {600}
    assert CountingList.visits <= 3 * len(reading.problems)


# --- images: each distinct file hashed once --------------------------------------------------


def test_each_distinct_image_file_is_hashed_once_however_many_items_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    real = hashlib.file_digest

    def counting(handle: Any, digest: str) -> Any:
        hashed.append(handle.name)
        return real(handle, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    (tmp_path / "sub").mkdir()
    contents = {name: PNG + name.encode() for name in ("a.png", "b.png", "c.png")}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    spellings = ["a.png", "./a.png", "sub/../a.png", "b.png", "c.png"]  # a.png spelled 3 ways
    lines = ["items:"]
    for n in range(300):
        lines += [f"  - id: i{n}", f"    image: {spellings[n % 5]}", f"    prompt: shot {n}"]
    reading = read_manifest(write(tmp_path, lines))
    assert not reading.errors
    assert len(hashed) == 3
    for item in reading.items:
        assert item.image_path is not None
        expected = hashlib.sha256(contents[item.image_path.name]).hexdigest()
        assert item.image_sha256 == expected


def test_a_missing_image_is_reported_at_every_item_naming_it(tmp_path: Path) -> None:
    lines = ["items:"] + [f"  - {{id: i{n}, image: gone.png, prompt: p}}" for n in range(4)]
    reading = read_manifest(write(tmp_path, lines))
    assert [(e.place.line, e.place.item) for e in reading.errors] == [(n + 2, n) for n in range(4)]
    assert all("gone.png" in e.message and "not found" in e.message for e in reading.errors)
    assert reading.flawed == {0, 1, 2, 3}


# --- schemas: one validator per model --------------------------------------------------------


def test_one_validator_is_built_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real: Callable[[Any], type[Any]] = schema._validator_class

    def counting(request_schema: Any) -> type[Any]:
        built.append(str(request_schema.get("required")))
        return real(request_schema)

    monkeypatch.setattr(schema, "_validator_class", counting)
    slugs = ["minimax-i2v-01", "minimax-hailuo-v2-standard-image-to-video"]
    out = tmp_path / "out"
    schema.write_cache(
        out / schema.CACHE_NAME,
        {
            slug: schema.ModelSchema(slug, models.MODELS[slug].request_schema(), "t", cached=True)
            for slug in slugs
        },
    )
    lines = ["items:"]
    for n in range(200):
        duration = "7" if n == 199 else "6"  # the v2 schema's enum is 6 or 10
        lines += [
            f"  - id: i{n}",
            f"    image: https://example.org/{n}.png",
            f"    prompt: shot {n} of a deer walking",
            f"    model: {slugs[n % 2]}",
            f"    input: {{duration: {duration}}}" if n % 2 else "    input: {}",
        ]
    reading = read_manifest(write(tmp_path, lines))
    assert not reading.errors
    _, found, _ = anyio.run(items.check_schemas, reading, None, out, CheckConfig(offline=True))
    assert len(built) <= 2 * len(slugs)  # each model: its schema checked, one validator
    errors = [p for p in found if p.severity is Severity.ERROR]
    assert [(e.place.item, e.place.field) for e in errors] == [(199, "input.duration")]


# --- the C parser: the same marks --------------------------------------------------------------

SAMPLE = """\
batch: "naïve — ünïcode"
model: minimax-i2v-01
defaults: &d {prompt_optimizer: true, input: {a: [1, 2, {b: c}]}}
items:
  - id: déjà-vu
    image: "images/ça.png"
    prompt: >
      a deer walks
      through the fog
    <<: *d
  - {id: two, image: 'x.png', prompt: "é é", meta: {k: [é, "ü"]}}
  - id: three
    image: |
      multi
    prompt: "- a list? no"
"""


def marks(node: Node) -> list[tuple[str, int, int, int, int]]:
    """Every node's tag and start and end (line, column), in document order."""
    found: list[tuple[str, int, int, int, int]] = []
    seen: set[int] = set()

    def walk(current: Node) -> None:
        start, end = current.start_mark, current.end_mark
        found.append((current.tag, start.line, start.column, end.line, end.column))
        if id(current) in seen:
            return
        seen.add(id(current))
        if isinstance(current, MappingNode):
            for key, value in current.value:
                walk(key)
                walk(value)
        elif isinstance(current, SequenceNode):
            for value in current.value:
                walk(value)

    walk(node)
    return found


@pytest.mark.skipif(document._FastLoader is None, reason="libyaml is not installed")
def test_libyaml_gives_the_same_nodes_and_marks_as_pyyaml() -> None:
    assert document._FastLoader is not None
    fast = document._FastLoader(SAMPLE)
    slow = document._BoundedLoader(SAMPLE)
    fast_root, slow_root = fast.get_single_node(), slow.get_single_node()
    assert fast_root is not None and slow_root is not None
    assert marks(fast_root) == marks(slow_root)
    assert fast.values == slow.values


@pytest.mark.parametrize(
    "text",
    [
        "items: [a, b\n",  # never closed
        "items:\n  - a: b\n   c: d\n",  # bad indentation
        "a: \x07\n",  # a control character
        "a: &x [*x]\n",  # an alias inside its anchor
        "a: " + "[" * 100 + "]" * 100 + "\n",  # too deep
    ],
)
def test_a_refused_text_reads_as_pyyaml_reports_it(text: str) -> None:
    """libyaml words some errors differently: a text it refuses is parsed again by PyYAML."""
    with pytest.raises(yaml.YAMLError) as slow:
        document._compose_with(document._BoundedLoader(text))
    with pytest.raises(yaml.YAMLError) as either:
        document._compose_text(text)
    assert str(either.value) == str(slow.value)
    assert type(either.value) is type(slow.value)


# --- money and counts at 100,000 items ---------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.43 * 100_000, "$43,000.00"),  # the float is 42999.999999999996
        (sum([0.43] * 100_000), "$43,000.00"),
        (Decimal("0.43") * 100_000, "$43,000.00"),
        (0.1 + 0.2, "$0.30"),
        (0.4312, "$0.4312"),
        (0.431, "$0.431"),
        (1_234_567.5, "$1,234,567.50"),
        (999.999, "$999.999"),
        (0, "$0.00"),
    ],
)
def test_usd_prints_dollars_and_cents_without_float_noise(amount: float, text: str) -> None:
    assert usd(amount) == text


def plan_item(n: int, model: str = "minimax-i2v-01") -> Item:
    return Item(
        id=f"i{n}",
        index=n,
        line=n + 2,
        model=model,
        prompt="p",
        image="https://example.org/x.png",
        image_path=None,
        image_url="https://example.org/x.png",
        image_sha256=None,
        input={},
        key=f"k{n}",
        price_usd=Decimal("0.43"),
    )


def plan_report(steps: tuple[Step, ...]) -> Report:
    """The report of checks that passed, planning ``steps``."""
    to_submit = tuple((s.item.id, s.item.price_usd) for s in steps if s.action is Action.SUBMIT)
    return Report(
        manifest_path=Path("m.yaml"),
        batch="b",
        output_dir=Path("out"),
        problems=(),
        plan=Plan(steps),
        estimate=Estimate(to_submit=to_submit),
    )


def test_the_plan_keeps_its_count_column_at_100000_items() -> None:
    actions = [Action.SUBMIT] * 100_000 + [Action.DONE] * 7
    steps = tuple(
        Step(plan_item(n), action, KeyState(key=f"k{n}", item=f"i{n}"))
        for n, action in enumerate(actions)
    )
    lines = render_plan(plan_report(steps)).splitlines()
    rows = {name: line for line in lines for name in ("to submit", "already done") if name in line}
    assert rows["to submit"].split()[2] == "100,000"
    assert rows["already done"].split()[2] == "7"
    ends = {name: line.index(line.split()[2]) + len(line.split()[2]) for name, line in rows.items()}
    assert ends["to submit"] == ends["already done"]  # right-aligned in one column
    [cost_line] = [line for line in lines if "estimated cost" in line]
    assert cost_line.strip() == "estimated cost: 100,000 × $0.43 = $43,000.00"


@pytest.mark.parametrize("order", list(Order))
def test_the_nights_forecast_reads_each_models_run_times_once_not_once_per_item(
    monkeypatch: pytest.MonkeyPatch, order: Order
) -> None:
    """Before: three quantiles (a bisection of 60 steps each) per item to submit, about 4 s of
    a 100,000-item plan with --until. Now each model's typical and fitting run times are
    found once."""
    asked: list[float] = []
    quantile = RuntimeModel.quantile

    def counted(self: RuntimeModel, share: float) -> float:
        asked.append(share)
        return quantile(self, share)

    monkeypatch.setattr(RuntimeModel, "quantile", counted)
    steps = tuple(
        Step(
            plan_item(n, ("minimax-i2v-01", "other")[n % 2]),
            Action.SUBMIT,
            KeyState(f"k{n}", f"i{n}"),
        )
        for n in range(1000)
    )
    now = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
    tonight = Night(deadline=now + timedelta(hours=8), order=order)
    text = render_plan(plan_report(steps), limits=Limits(), tonight=tonight, now=now)
    assert "of 1,000 items to submit finish" in text
    assert sorted(asked) == [0.5, 0.5, FIT_QUANTILE, FIT_QUANTILE]  # two models, twice each
