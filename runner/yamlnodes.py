"""YAML composed into nodes that keep their place, and the reader that checks them.

A manifest is composed (``yaml.compose``) rather than loaded, so that every value keeps its
``file:line:col``. A ``Reader`` turns nodes into checked Python values (a string, a boolean, a
mapping, the entries of a mapping) and collects every problem on the way, placed as
``file:line:col: item 3 (id "deer"), field "prompt"`` and kept in the order of the file; a
``Scope`` names the item and the field of a value, a ``Place`` records where one was written.
PyYAML's errors become one-line reasons here, and an unknown key gets its near miss ("did you
mean ...?") or the keys allowed. Nothing here knows what a manifest holds: that is
``runner.manifestfields``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

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


def compose(path: Path, file: str) -> Node:
    """The YAML node tree of the manifest; raises ManifestError if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError([Problem(file, "manifest file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(file, f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ManifestError([Problem(file, f"cannot read the manifest: {exc.strerror}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise ManifestError([Problem(where, f"invalid YAML: {yaml_reason(exc)}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, f"invalid YAML: {exc}")]) from None
    if root is None:
        raise ManifestError([Problem(file, 'the manifest is empty: it needs an "items" list')])
    return root


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
