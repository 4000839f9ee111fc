"""A catalog's row as the item node a YAML item composes into (see ``runner.manifest.catalog``).

A row is a record: column → (value, 1-based column number; JSONL's are 1). ``layout`` finds, once
per header (CSV) or per set of keys (JSONL), which column fills which item field under the
manifest's ``columns``; ``item_node`` builds the row's node, every value marked (``FileMark``)
with its line and column in the catalog, so that ``runner.manifest.fields`` checks it with the
rules of a YAML item and its problems name the catalog. CSV cells are text but for
``prompt_optimizer``, ``priority`` and ``input.*``, read as JSON when they are JSON (``typed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.manifest.yamlnodes import FileMark

#: The item fields a column may fill, and the optional ones an empty cell leaves unset.
FIELDS = ("id", "image", "prompt", "model", "prompt_optimizer", "priority", "input", "meta")
_OPTIONAL = ("model", "prompt_optimizer", "priority")
#: The fields a CSV cell fills with JSON when it is JSON (a number, true): text otherwise.
_TYPED = ("prompt_optimizer", "priority")
_GROUPS = ("input", "meta")
_TAG = "tag:yaml.org,2002:"
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


def item_node(record: Record, layout: Layout, name: str, line: int, *, text: bool) -> MappingNode:
    """The item node of one row: ``record`` maps a column to its value and 1-based column."""
    mark = FileMark(name, 0, line - 1, 0, None, 0)
    entries: list[tuple[Node, Node]] = []
    for item_field, column in layout.fields.items():
        if item_field in _GROUPS:
            continue
        value, number = record[column]
        if _unset(value, text) and item_field in _OPTIONAL:
            continue
        if text and item_field in _TYPED:
            value = typed(value)
        entries.append((str_node(item_field, mark), json_node(value, mark_at(name, line, number))))
    for group in _GROUPS:
        node = _group(record, layout, group, name, line, text=text)
        if node is not None:
            entries.append((str_node(group, mark), node))
    return MappingNode(f"{_TAG}map", entries, mark, mark)


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
    column = layout.fields.get(group)
    if column is not None and not _unset(record[column][0], text):
        value, number = record[column]
        mark = mark_at(name, line, number)
        value = typed(value) if text else value
        if not isinstance(value, dict):
            return json_node(value, mark)  # the fields reader reports what it is instead
        entries += [(str_node(str(k), mark), json_node(v, mark)) for k, v in value.items()]
    for key, source in getattr(layout, group):
        value, number = record[source]
        if _unset(value, text):
            continue
        if text and group == "input":
            value = typed(value)
        mark = mark_at(name, line, number)
        entries.append((str_node(key, mark), json_node(value, mark)))
    if not entries:
        return None
    return MappingNode(f"{_TAG}map", entries, entries[0][0].start_mark, entries[0][0].start_mark)


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


def json_node(value: Any, mark: FileMark) -> Node:
    """The YAML node of a JSON value, as composing it from YAML would make it."""
    if isinstance(value, dict):
        pairs = [(str_node(str(k), mark), json_node(v, mark)) for k, v in value.items()]
        return MappingNode(f"{_TAG}map", pairs, mark, mark)
    if isinstance(value, list):
        return SequenceNode(f"{_TAG}seq", [json_node(v, mark) for v in value], mark, mark)
    if isinstance(value, str):
        return str_node(value, mark)
    if value is None:
        return ScalarNode(f"{_TAG}null", "null", mark, mark)
    if isinstance(value, bool):
        return ScalarNode(f"{_TAG}bool", "true" if value else "false", mark, mark)
    kind = "int" if isinstance(value, int) else "float"
    return ScalarNode(f"{_TAG}{kind}", repr(value), mark, mark)


def str_node(value: str, mark: FileMark) -> ScalarNode:
    return ScalarNode(f"{_TAG}str", value, mark, mark)


def mark_at(name: str, line: int, column: int) -> FileMark:
    """The place ``line:column`` (both from 1) of the catalog ``name``."""
    return FileMark(name, 0, line - 1, column - 1, None, 0)
