"""YAML composed into nodes that keep their place, and the reader that checks them.

A manifest is composed (``yaml.compose``) rather than loaded, so that every value keeps its
``file:line:col``. A ``Reader`` turns nodes into checked Python values (a string, a boolean, a
mapping, the entries of a mapping) and collects every problem on the way, placed as
``file:line:col: item 3 (id "deer"), field "prompt"`` and kept in the order of the file; a
``Scope`` names the item and the field of a value, a ``Place`` records where one was written.
PyYAML's errors become one-line reasons here, and an unknown key gets its near miss ("did you
mean ...?") or the keys allowed. Nothing here knows what a manifest holds: that is
``runner.manifest.fields``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.config import read_regular_file
from runner.errors import ManifestError, Problem

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Place(NamedTuple):
    """Where a value is written: ``file:line:col`` and the field as the manifest names it."""

    position: str
    field: str | None  # None: the item itself


@dataclass(frozen=True)
class Scope:
    """Names the place of a value in problems: the item (if any) and the field."""

    label: str | None = None
    prefix: str = ""

    def at(self, name: str | None = None) -> str:
        parts = [self.label] if self.label else []
        if name is not None:
            parts.append(f"field {quote(self.prefix + name)}")
        return ", ".join(parts)

    def nested(self, name: str) -> Scope:
        return Scope(self.label, f"{self.prefix}{name}.")


class Reader:
    """Collects problems while turning YAML nodes into checked values."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._problems: list[tuple[int, int, Problem]] = []
        self._constructor = SafeConstructor()

    def problems(self, severity: str) -> list[Problem]:
        """The problems of one severity, in the order of their place in the file."""
        return [problem for problem in self.all_problems() if problem.severity == severity]

    def all_problems(self) -> list[Problem]:
        """Every problem, in the order of its place in the file."""
        return [problem for _, _, problem in sorted(self._problems, key=lambda entry: entry[:2])]

    @property
    def error_count(self) -> int:
        return sum(1 for _, _, problem in self._problems if problem.severity == "error")

    def position(self, node: Node) -> str:
        """``file:line:col`` of a node, counting from 1."""
        mark = node.start_mark
        return f"{self.file}:{mark.line + 1}:{mark.column + 1}"

    def where(self, node: Node, context: str) -> str:
        place = self.position(node)
        return f"{place}: {context}" if context else place

    def error(self, node: Node, context: str, message: str, severity: str = "error") -> None:
        mark = node.start_mark
        problem = Problem(self.where(node, context), message, severity)
        self._problems.append((mark.line, mark.column, problem))

    def warn(self, node: Node, context: str, message: str) -> None:
        self.error(node, context, message, severity="warning")

    def value(self, node: Node, context: str) -> tuple[bool, Any]:
        """The Python value of ``node``; (False, None) after reporting an unknown tag."""
        try:
            return True, self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.error(node, context, f"cannot read this value: {yaml_reason(exc)}")
            return False, None

    def entries(
        self,
        node: MappingNode,
        scope: Scope,
        allowed: Collection[str] | None,
        hints: Mapping[str, str],
    ) -> dict[str, tuple[Node, Node]]:
        """Key → (key node, value node) of a mapping; reports odd, repeated and unknown keys."""
        explicit = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
        try:
            self._constructor.flatten_mapping(node)  # resolve "<<: *anchor" merges
        except yaml.YAMLError as exc:
            self.error(node, scope.at(), f"cannot merge: {yaml_reason(exc)}")
            return {}
        out: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            ok, key = self.value(knode, scope.at())
            if not ok:
                continue
            if not isinstance(key, str):
                self.error(knode, scope.at(), f"keys must be strings, not {kind_of(knode, key)}")
            elif key in out and id(knode) in explicit and id(out[key][0]) in explicit:
                self.error(knode, scope.at(key), f"key {quote(key)} appears twice in this mapping")
            elif allowed is not None and key not in allowed:
                self.error(knode, scope.at(key), unknown_key(key, allowed, hints))
            else:
                out[key] = (knode, vnode)
        return out

    def string(self, node: Node, context: str) -> str | None:
        """A non-empty string, or None after reporting why not."""
        ok, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        if not ok:
            return None
        if isinstance(value, str) and isinstance(node, ScalarNode):
            if value.strip():
                return value
            self.error(node, context, "must not be empty")
            return None
        hint = ""
        if isinstance(node, ScalarNode) and value is not None:
            hint = f" (quote it to make it one: {quote(str(node.value))})"
        self.error(node, context, f"must be a string, not {kind_of(node, value)}{hint}")
        return None

    def boolean(self, node: Node, context: str) -> bool | None:
        """True or false, or None after reporting why not."""
        ok, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        if ok and isinstance(value, bool) and isinstance(node, ScalarNode):
            return value
        if ok:
            self.error(node, context, f"must be true or false, not {kind_of(node, value)}")
        return None

    def mapping(self, node: Node, context: str) -> MappingNode | None:
        """``node`` if it is a mapping, or None after reporting what it is instead."""
        if isinstance(node, MappingNode):
            return node
        _, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        self.error(node, context, f"must be a mapping, not {kind_of(node, value)}")
        return None


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
        raise ManifestError([Problem(file, "manifest file not found")]) from None
    except OSError as exc:
        raise ManifestError([Problem(file, f"cannot read the manifest: {exc.strerror}")]) from None
    if len(data) > MAX_MANIFEST_BYTES:
        message = (
            f"the manifest is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MB; "
            "split the batch into several manifests"
        )
        raise ManifestError([Problem(file, message)])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(file, f"not UTF-8 text ({exc.reason})")]) from None
    try:
        root, values = _compose_text(text)
    except LimitError as exc:
        raise ManifestError([Problem(_at(file, exc.mark), exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        where = _at(file, exc.problem_mark or exc.context_mark)
        raise ManifestError([Problem(where, f"invalid YAML: {yaml_reason(exc)}")]) from None
    except yaml.reader.ReaderError as exc:
        where = _at(file, _mark_at(text, exc.position))
        message = f"invalid YAML: the character #x{exc.character:04x} is not allowed in YAML"
        raise ManifestError([Problem(where, message)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, f"invalid YAML: {exc}")]) from None
    if root is None:
        raise ManifestError([Problem(file, 'the manifest is empty: it needs an "items" list')])
    return Document(root, values)


def _compose_text(text: str) -> tuple[Node | None, int]:
    """The root node of ``text`` (None if it holds no document) and its expanded size."""
    loader = _BoundedLoader(text)  # checks the characters first: ReaderError
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


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer stops at ``MAX_DEPTH`` and ``MAX_NODES`` (raising LimitError).

    PyYAML composes an alias as a second reference to its anchor's node: a small file of nested
    aliases composes quickly into a graph that every later walk expands. Each node is counted
    as it is composed and each alias as the size of what it refers to (known once that node is
    complete: an alias inside its own anchor would expand without end and is refused), so the
    count is the expanded document's and the limit is met at the place in the file that crosses
    it. The composer recurses once per level, so the depth is checked before it goes deeper.

    A C loader (``CSafeLoader``) composes in C without calling ``compose_node``: switching to
    it means applying the same two limits in a walk of the composed graph (``expanded_size``
    counts the same way), before anything else walks it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.values = 0  # the values composed so far, every alias expanded
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id of an anchored node → its expanded size

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
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
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(event, NodeEvent) and event.anchor is not None and node is not None:
            self._sizes[id(node)] = self.values - before
        return node

    def _count(self, size: int, mark: _Marked | None) -> None:
        self.values += size
        if self.values > MAX_NODES:
            raise LimitError(
                f"the manifest would hold more than {MAX_NODES:,} values with its aliases "
                "expanded (a YAML alias bomb?)",
                mark,
            )


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


def _at(file: str, mark: _Marked | None) -> str:
    return f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file


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


def unknown_key(key: str, allowed: Collection[str], hints: Mapping[str, str]) -> str:
    """The message for an unknown key, with the near miss or the keys allowed."""
    if key in hints:
        return f"unknown key {quote(key)}: {hints[key]}"
    close = difflib.get_close_matches(key, list(allowed), n=1)
    if close:
        return f"unknown key {quote(key)}; did you mean {quote(close[0])}?"
    return f"unknown key {quote(key)}; expected one of: {', '.join(allowed)}"


def kind_of(node: Node, value: Any) -> str:
    """What a YAML value is, for messages: "a list", "an integer", "null"..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if value is None:
        return "null (nothing)"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def quote(text: str) -> str:
    """``text`` in double quotes, escaped as JSON so odd characters stay visible."""
    return json.dumps(text, ensure_ascii=False)
