"""A catalog's row as the item node a YAML item composes into (see ``runner.manifest.catalog``).

A row is a record: column → (value, 1-based column number; JSONL's are 1). ``layout`` finds, once
per header (CSV) or per set of keys (JSONL), which column fills which item field under the
manifest's ``columns``; ``item_node`` builds the row's node, every value placed (``Spot``: the
catalog's name, and the value's line and column) in the catalog, so that
``runner.manifest.fields`` checks it with the rules of a YAML item and its problems name the
catalog. The nodes are the light ones a YAML manifest composes into (``runner.manifest.nodes``:
a place kept as a number, not two ``Mark`` objects). CSV cells are text but for
``prompt_optimizer``, ``priority`` and ``input.*``, read as JSON when they are JSON (``typed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from yaml.nodes import MappingNode, Node, ScalarNode

from runner.manifest import nodes

#: The item fields a column may fill, and the optional ones an empty cell leaves unset.
FIELDS = ("id", "image", "prompt", "model", "prompt_optimizer", "priority", "input", "meta")
_OPTIONAL = ("model", "prompt_optimizer", "priority")
#: The fields a CSV cell fills with JSON when it is JSON (a number, true): text otherwise.
_TYPED = ("prompt_optimizer", "priority")
_GROUPS = ("input", "meta")
_TAG = "tag:yaml.org,2002:"
_STR = f"{_TAG}str"
_JSON_STARTS = frozenset('-0123456789[{"n')
#: A row: column → (value, 1-based column number).
Record = Mapping[str, tuple[Any, int]]


@dataclass(frozen=True)
class Columns:
    """Which catalog column fills which item field (``input.<name>`` and ``meta.<name>``
    included); ``rest_to_meta``: every column no field uses goes into ``meta``."""

    fields: Mapping[str, str] = field(default_factory=dict)
    rest_to_meta: bool = False


@dataclass(frozen=True)
class Layout:
    """Where a row's item fields are: field → column, and (name, column) of each input and
    meta value."""

    fields: dict[str, str]
    input: list[tuple[str, str]]
    meta: list[tuple[str, str]]


def layout_of(columns: Columns, names: Iterable[str]) -> Layout:
    """The layout of rows with the columns ``names`` under the mapping ``columns``."""
    present = list(dict.fromkeys(names))
    fields = {f: c for f in FIELDS if (c := columns.fields.get(f, f)) in present}
    groups: dict[str, list[tuple[str, str]]] = {"input": [], "meta": []}
    for group in _GROUPS:
        prefix = f"{group}."
        mapped = {k[len(prefix) :] for k in columns.fields if k.startswith(prefix)}
        for key, column in columns.fields.items():
            if key.startswith(prefix) and column in present:
                groups[group].append((key[len(prefix) :], column))
        for column in present:
            key = column[len(prefix) :]
            if column.startswith(prefix) and key and key not in mapped:
                groups[group].append((key, column))
    if columns.rest_to_meta:
        used = {*fields.values(), *(c for pairs in groups.values() for _, c in pairs)}
        groups["meta"] += [(c, c) for c in present if c not in used and c]
    return Layout(fields, groups["input"], groups["meta"])


class Spot(NamedTuple):
    """A place in a catalog: its name, and its line and column packed (``nodes.pack``)."""

    file: str
    at: int


def spot_at(name: str, line: int, column: int) -> Spot:
    """The place ``line:column`` (both from 1) of the catalog ``name``."""
    return Spot(name, (line - 1) * nodes.COLUMNS + column - 1)


def item_node(record: Record, layout: Layout, name: str, line: int, *, text: bool) -> MappingNode:
    """The item node of one row: ``record`` maps a column to its value and 1-based column."""
    row = spot_at(name, line, 1)
    entries: list[tuple[Node, Node]] = []
    for item_field, column in layout.fields.items():
        if item_field in _GROUPS:
            continue
        value, number = record[column]
        if item_field in _OPTIONAL and _unset(value, text):
            continue
        if text and item_field in _TYPED:
            value = typed(value)
        at = row.at + number - 1  # ``spot_at(name, line, number)``
        key = nodes.Scalar(_STR, item_field, row.at, row.at, None, name)
        if type(value) is str:  # most cells: ``json_node``'s string, without the calls
            entries.append((key, nodes.Scalar(_STR, value, at, at, None, name)))
        else:
            entries.append((key, json_node(value, Spot(name, at))))
    for group in _GROUPS:
        if group in layout.fields or getattr(layout, group):
            node = _group(record, layout, group, name, line, text=text)
            if node is not None:
                entries.append((str_node(group, row), node))
    return nodes.Mapping(f"{_TAG}map", entries, row.at, None, name)


def _group(
    record: Record,
    layout: Layout,
    group: str,
    name: str,
    line: int,
    *,
    text: bool,
) -> Node | None:
    """A row's ``input`` or ``meta``: its whole-object column, then its ``<group>.*`` columns;
    None if it has neither."""
    entries: list[tuple[Node, Node]] = []
    first: Spot | None = None  # where its first key is
    column = layout.fields.get(group)
    if column is not None and not _unset(record[column][0], text):
        value, number = record[column]
        spot = spot_at(name, line, number)
        value = typed(value) if text else value
        if not isinstance(value, dict):
            return json_node(value, spot)  # the fields reader reports what it is instead
        entries += [(str_node(str(k), spot), json_node(v, spot)) for k, v in value.items()]
        first = spot if entries else None
    for key, source in getattr(layout, group):
        value, number = record[source]
        if _unset(value, text):
            continue
        if text and group == "input":
            value = typed(value)
        spot = spot_at(name, line, number)
        first = first or spot
        entries.append((str_node(key, spot), json_node(value, spot)))
    if not entries or first is None:
        return None
    return nodes.Mapping(f"{_TAG}map", entries, first.at, None, name)


def _unset(value: Any, text: bool) -> bool:
    """An empty CSV cell, or a JSON null: an optional field left unset."""
    return not value.strip() if text else value is None


def typed(cell: str) -> Any:
    """A CSV cell read as JSON if it is JSON (``TRUE``/``FALSE`` too), else as its text."""
    word = cell.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if word.isascii() and word.isdigit() and (word == "0" or word[0] != "0"):  # as JSON reads it
        return int(word)
    if word[:1] not in _JSON_STARTS:
        return cell
    try:
        return json.loads(cell, parse_constant=no_constant)
    except ValueError:
        return cell


def no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_node(value: Any, spot: Spot) -> Node:
    """The YAML node of a JSON value, as composing it from YAML would make it, at ``spot``."""
    if isinstance(value, dict):
        pairs = [(str_node(str(k), spot), json_node(v, spot)) for k, v in value.items()]
        return nodes.Mapping(f"{_TAG}map", pairs, spot.at, None, spot.file)
    if isinstance(value, list):
        values = [json_node(v, spot) for v in value]
        return nodes.Sequence(f"{_TAG}seq", values, spot.at, None, spot.file)
    if isinstance(value, str):
        return str_node(value, spot)
    if value is None:
        return _scalar("null", "null", spot)
    if isinstance(value, bool):
        return _scalar("bool", "true" if value else "false", spot)
    return _scalar("int" if isinstance(value, int) else "float", repr(value), spot)


def str_node(value: str, spot: Spot) -> ScalarNode:
    """A string's node at ``spot``."""
    return nodes.Scalar(_STR, value, spot.at, spot.at, None, spot.file)


def _scalar(kind: str, text: str, spot: Spot) -> ScalarNode:
    return nodes.Scalar(f"{_TAG}{kind}", text, spot.at, spot.at, None, spot.file)
