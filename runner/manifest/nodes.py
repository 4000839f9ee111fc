"""YAML nodes that keep their place as numbers: the nodes a manifest and a catalog are read into.

PyYAML's nodes carry two ``Mark`` objects each (start and end: name, index, line, column and
the parser's buffer): in a 100,000-item manifest those 1.4 million marks are two thirds of the
document's memory, while a mark is read only where a diagnostic or a field's place is made.
These nodes are PyYAML's (``ScalarNode``, ``SequenceNode``, ``MappingNode`` subclasses, so
every ``isinstance`` and PyYAML's constructor treat them as such) but keep each mark as one
number, line and column packed, and make a ``Mark`` of it when ``start_mark`` or ``end_mark``
is read. The end is kept as its distance from the start: for a value on one line that is its
width, a number small enough that Python shares one object for it rather than allocating one
per node. A node of a catalog keeps the catalog's name too: its marks are ``FileMark``s, which
place its problems in the catalog rather than the manifest.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

#: A mark's column fits below this (a manifest or catalog is at most 256 MB): line and column
#: are packed as ``line * COLUMNS + column``.
COLUMNS = 1 << 32
#: The name PyYAML gives the marks of a text it parses from a string.
TEXT_NAME = "<unicode string>"


class FileMark(yaml.Mark):
    """A place in another file than the reader's: a row of a catalog the manifest takes its
    items from (``runner.manifest.catalog``), whose problems name the catalog, not the manifest.
    ``name`` is that file as the user wrote it."""


def pack(mark: Any) -> int:
    """A mark's line and column (both from 0) as one number."""
    return int(mark.line) * COLUMNS + int(mark.column)


def unpack(file: str | None, packed: int) -> yaml.Mark:
    """The mark of ``packed``: a ``FileMark`` in ``file``, or a mark in the YAML text (None)."""
    line, column = divmod(packed, COLUMNS)
    if file is None:
        return yaml.Mark(TEXT_NAME, 0, line, column, None, 0)
    return FileMark(file, 0, line, column, None, 0)


class _Placed:
    """``start_mark`` and ``end_mark`` kept packed (``pack``; the end as its distance from the
    start), with the catalog's name (None: the manifest's own text). Mixed into the node
    classes below."""

    _file: str | None
    _start: int
    _span: int  # the end's packed place less the start's

    @property
    def start_mark(self) -> yaml.Mark:
        return unpack(self._file, self._start)

    @start_mark.setter
    def start_mark(self, mark: yaml.Mark) -> None:
        end = self._start + self._span if hasattr(self, "_span") else None
        self._file = mark.name if isinstance(mark, FileMark) else None
        self._start = pack(mark)
        self._span = 0 if end is None else end - self._start

    @property
    def end_mark(self) -> yaml.Mark:
        return unpack(self._file, self._start + self._span)

    @end_mark.setter
    def end_mark(self, mark: yaml.Mark) -> None:
        self.ends_at(pack(mark))

    def ends_at(self, end: int) -> None:
        """Set the end mark to the packed place ``end``."""
        self._span = end - self._start


class Scalar(_Placed, ScalarNode):
    """A ``ScalarNode`` placed by numbers."""

    def __init__(
        self, tag: str, value: str, start: int, end: int, style: str | None, file: str | None
    ) -> None:  # PyYAML's __init__ would store marks: not called
        self.tag, self.value, self.style = tag, value, style
        self._file, self._start, self._span = file, start, end - start


class Sequence(_Placed, SequenceNode):
    """A ``SequenceNode`` placed by numbers; its end is set (``ends_at``) once composed."""

    def __init__(
        self, tag: str, value: list[Any], start: int, flow_style: bool | None, file: str | None
    ) -> None:
        self.tag, self.value, self.flow_style = tag, value, flow_style
        self._file, self._start, self._span = file, start, 0


class Mapping(_Placed, MappingNode):
    """A ``MappingNode`` placed by numbers; its end is set (``ends_at``) once composed."""

    def __init__(
        self, tag: str, value: list[Any], start: int, flow_style: bool | None, file: str | None
    ) -> None:
        self.tag, self.value, self.flow_style = tag, value, flow_style
        self._file, self._start, self._span = file, start, 0


def spot(node: yaml.Node) -> yaml.Node:
    """A node that keeps only ``node``'s place (its marks), not its value: what a diagnostic
    made after reading needs, without keeping the node's whole subtree alive."""
    if isinstance(node, _Placed):
        return Scalar("", "", node._start, node._start + node._span, None, node._file)
    start, end = node.start_mark, node.end_mark
    file = start.name if isinstance(start, FileMark) else None
    return Scalar("", "", pack(start), pack(end or start), None, file)


def marker(file: str | None, line: int | None, column: int | None) -> yaml.Node:
    """A node that only marks the place ``line:column`` (from 1; None: the first) of ``file``
    (None: the manifest's text), to report a problem there after the nodes are gone."""
    start = ((line or 1) - 1) * COLUMNS + (column or 1) - 1
    return Scalar("", "", start, start, None, file)


def position(node: yaml.Node) -> tuple[str | None, int, int]:
    """Where ``node`` starts: the catalog it is in (None: the manifest's text), its line and its
    column (both from 0), read without making a mark."""
    if isinstance(node, _Placed):
        line, column = divmod(node._start, COLUMNS)
        return node._file, line, column
    mark = node.start_mark
    return (mark.name if isinstance(mark, FileMark) else None), mark.line, mark.column
