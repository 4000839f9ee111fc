"""A manifest's items read from a catalog: a CSV or JSONL file of one item per row.

A manifest names its catalog with ``items_from`` (a path relative to the manifest, or ``"-"``
for standard input) instead of ``items``; ``columns`` maps the item's fields to the catalog's
column names where they differ::

    items_from: catalog.csv
    columns: {id: sku, image: still_path, prompt: caption, input.duration: secs, meta.sku: sku}

A catalog named on the command line (``run catalog.csv``) is read as the manifest
``items_from: catalog.csv`` (``catalog_document``): its batch is the file's stem, standard
input's is ``stdin``.

Columns: ``id``, ``image``, ``prompt``, ``model``, ``prompt_optimizer``, ``input.<name>`` and
``meta.<name>`` by default, and ``input`` / ``meta`` holding a JSON object; any other column is
ignored, unless ``columns`` has ``meta: "*"``, which carries every column no field uses into
``meta`` under its own name. A CSV cell of ``prompt_optimizer`` or ``input.*`` is read as JSON if
it is JSON (``6``, ``true``, ``null``, ``[1, 2]``; ``TRUE``/``FALSE`` too), else as text; every
other cell is text. An empty CSV cell, or a JSON null, leaves ``model``, ``prompt_optimizer``,
an ``input.*`` or a ``meta.*`` unset; ``id``, ``image`` and ``prompt`` must not be empty.
Images are relative to the catalog's folder (standard input's: the current directory).

Each row becomes an item node of the same shape a YAML item composes into, its values placed
in the catalog (``rownodes.Spot``: the row's first physical line, and for CSV the field's
1-based position in the row), so that ``runner.manifest.fields`` checks it with the very
rules, and messages, of a YAML item. A row of the wrong width, a line that is not a JSON object
and the catalog's header are checked here. Rows are read one line at a time.
"""

from __future__ import annotations

import csv
import difflib
import itertools
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from yaml.nodes import MappingNode, Node

from runner.config import open_regular_file
from runner.diagnostics import Diagnostic, Place, error
from runner.errors import ManifestError
from runner.manifest import nodes
from runner.manifest.document import MAX_MANIFEST_BYTES, Document
from runner.manifest.jsonvalues import RESERVED_INPUT
from runner.manifest.rownodes import (
    FIELDS,
    Columns,
    Layout,
    item_node,
    layout_of,
    no_constant,
    spot_at,
    str_node,
)
from runner.manifest.yamlnodes import Reader, Scope, quote, unknown_key

#: Catalog formats by file name suffix.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: The catalog read from standard input (its format sniffed: a first ``{`` is JSONL).
STDIN = "-"
STDIN_NAME = "<stdin>"
STDIN_BATCH = "stdin"
#: The item fields a CSV header must have a column for.
REQUIRED = ("image", "prompt")
_GROUPS = ("input", "meta")


def is_stdin(path: Path) -> bool:
    """Whether ``path`` is ``-``: the catalog on standard input."""
    return str(path) == STDIN


def is_catalog(path: Path) -> bool:
    """Whether ``path`` names a catalog rather than a YAML manifest: by its suffix, or ``-``."""
    return is_stdin(path) or path.suffix.lower() in FORMATS


def catalog_document(path: Path) -> Document:
    """The manifest ``items_from: <path's name>`` of a catalog named directly (standard input:
    ``items_from: "-"`` and ``batch: stdin``). Raises ManifestError, as ``document.compose``
    does, for a file that cannot be opened."""
    stdin = is_stdin(path)
    name = STDIN_NAME if stdin else str(path)
    if not stdin:
        try:
            open_regular_file(path).close()
        except FileNotFoundError:
            raise ManifestError([_error("catalog file not found", name)]) from None
        except OSError as exc:
            raise ManifestError(
                [_error(f"cannot read the catalog: {exc.strerror}", name)]
            ) from None
    spot = spot_at(name, 1, 1)
    entries: list[tuple[Node, Node]] = [
        (str_node("items_from", spot), str_node(STDIN if stdin else path.name, spot))
    ]
    if stdin:
        entries.append((str_node("batch", spot), str_node(STDIN_BATCH, spot)))
    root = nodes.Mapping("tag:yaml.org,2002:map", entries, spot.at, None, name)
    return Document(root, 1 + 2 * len(entries))


# --- the manifest's items_from and columns ---------------------------------------------------

Rows = list[tuple[int, MappingNode]]


def read_items_from(
    reader: Reader, found: Mapping[str, tuple[Node, Node]], base_dir: Path
) -> tuple[Path, Rows] | None:
    """The folder images are relative to and the item nodes of the manifest's ``items_from``
    catalog (each with its index); None when the manifest has no ``items_from`` (then a
    ``columns`` is reported as useless). Every problem goes to ``reader``."""
    if "items_from" not in found:
        if "columns" in found:
            reader.error(found["columns"][0], Scope().at("columns"), 'needs "items_from"')
        return None
    node = found["items_from"][1]
    if "items" in found:
        message = 'give either "items" or "items_from", not both'
        reader.error(found["items"][0], Scope().at("items"), message)
    columns = read_columns(reader, found["columns"][1]) if "columns" in found else Columns()
    source = reader.string(node, Scope().at("items_from"))
    if source is None:
        return base_dir, []
    if source == STDIN:
        return Path.cwd(), _read(reader, sys.stdin.buffer, STDIN_NAME, None, columns)
    kind = FORMATS.get(Path(source).suffix.lower())
    if kind is None:
        message = f"{quote(source)} is not a catalog: name a .csv, .jsonl or .ndjson file, or -"
        reader.error(node, Scope().at("items_from"), message)
        return base_dir, []
    path = base_dir / source
    name = str(Path(reader.file).parent / source)
    try:
        stream = open_regular_file(path)
    except OSError as exc:
        what = "not found" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc.strerror}"
        reader.error(node, Scope().at("items_from"), f"catalog {quote(source)} {what} ({path})")
        return base_dir, []
    with stream:
        return path.parent, _read(reader, stream, name, kind, columns)


def read_columns(reader: Reader, node: Node) -> Columns:
    """The ``columns`` mapping: item field (``input.<name>``, ``meta.<name>``) → column name;
    ``meta: "*"`` carries every unused column into ``meta``."""
    mapping = reader.mapping(node, Scope().at("columns"))
    if mapping is None:
        return Columns()
    scope = Scope(prefix="columns.")
    fields: dict[str, str] = {}
    rest = False
    for key, (knode, vnode) in reader.entries(mapping, scope, None, {}).items():
        group, _, name = key.partition(".")
        if key not in FIELDS and not (group in _GROUPS and name):
            allowed = [*FIELDS, "input.<name>", "meta.<name>"]
            reader.error(knode, scope.at(key), unknown_key(key, allowed, {}))
            continue
        if group == "input" and name in RESERVED_INPUT:
            reader.error(knode, scope.at(key), f"{quote(name)} comes from the item's own field")
            continue
        column = reader.string(vnode, scope.at(key))
        if column is not None and key == "meta" and column == "*":
            rest = True
        elif column is not None:
            fields[key] = column.strip()
    return Columns(fields, rest)


# --- reading rows ------------------------------------------------------------------------


class _Stop(Exception):
    """Reading the catalog cannot go on past ``line``: ``message`` says why."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _read(reader: Reader, stream: BinaryIO, name: str, kind: str | None, columns: Columns) -> Rows:
    """The item nodes of the catalog in ``stream`` (``kind`` None: sniffed)."""
    lines = _lines(stream)
    if kind is None:  # standard input: a first "{" makes it JSONL
        head: list[str] = []
        try:
            while not (head and head[-1].strip()) and (text := next(lines, None)) is not None:
                head.append(text)
        except _Stop as stop:
            reader.error(_spot(name, stop.line, 1), Scope().at(), stop.message)
            return []
        kind = "jsonl" if head and head[-1].lstrip().startswith("{") else "csv"
        lines = itertools.chain(head, lines)
    rows: Rows = []
    try:
        if kind == "csv":
            _csv_rows(reader, lines, name, columns, rows)
        else:
            _jsonl_rows(reader, lines, name, columns, rows)
    except _Stop as stop:
        reader.error(_spot(name, stop.line, 1), Scope().at(), stop.message)
        return rows
    if not rows and not reader.error_count:
        reader.error(_spot(name, 1, 1), Scope().at(), "the catalog has no items")
    return rows


def _lines(stream: BinaryIO) -> Iterator[str]:
    """The catalog's lines, decoded one at a time (so that a bad byte names its line) with
    their line endings; a UTF-8 byte order mark is dropped. Raises _Stop."""
    size = 0
    for number, raw in enumerate(stream, 1):
        size += len(raw)
        if size > MAX_MANIFEST_BYTES:
            limit = MAX_MANIFEST_BYTES // (1024 * 1024)
            raise _Stop(f"the catalog is larger than {limit} MB; split the batch", number)
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _Stop(f"not UTF-8 text ({exc.reason})", number) from None


def _csv_rows(
    reader: Reader, lines: Iterator[str], name: str, columns: Columns, rows: Rows
) -> None:
    """CSV: a header row, then one item per row. A row's line is its first physical line (a
    quoted prompt may span several); its columns count fields from 1."""
    table = csv.reader(lines, strict=True)
    header: list[str] | None = None
    header_line = 1
    layout: Layout | None = None
    numbers = range(0)
    index = 0
    while True:
        start = table.line_num + 1
        try:
            cells = next(table, None)
        except csv.Error as exc:
            raise _Stop(f"not valid CSV: {exc}", start) from None
        if cells is None:
            return
        if not "".join(cells).strip():
            continue  # a blank line, or a spreadsheet's row of empty cells
        if header is None:
            header, header_line = [cell.strip() for cell in cells], start
            layout = layout_of(columns, header)
            numbers = range(1, len(header) + 1)
            if not _header_ok(reader, header, header_line, name, columns, layout):
                return
            continue
        assert layout is not None
        if len(cells) != len(header):
            more = len(cells) > len(header)
            column = len(header) + 1 if more else len(cells) + 1
            message = (
                f"the row has {len(cells)} fields, the header {len(header)} (line {header_line})"
                f": {'a comma too many, or a quote missing' if more else 'a field is missing'}"
            )
            reader.error(_spot(name, start, column), Scope(index).at(), message)
        else:
            record = dict(zip(header, zip(cells, numbers, strict=True), strict=True))
            rows.append((index, item_node(record, layout, name, start, text=True)))
        index += 1


def _header_ok(
    reader: Reader, header: list[str], line: int, name: str, columns: Columns, layout: Layout
) -> bool:
    """Report the columns the mapping names that the header lacks, and a column used twice;
    False if a required one (image, prompt) is missing: then no row could be read."""
    ok = True
    used = {*layout.fields.values(), *(c for _, c in layout.input), *(c for _, c in layout.meta)}
    seen: set[str] = set()
    for number, column in enumerate(header, 1):
        if column in seen and column in used:
            message = f"the column {quote(column)} appears twice in the header"
            reader.error(_spot(name, line, number), Scope().at(), message)
        seen.add(column)
    for item_field in dict.fromkeys([*REQUIRED, *columns.fields]):
        column = columns.fields.get(item_field, item_field)
        if column in seen:
            continue
        close = [h for h in header if h.casefold() == column.casefold()]
        close = close or difflib.get_close_matches(column, header, n=1)
        hint = f"; did you mean {quote(close[0])}?" if close else f"; it has: {', '.join(header)}"
        mapped = "" if column == item_field else ' (mapped in "columns")'
        message = f"the header has no column {quote(column)}{mapped}{hint}"
        reader.error(_spot(name, line, 1), Scope().at(item_field), message)
        ok = ok and item_field not in REQUIRED
    return ok


def _jsonl_rows(
    reader: Reader, lines: Iterator[str], name: str, columns: Columns, rows: Rows
) -> None:
    """JSONL: one JSON object per line; blank lines are skipped."""
    layouts: dict[tuple[str, ...], Layout] = {}
    index = 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            value = json.loads(text, parse_constant=no_constant)
        except ValueError as exc:
            column = exc.colno if isinstance(exc, json.JSONDecodeError) else 1
            message = f"not valid JSON: {getattr(exc, 'msg', exc)}"
            reader.error(_spot(name, number, column), Scope(index).at(), message)
            index += 1
            continue
        if not isinstance(value, dict):
            message = f"each line must be a JSON object (one item), not {_json_kind(value)}"
            reader.error(_spot(name, number, 1), Scope(index).at(), message)
        else:
            keys = tuple(value)
            layout = layouts.get(keys) or layouts.setdefault(keys, layout_of(columns, keys))
            record = {key: (cell, 1) for key, cell in value.items()}
            rows.append((index, item_node(record, layout, name, number, text=False)))
        index += 1


def _spot(name: str, line: int, column: int) -> Node:
    """A node that only marks a place, to report a problem of the catalog itself there."""
    return str_node("", spot_at(name, line, column))


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return "null" if value is None else kinds.get(type(value), "a number")


def _error(message: str, name: str) -> Diagnostic:
    return error(message, Place(name))
