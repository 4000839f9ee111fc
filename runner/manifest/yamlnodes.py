"""The reader that turns YAML nodes into checked values, placing every diagnostic.

A ``Reader`` turns the nodes of a composed manifest (``runner.manifest.document``) into checked
Python values (a string, a boolean, a mapping, the entries of a mapping) and collects every
diagnostic on the way, each at its ``Place`` (``file:line:col: item 3 (id "deer"), field
"prompt"``) and kept in the order of the file; a ``Scope`` names the item and the field of a
value. An unknown key gets its near miss ("did you mean ...?") or the keys allowed. Nothing here
knows what a manifest holds: that is ``runner.manifest.fields``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.diagnostics import Code, Diagnostic, Place, Severity
from runner.manifest.document import yaml_reason
from runner.manifest.nodes import FileMark as FileMark  # where catalogs have always found it
from runner.manifest.nodes import position

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
#: The keys PyYAML's ``flatten_mapping`` acts on: merges (``<<``) and value keys (``=``). A
#: mapping without either is left as it is, and every one of its keys is explicit.
_FLATTENED = frozenset({_MERGE_TAG, "tag:yaml.org,2002:value"})


@dataclass(frozen=True)
class Scope:
    """Names the place of a value in diagnostics: the item (if any) and its field's prefix."""

    item: int | None = None  # the item's index, from 0
    item_id: str | None = None
    prefix: str = ""

    def at(self, name: str | None = None) -> Place:
        """The item and the field ``prefix + name`` (None: the item itself), without a
        position: the ``Reader`` adds the node's."""
        field = None if name is None else self.prefix + name
        return Place(item=self.item, item_id=self.item_id, field=field)

    def nested(self, name: str) -> Scope:
        return Scope(self.item, self.item_id, f"{self.prefix}{name}.")


class Reader:
    """Collects diagnostics while turning YAML nodes into checked values.

    ``context`` arguments are places without a position (``Scope.at``): each diagnostic gets
    the position of its node in ``file``.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self._found: list[Diagnostic] = []
        self._errors = 0  # how many of ``_found`` are errors: asked once per item
        self._constructor = SafeConstructor()
        #: Per-reading memos of the readers built on this one, by name (``imagesource`` keeps
        #: the image files it has hashed), so that work shared by many items is done once.
        self.memo: dict[str, object] = {}

    def diagnostics(self) -> list[Diagnostic]:
        """Every diagnostic, in the order of its place in the file."""
        return sorted(self._found, key=lambda diagnostic: diagnostic.place.sort_key())

    @property
    def error_count(self) -> int:
        """How many errors were reported so far: a running count, since it is asked after
        every item (a scan of every problem each time would be quadratic)."""
        return self._errors

    def place(self, node: Node, field: str | None = None) -> Place:
        """Where ``node`` is written (line and column from 1), as the field ``field``."""
        file, line, column = position(node)
        return Place(file or self.file, line + 1, column + 1, field=field)

    def where(self, node: Node) -> tuple[str, int, int]:
        """The file, line and column (from 1) of ``place(node)``, without making a Place."""
        file, line, column = position(node)
        return file or self.file, line + 1, column + 1

    def error(
        self,
        node: Node,
        context: Place,
        message: str,
        severity: Severity = Severity.ERROR,
        *,
        code: Code | None = None,
        subject: str | None = None,
    ) -> None:
        """Report ``message`` at ``node``, in ``context`` (its item and field)."""
        file, line, column = position(node)
        place = replace(context, file=file or self.file, line=line + 1, column=column + 1)
        self._found.append(Diagnostic(severity, message, place, code, subject))
        if severity is Severity.ERROR:
            self._errors += 1

    def warn(
        self,
        node: Node,
        context: Place,
        message: str,
        *,
        code: Code | None = None,
        subject: str | None = None,
    ) -> None:
        self.error(node, context, message, Severity.WARNING, code=code, subject=subject)

    def forget_values(self) -> None:
        """Drop the values ``value`` has made so far, and the nodes they were made of (PyYAML's
        constructor keeps each, so that an alias gets the very object its anchor made): called
        after each item, so that the nodes of the items read are not all kept."""
        self._constructor.constructed_objects.clear()

    def value(self, node: Node, context: Place) -> tuple[bool, Any]:
        """The Python value of ``node``; (False, None) after reporting an unknown tag."""
        ok, value = self.try_value(node)
        if not ok:
            self.cannot_read(node, context, value)
            return False, None
        return True, value

    def cannot_read(self, node: Node, context: Place, exc: yaml.YAMLError) -> None:
        """Report why ``node`` has no value (``try_value``'s error)."""
        self.error(node, context, f"cannot read this value: {yaml_reason(exc)}")

    def try_value(self, node: Node) -> tuple[bool, Any]:
        """(True, the Python value of ``node``), or (False, the YAMLError that says why it
        has none) for ``value`` or its caller to report: then the caller makes the context of
        its report only if there is one."""
        if node.tag == _STR_TAG and isinstance(node, ScalarNode):
            return True, node.value  # what the constructor makes of it, without its memo
        try:
            return True, self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            return False, exc

    def entries(
        self,
        node: MappingNode,
        scope: Scope,
        allowed: Collection[str] | None,
        hints: Mapping[str, str],
    ) -> dict[str, tuple[Node, Node]]:
        """Key → (key node, value node) of a mapping; reports odd, repeated and unknown keys."""
        explicit: set[int] | None = None  # None: every key is
        if any(k.tag in _FLATTENED for k, _ in node.value):
            explicit = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
            try:
                self._constructor.flatten_mapping(node)  # resolve "<<: *anchor" merges
            except yaml.YAMLError as exc:
                self.error(node, scope.at(), f"cannot merge: {yaml_reason(exc)}")
                return {}
        out: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            ok, key = self.try_value(knode)
            if not ok:
                self.cannot_read(knode, scope.at(), key)
                continue
            if not isinstance(key, str):
                self.error(knode, scope.at(), f"keys must be strings, not {kind_of(knode, key)}")
            elif key in out and (explicit is None or {id(knode), id(out[key][0])} <= explicit):
                self.error(knode, scope.at(key), f"key {quote(key)} appears twice in this mapping")
            elif allowed is not None and key not in allowed:
                self.error(knode, scope.at(key), unknown_key(key, allowed, hints))
            else:
                out[key] = (knode, vnode)
        return out

    def string(self, node: Node, context: Place) -> str | None:
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

    def boolean(self, node: Node, context: Place) -> bool | None:
        """True or false, or None after reporting why not."""
        ok, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        if ok and isinstance(value, bool) and isinstance(node, ScalarNode):
            return value
        if ok:
            self.error(node, context, f"must be true or false, not {kind_of(node, value)}")
        return None

    def mapping(self, node: Node, context: Place) -> MappingNode | None:
        """``node`` if it is a mapping, or None after reporting what it is instead."""
        if isinstance(node, MappingNode):
            return node
        _, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        self.error(node, context, f"must be a mapping, not {kind_of(node, value)}")
        return None


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
