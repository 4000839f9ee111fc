"""Model schemas: fetched from ``GET /v1/model``, cached in the output directory, and every
item's input validated against the model's ``request_schema``.

The live schema is the authority: the runner's own table only knows which field takes the
image. Each model a batch uses is fetched once per check (the endpoint needs no key; the
request counts against the shared request window like any other). The answers are cached in
``OUTPUT/model-schemas.json`` with the time they were fetched, so ``--offline`` (or an API that
cannot be reached) can still check against the last schema seen.

Validation uses ``jsonschema`` and turns its errors into diagnostics about an input key (their
``subject``), with messages that read after the field's name ("must be one of 6, 10, not 7");
the preflight places each at the field the key comes from.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from runner.api.client import EachlabsClient
from runner.config import read_regular_file
from runner.diagnostics import Diagnostic, error, warning
from runner.errors import ApiError, NotFoundError
from runner.store.ledger import now_iso

CACHE_NAME = "model-schemas.json"
#: The largest schema cache read. A model's schema is a few KB and a batch uses a few models;
#: a cache past this is not one the runner wrote, and is ignored like a corrupt one.
MAX_CACHE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelSchema:
    """One model's ``request_schema`` and where it came from."""

    slug: str
    request_schema: Mapping[str, Any]
    fetched_at: str  # ISO 8601, UTC
    cached: bool  # True: read from the cache, not fetched in this check


@dataclass(frozen=True)
class Lookup:
    """What the schema lookups found: schemas by slug, slugs the API does not know, notes."""

    schemas: dict[str, ModelSchema]
    unknown: frozenset[str]
    notes: dict[str, list[Diagnostic]]  # slug → what its lookup found (not placed)
    cache_error: str | None = None  # why the cache could not be written


# --- fetch and cache ---------------------------------------------------------------------


async def look_up(
    client: EachlabsClient | None, slugs: Iterable[str], cache_path: Path, *, offline: bool
) -> Lookup:
    """The schema of every model in ``slugs``: fetched once each (unless offline), else cached.

    A slug the API answers 404 for is ``unknown``. A model that cannot be fetched (offline,
    network, server error) falls back to the cache, with a warning; without a cached schema its
    items are not checked against one, with a warning. Fetched schemas are written back to the
    cache. Never raises for an API problem.
    """
    cache = await anyio.to_thread.run_sync(read_cache, cache_path)
    schemas: dict[str, ModelSchema] = {}
    unknown: set[str] = set()
    notes: dict[str, list[Diagnostic]] = {}
    fetched = False
    for slug in sorted(set(slugs)):
        reason = "--offline"
        if client is not None and not offline:
            try:
                body = await client.model(slug)
            except NotFoundError:
                unknown.add(slug)
                continue
            except ApiError as exc:
                reason = f"fetching its schema failed ({exc})"
            else:
                request_schema = body.get("request_schema")
                if isinstance(request_schema, dict):
                    schemas[slug] = ModelSchema(slug, request_schema, now_iso(), cached=False)
                    fetched = True
                    continue
                reason = "the API's answer has no request_schema"
        if slug in cache:
            schemas[slug] = cache[slug]
            if reason != "--offline":
                message = (
                    f"model {_q(slug)}: {reason}; checked against the schema cached at "
                    f"{cache[slug].fetched_at}"
                )
                notes.setdefault(slug, []).append(warning(message))
        else:
            message = (
                f"model {_q(slug)}: {reason}, and no schema of it is cached in {cache_path}: "
                "inputs are not checked against the model's schema"
            )
            notes.setdefault(slug, []).append(warning(message))
    cache_error = None
    if fetched:
        merged = {**cache, **{s: m for s, m in schemas.items() if not m.cached}}
        try:
            await anyio.to_thread.run_sync(write_cache, cache_path, merged)
        except OSError as exc:
            cache_error = f"cannot write the schema cache {cache_path}: {exc.strerror}"
    return Lookup(schemas, frozenset(unknown), notes, cache_error)


def read_cache(path: Path) -> dict[str, ModelSchema]:
    """The cached schemas by slug; empty if the cache is missing or unreadable.

    Only a regular file of at most ``MAX_CACHE_BYTES`` is read (a FIFO or a device is not
    waited on); one larger, not JSON or nested past the parser's depth counts as unreadable.
    """
    try:
        raw = read_regular_file(path, MAX_CACHE_BYTES + 1)
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_CACHE_BYTES else None
    except (OSError, ValueError, RecursionError):
        return {}
    found: dict[str, ModelSchema] = {}
    entries = data.get("models") if isinstance(data, dict) else None
    for slug, entry in (entries or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("request_schema"), dict):
            found[slug] = ModelSchema(
                slug, entry["request_schema"], str(entry.get("fetched_at", "?")), cached=True
            )
    return found


def write_cache(path: Path, schemas: Mapping[str, ModelSchema]) -> None:
    """Replace the cache atomically with ``schemas``. Raises OSError."""
    data = {
        "models": {
            slug: {"fetched_at": s.fetched_at, "request_schema": s.request_schema}
            for slug, s in sorted(schemas.items())
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- validation (pure) ---------------------------------------------------------------------


def schema_problem(request_schema: Mapping[str, Any]) -> str | None:
    """Why ``request_schema`` is not a usable JSON Schema, or None."""
    try:
        _validator_class(request_schema).check_schema(request_schema)
    except SchemaError as exc:
        return f"the model's request_schema is not valid JSON Schema: {exc.message}"
    return None


def validate(request_schema: Mapping[str, Any], value: Mapping[str, Any]) -> list[Diagnostic]:
    """Every way ``value`` (a request ``input``) breaks ``request_schema``, plus a warning for
    each input the schema does not name (the server ignores those, so a typo goes unnoticed).

    Each diagnostic's ``subject`` is the input key it is about (None: the whole input); none
    has a place. The schema must have passed ``schema_problem``. To check many inputs against
    one schema, build its ``InputValidator`` once.
    """
    return InputValidator(request_schema).validate(value)


class InputValidator:
    """One model's ``request_schema``, ready to validate any number of inputs (``validate``):
    building a jsonschema validator costs more than using it, so a batch builds one per model.
    A schema of the usual shape is checked one property at a time (``_Split``).
    """

    def __init__(self, request_schema: Mapping[str, Any]) -> None:
        self.request_schema = request_schema
        self._validator = _validator_class(request_schema)(request_schema)
        properties = request_schema.get("properties")
        self._properties: Mapping[str, Any] = properties if isinstance(properties, dict) else {}
        self._closed = request_schema.get("additionalProperties", True) is False
        self._split = _Split.of(self._validator, request_schema)

    def validate(self, value: Mapping[str, Any]) -> list[Diagnostic]:
        """As the module's ``validate``, against this validator's schema."""
        if self._split is not None:
            errors = self._split.errors(value)
        else:
            errors = list(self._validator.iter_errors(dict(value)))
        return _validate(errors, self._properties, self._closed, value)


def _validate(
    errors: list[ValidationError],
    properties: Mapping[str, Any],
    closed: bool,
    value: Mapping[str, Any],
) -> list[Diagnostic]:
    if not errors and (not properties or all(key in properties for key in value)):
        return []  # most inputs: nothing to say
    found: list[Diagnostic] = []
    errors = sorted(errors, key=lambda e: list(e.absolute_path))
    mistyped = {
        err.absolute_path[0] for err in errors if err.validator == "type" and err.absolute_path
    }
    for err in errors:
        path = list(err.absolute_path)
        if path and path[0] in mistyped and err.validator != "type":
            continue  # "must be one of 6, 10, not "6"" adds nothing to "must be an integer"
        found += _translate(err)
    if properties:
        for key in value:
            if key not in properties:
                close = difflib.get_close_matches(key, list(properties), n=1)
                hint = f"did you mean {_q(close[0])}? " if close else ""
                if closed:
                    message = f"is not an input of this model; {hint}".rstrip(" ;")
                    found.append(error(message, subject=key))
                else:
                    message = f"is not an input of this model; {hint}the server ignores it"
                    found.append(warning(message, subject=key))
    unique: dict[tuple[str | None, str], Diagnostic] = {}
    for diagnostic in found:
        unique.setdefault((diagnostic.subject, diagnostic.message), diagnostic)
    return list(unique.values())


# --- one property at a time ----------------------------------------------------------------

#: Keywords that assert nothing: a schema of these and a ``type`` only checks the type.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
     "writeOnly"}
)  # fmt: skip
#: The keywords of a top-level schema that ``_Split`` checks apart from its properties (an
#: ``additionalProperties`` of true or false has no error of its own: ``validate`` reports
#: an unnamed input, with its near miss).
_TOP = _ANNOTATIONS | {"type", "required", "properties", "additionalProperties", "$schema"}
#: Left out of the top level's own validator: the properties (checked one at a time) and
#: ``additionalProperties`` (no error of its own, see ``_TOP``).
_PROPERTY_KEYWORDS = ("properties", "additionalProperties")
#: Keywords of a property's schema that look at the value alone (no schema inside them).
_FLAT = _ANNOTATIONS | {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern",
}  # fmt: skip
#: Values whose errors are remembered per property: equal ones of one type get the same
#: messages (not floats: 0.0 and -0.0 are equal but printed apart).
_REMEMBERED = (str, int, bool, type(None))
#: How many values' errors a ``_Split`` remembers: enough for the few values most catalogs
#: repeat (a duration, a resolution), bounded where every value differs (a prompt).
MAX_REMEMBERED = 4096


class _Split:
    """A schema of the usual shape (an object of named properties, some required) checked the
    way jsonschema checks it, one property at a time: the top level's own keywords
    (``type``, ``required``), then each property present, in the schema's order, as its
    ``properties`` keyword descends into it. A value that plainly has its property's one
    type skips jsonschema, and the errors of a repeated plain value are remembered, so that
    100,000 items do not each pay for a validator per property.

    The errors are jsonschema's own (``descend``, as ``properties`` calls it), so every
    message and path is the same as checking the whole input at once.
    """

    def __init__(self, validator: Any, top: Any, properties: dict[str, Any]) -> None:
        self._validator = validator
        self._top = top  # the top-level keywords, without ``properties``
        self._properties = properties
        self._types = {  # property → its one type, where that is all its schema checks
            key: _type_test(validator, sub["type"])
            for key, sub in properties.items()
            if isinstance(sub, dict) and set(sub) <= _ANNOTATIONS | {"type"}
            and isinstance(sub.get("type"), str)
        }  # fmt: skip
        wanted = top.schema.get("type")
        self._top_type = None if wanted is None else _type_test(validator, wanted)
        self._required: Sequence[str] = top.schema.get("required", ())
        self._flat = {
            key for key, sub in properties.items() if isinstance(sub, dict) and set(sub) <= _FLAT
        }
        self._remembered: dict[tuple[str, type, object], list[ValidationError]] = {}

    @classmethod
    def of(cls, validator: Any, schema: Mapping[str, Any]) -> _Split | None:
        """The split of ``schema`` (checked by ``validator``), or None if it is not of the
        usual shape: a keyword outside ``_TOP``, an ``additionalProperties`` schema, a
        ``type`` list, or a draft older than 4 (whose ``type`` may hold schemas)."""
        properties = schema.get("properties", {})
        if (
            type(validator) not in _SPLIT_DRAFTS
            or not set(schema) <= _TOP
            or not isinstance(schema.get("additionalProperties", True), bool)
            or not isinstance(schema.get("type", "object"), str)
            or not isinstance(properties, dict)
        ):
            return None
        top_schema = {k: v for k, v in schema.items() if k not in _PROPERTY_KEYWORDS}
        return cls(validator, validator.evolve(schema=top_schema), properties)

    def errors(self, value: Mapping[str, Any]) -> list[ValidationError]:
        """jsonschema's errors of ``value`` against the whole schema."""
        instance = dict(value)
        found = [] if self._top_fits(instance) else list(self._top.iter_errors(instance))
        for key, sub in self._properties.items():  # ``instance`` is an object
            if key not in instance:
                continue
            item = instance[key]
            fits = self._types.get(key)
            if fits is not None and fits(item):
                continue  # all its schema checks
            found += self._property_errors(key, sub, item)
        return found

    def _top_fits(self, instance: dict[str, Any]) -> bool:
        """Whether the top-level keywords (``type``, ``required``) have no error to give."""
        if self._top_type is not None and not self._top_type(instance):
            return False
        return all(name in instance for name in self._required)

    def _property_errors(self, key: str, sub: Any, item: Any) -> list[ValidationError]:
        remember = key in self._flat and type(item) in _REMEMBERED
        if remember:
            known = self._remembered.get((key, type(item), item))
            if known is not None:
                return known
        errors = list(self._validator.descend(item, sub, path=key, schema_path=key))
        if remember and len(self._remembered) < MAX_REMEMBERED:
            self._remembered[(key, type(item), item)] = errors
        return errors


def _type_test(validator: Any, name: str) -> Callable[[Any], bool]:
    """Whether a value is of the JSON type ``name`` as ``validator`` sees it: a plain
    ``isinstance`` where every draft from 4 on has one (``_PLAIN_TYPES``), else its checker."""
    plain = _PLAIN_TYPES.get(name)
    if plain is not None:
        return lambda value: isinstance(value, plain)
    return functools.partial(validator.is_type, type=name)


#: The JSON types whose standard check is an ``isinstance`` (``jsonschema._types``).
_PLAIN_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "object": dict,
    "array": list,
    "boolean": bool,
    "null": type(None),
}
#: The validators ``_Split`` stands in for: the standard ones from draft 4 on, whose type
#: checkers are the standard ones.
_SPLIT_DRAFTS = (
    jsonschema.Draft4Validator,
    jsonschema.Draft6Validator,
    jsonschema.Draft7Validator,
    jsonschema.Draft201909Validator,
    Draft202012Validator,
)


def _validator_class(schema: Mapping[str, Any]) -> type[Any]:
    return jsonschema.validators.validator_for(schema, default=Draft202012Validator)


def _translate(err: ValidationError) -> list[Diagnostic]:
    """One jsonschema error as errors about the input key it concerns."""
    path = list(err.absolute_path)
    key = str(path[0]) if path else None
    nested = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[1:])
    prefix = f"{nested.lstrip('.')}: " if nested else ""
    kind, rule, value = err.validator, cast(Any, err.validator_value), cast(Any, err.instance)
    if kind == "required" and isinstance(value, dict) and not path:
        return [
            error("is required by the model's schema", subject=name)
            for name in rule
            if name not in value
        ]
    if kind == "type":
        wanted = rule if isinstance(rule, list) else [rule]
        names = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in wanted)
        message = f"must be {names}, not {_describe(value)}"
    elif kind == "enum":
        message = f"must be one of {', '.join(_json(v) for v in rule)}, not {_json(value)}"
    elif kind == "const":
        message = f"must be {_json(rule)}, not {_json(value)}"
    elif kind in _BOUNDS:
        message = f"must be {_BOUNDS[kind]} {rule}, not {_json(value)}"
    elif kind in ("minLength", "maxLength"):
        least = "at least" if kind == "minLength" else "at most"
        message = f"must be {least} {rule} characters long, not {len(value)}"
    elif kind in ("minItems", "maxItems"):
        least = "at least" if kind == "minItems" else "at most"
        message = f"must list {least} {rule} entries, not {len(value)}"
    elif kind == "pattern":
        message = f"must match the pattern {_q(str(rule))}, not {_json(value)}"
    elif kind == "additionalProperties" and not path:
        return []  # reported with a near miss by ``validate``
    else:
        message = err.message
    return [error(prefix + message, subject=key)]


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}
_BOUNDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "greater than",
    "exclusiveMaximum": "less than",
}


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({_json(value)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_json(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null" if value is None else type(value).__name__


def _json(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
