"""The manifest file read and composed into YAML nodes, within limits.

A manifest is composed (``yaml.compose``) rather than loaded, so that every value keeps its
``file:line:col``. ``compose`` reads only a regular file of at most ``MAX_MANIFEST_BYTES``, and
composes at most ``MAX_NODES`` values (aliases expanded) nested at most ``MAX_DEPTH`` deep, so
that an alias bomb or a deep nest ends in one placed error, never a hang or a crash. PyYAML's
errors become one-line reasons here (``yaml_reason``). What the nodes hold is read by
``runner.manifest.yamlnodes``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    Event,
    MappingEndEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver, Resolver

from runner.config import read_regular_file
from runner.diagnostics import Place, error
from runner.errors import ManifestError
from runner.manifest import nodes
from runner.manifest.nodes import pack

#: The largest manifest file read. A catalog of 100,000 items with long prompts and inputs is a
#: few tens of MB; this leaves a wide margin for it while refusing a file that would only
#: exhaust memory. Reading stops one byte past it.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
#: The most values (YAML nodes) a manifest may hold with every alias expanded, and with
#: ``defaults.input`` counted once for every item it is merged into. Every later walk (the
#: reader, each item's key, schema validation) visits the expanded values, so this bounds the
#: whole check; a few kilobytes of nested aliases (a "billion laughs") would otherwise expand
#: to billions. 100,000 items of 100 values each fit (a typical item has about 15).
MAX_NODES = 10_000_000
#: The deepest nesting of lists and mappings in a manifest. A manifest is about five levels
#: deep (top, items, item, input, a value); 64 leaves room for nested model inputs and stays
#: far below the depth at which the recursive composer and constructor exhaust Python's stack
#: (about 300 levels at the default recursion limit).
MAX_DEPTH = 64


class Document(NamedTuple):
    """A composed manifest: its root node and how many values it holds, aliases expanded."""

    root: Node
    values: int


def compose(path: Path, file: str) -> Document:
    """The YAML node tree of the manifest; raises ManifestError if it cannot be read or parsed.

    Only a regular file is read (a FIFO or a device is refused before any read), at most
    ``MAX_MANIFEST_BYTES``; the document may hold at most ``MAX_NODES`` values with its aliases
    expanded and nest at most ``MAX_DEPTH`` levels.
    """
    try:
        data = read_regular_file(path, MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError([error("manifest file not found", Place(file))]) from None
    except OSError as exc:
        message = f"cannot read the manifest: {exc.strerror}"
        raise ManifestError([error(message, Place(file))]) from None
    if len(data) > MAX_MANIFEST_BYTES:
        message = (
            f"the manifest is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MB; "
            "split the batch into several manifests"
        )
        raise ManifestError([error(message, Place(file))])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError([error(f"not UTF-8 text ({exc.reason})", Place(file))]) from None
    try:
        root, values = _compose_text(text)
    except LimitError as exc:
        raise ManifestError([error(exc.message, _at(file, exc.mark))]) from None
    except yaml.MarkedYAMLError as exc:
        place = _at(file, exc.problem_mark or exc.context_mark)
        raise ManifestError([error(f"invalid YAML: {yaml_reason(exc)}", place)]) from None
    except yaml.reader.ReaderError as exc:
        place = _at(file, _mark_at(text, exc.position))
        message = f"invalid YAML: the character #x{exc.character:04x} is not allowed in YAML"
        raise ManifestError([error(message, place)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([error(f"invalid YAML: {exc}", Place(file))]) from None
    if root is None:
        message = 'the manifest is empty: it needs an "items" list'
        raise ManifestError([error(message, Place(file))])
    return Document(root, values)


def _compose_text(text: str) -> tuple[Node | None, int]:
    """The root node of ``text`` (None if it holds no document) and its expanded size.

    libyaml parses when it is installed (ten times faster than PyYAML's Python scanner, with
    the same marks); a text it refuses is composed again by PyYAML's parser, so that every
    error reads and is placed exactly as PyYAML reports it (libyaml words some differently and
    places a bad character by its byte offset).
    """
    if _FastLoader is not None:
        try:
            return _compose_with(_FastLoader(text))
        except yaml.YAMLError:
            pass
    return _compose_with(_BoundedLoader(text))  # checks the characters first: ReaderError


def _compose_with(loader: _Bounded) -> tuple[Node | None, int]:
    try:
        return loader.get_single_node(), loader.values
    finally:
        loader.dispose()


class _Marked(Protocol):
    """A place in the YAML text (PyYAML's marks, from its Python or its C parser)."""

    @property
    def line(self) -> int: ...  # from 0

    @property
    def column(self) -> int: ...  # from 0


class LimitError(yaml.YAMLError):
    """Valid YAML refused for its size: nested too deeply, too many values once expanded, or
    an alias inside the node it refers to. ``message`` says which, ``mark`` where."""

    def __init__(self, message: str, mark: _Marked | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Bounded(Composer):
    """A composer that stops at ``MAX_DEPTH`` and ``MAX_NODES`` (raising LimitError), over the
    events of either parser (PyYAML's ``_BoundedLoader`` or libyaml's ``_FastLoader``).

    PyYAML composes an alias as a second reference to its anchor's node: a small file of nested
    aliases composes quickly into a graph that every later walk expands. Each node is counted
    as it is composed and each alias as the size of what it refers to (known once that node is
    complete: an alias inside its own anchor would expand without end and is refused), so the
    count is the expanded document's and the limit is met at the place in the file that crosses
    it. The composer recurses once per level, so the depth is checked before it goes deeper.

    libyaml's own loader (``CSafeLoader``) composes in C, recursively and without limits:
    only its parser is used, and composing stays here.
    """

    peek_event: Callable[[], Event]  # the parser's, PyYAML's or libyaml's
    get_event: Callable[[], Any]
    check_event: Callable[..., bool]
    dispose: Callable[[], None]
    resolve: Callable[..., str]  # the resolver's
    yaml_path_resolvers: dict[Any, Any]
    yaml_implicit_resolvers: dict[Any, Any]

    def _start_counting(self) -> None:
        self.values = 0  # the values composed so far, every alias expanded
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id of an anchored node → its expanded size

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is the composer's own error
                size = self._sizes.get(id(target))
                if size is None:
                    raise LimitError(
                        f"the alias *{event.anchor} is inside the node it refers to: "
                        "the manifest would never end",
                        event.start_mark,
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise LimitError(
                f"the manifest nests more than {MAX_DEPTH} levels deep here", event.start_mark
            )
        before = self.values
        self._count(1, event.start_mark)
        if type(event) is ScalarEvent and event.anchor is None and not self.yaml_path_resolvers:
            return self._scalar(self.get_event())  # most values: PyYAML's steps, less the calls
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(event, NodeEvent) and event.anchor is not None and node is not None:
            self._sizes[id(node)] = self.values - before
        return node

    # PyYAML's own three, making nodes that keep their marks as numbers (``nodes``)

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        node = self._scalar(self.get_event())
        if anchor is not None:
            self.anchors[anchor] = node
        return node

    def _scalar(self, event: Any) -> nodes.Scalar:
        """The node of a scalar event taken from the parser; its tag is what ``resolve`` gives
        (asked only if an implicit resolver could match the value's first character)."""
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            table = self.yaml_implicit_resolvers
            if self.yaml_path_resolvers or (
                event.implicit[0] and (value[:1] in table or None in table)
            ):
                tag = self.resolve(ScalarNode, value, event.implicit)
            else:
                tag = BaseResolver.DEFAULT_SCALAR_TAG  # what ``resolve`` gives: none applies
        first, last = event.start_mark, event.end_mark  # packed as ``nodes.pack`` does
        start = first.line * nodes.COLUMNS + first.column
        end = last.line * nodes.COLUMNS + last.column
        return nodes.Scalar(tag, value, start, end, event.style, None)

    def compose_sequence_node(self, anchor: Any) -> SequenceNode:
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start_event.implicit)
        values: list[Node | None] = []
        start = pack(start_event.start_mark)
        node = nodes.Sequence(tag, values, start, start_event.flow_style, None)
        if anchor is not None:
            self.anchors[anchor] = node
        plain = self._plain_scalars()
        while type(event := self.peek_event()) is not SequenceEndEvent:
            if plain and type(event) is ScalarEvent and event.anchor is None:
                self._count(1, event.start_mark)
                values.append(self._scalar(self.get_event()))
            else:
                values.append(self.compose_node(node, len(values)))
        node.ends_at(pack(self.get_event().end_mark))
        return node

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        start_event = self.get_event()
        tag = start_event.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start_event.implicit)
        pairs: list[tuple[Node | None, Node | None]] = []
        start = pack(start_event.start_mark)
        node = nodes.Mapping(tag, pairs, start, start_event.flow_style, None)
        if anchor is not None:
            self.anchors[anchor] = node
        plain = self._plain_scalars()
        while type(event := self.peek_event()) is not MappingEndEvent:
            key: Node | None
            if plain and type(event) is ScalarEvent and event.anchor is None:
                self._count(1, event.start_mark)
                key = self._scalar(self.get_event())
                key.value = sys.intern(key.value)  # the same few keys in every item: kept once
            else:
                key = self.compose_node(node, None)
            event = self.peek_event()
            if plain and type(event) is ScalarEvent and event.anchor is None:
                self._count(1, event.start_mark)
                pairs.append((key, self._scalar(self.get_event())))
            else:
                pairs.append((key, self.compose_node(node, key)))
        node.ends_at(pack(self.get_event().end_mark))
        return node

    def _plain_scalars(self) -> bool:
        """Whether a collection's scalars without an anchor are made as ``compose_node`` would
        make them at once (not too deep, no path resolvers): then the collection makes them
        itself (counted, ``_scalar``), without the calls."""
        return self._depth < MAX_DEPTH and not self.yaml_path_resolvers

    def _count(self, size: int, mark: _Marked | None) -> None:
        self.values += size
        if self.values > MAX_NODES:
            raise LimitError(
                f"the manifest would hold more than {MAX_NODES:,} values with its aliases "
                "expanded (a YAML alias bomb?)",
                mark,
            )


class _BoundedLoader(_Bounded, yaml.SafeLoader):
    """PyYAML's safe loader, in Python, with the limits of ``_Bounded``."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start_counting()


def _fast_loader() -> Callable[[str], _Bounded] | None:
    """A loader that parses with libyaml and composes with ``_Bounded``; None without libyaml.

    ``Composer`` comes before ``CParser`` in the bases so that composing (and its limits) is
    Python's, while the events, and their marks, come from libyaml.
    """
    try:
        from yaml._yaml import CParser  # libyaml is optional
    except ImportError:
        return None

    class FastLoader(_Bounded, CParser, SafeConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)
            self._start_counting()

    return FastLoader


_FastLoader = _fast_loader()


def expanded_size(node: Node) -> int:
    """How many values ``node`` holds with every alias expanded (itself included).

    Counts as the composer does; shared nodes are counted once per reference but walked once.
    """
    sizes: dict[int, int] = {}

    def size(current: Node) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        total = 1
        if isinstance(current, MappingNode):
            total += sum(size(key) + size(value) for key, value in current.value)
        elif isinstance(current, SequenceNode):
            total += sum(size(value) for value in current.value)
        sizes[id(current)] = total
        return total

    return size(node)


def _at(file: str, mark: _Marked | None) -> Place:
    """The place of a PyYAML mark (counting from 0) in ``file``, or the file if none."""
    return Place(file, mark.line + 1, mark.column + 1) if mark else Place(file)


class _Position(NamedTuple):
    line: int  # from 0
    column: int  # from 0


def _mark_at(text: str, position: int) -> _Position:
    """The line and column of a character index in ``text`` (PyYAML's ReaderError gives only
    the index)."""
    line = text.count("\n", 0, position)
    return _Position(line, position - (text.rfind("\n", 0, position) + 1))


def yaml_reason(exc: yaml.YAMLError) -> str:
    """A one-line reason from a PyYAML error, without its "<unicode string>" excerpt."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)
    context = exc.context or ""
    if exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
        mark = exc.context_mark
        context += f" (line {mark.line + 1}, column {mark.column + 1})"
    return ": ".join(part for part in (context, exc.problem or "") if part) or "syntax error"
