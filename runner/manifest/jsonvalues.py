"""The JSON values a manifest carries as written: an item's ``input`` (extra model inputs, sent
in the create's body) and its ``meta`` (the user's own data, passed to the results untouched).
Both are mappings of JSON values, each bad value reported at its own place.
"""

from __future__ import annotations

import math
from typing import Any

from yaml.nodes import MappingNode, Node

from runner import models
from runner.manifest.yamlnodes import Reader, Scope

#: Input keys the manifest sets from its own fields; ``input`` may not repeat them.
RESERVED_INPUT = frozenset(
    {"prompt", "prompt_optimizer"} | {m.image_field for m in models.MODELS.values()}
)
#: How deep a value may nest (deeper: a YAML alias that refers to itself, or a mistake).
MAX_DEPTH = 32


def read_input(reader: Reader, node: Node, scope: Scope, places: dict[str, Node]) -> dict[str, Any]:
    """An ``input`` mapping of extra model inputs: JSON values, none of the reserved keys.

    The node of each value goes into ``places`` as ``input.<key>``: where it is written.
    """
    return _json_mapping(reader, node, scope, "input", places) or {}


def read_meta(reader: Reader, node: Node, scope: Scope) -> dict[str, Any] | None:
    """An item's ``meta``: any mapping of JSON values (strings, numbers, booleans, null, lists
    and mappings), kept as written for the results; None if it is not a mapping (reported)."""
    return _json_mapping(reader, node, scope, "meta", None)


def _json_mapping(
    reader: Reader, node: Node, scope: Scope, name: str, places: dict[str, Node] | None
) -> dict[str, Any] | None:
    mapping = node if isinstance(node, MappingNode) else reader.mapping(node, scope.at(name))
    if mapping is None:
        return None
    inner = scope.nested(name)
    out: dict[str, Any] = {}
    for key, (knode, vnode) in reader.entries(mapping, inner, None, {}).items():
        if name == "input" and key in RESERVED_INPUT:
            source = "image" if key not in ("prompt", "prompt_optimizer") else key
            message = f'comes from the item\'s "{source}" field; remove it from "input"'
            reader.error(knode, inner.at(key), message)
            continue
        ok, value = reader.try_value(vnode)  # the context is made only for a report
        if not ok:
            reader.cannot_read(vnode, inner.at(key), value)
            continue
        problem = json_problem(value)
        if problem:
            reader.error(vnode, inner.at(key), problem)
        else:
            out[key] = value
            if places is not None:
                places[f"{name}.{key}"] = vnode
    return out


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot travel as JSON, or None if it can."""
    if depth > MAX_DEPTH:
        return "is nested too deeply (or refers to itself)"
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, list):
        return next((p for v in value if (p := json_problem(v, depth + 1))), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "mapping keys must be strings"
        return next((p for v in value.values() if (p := json_problem(v, depth + 1))), None)
    return f"holds a {type(value).__name__}, which JSON cannot carry; quote it"
