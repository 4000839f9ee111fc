"""Read a YAML manifest into validated, immutable items.

A manifest names a batch, a default model and a list of items, each an image and a prompt::

    batch: example                 # optional; default: the file name without extension
    model: minimax-i2v-01          # default model of every item
    defaults: {prompt_optimizer: true, input: {}}
    items:
      - id: deer                   # optional; default: the image's file name, slugified
        image: images/deer.png     # a path relative to the manifest, or an http(s) URL
        prompt: a deer slowly walks through the misty forest
        model: minimax-i2v-01-director     # optional, per item
        prompt_optimizer: false            # optional, per item
        input: {extra_model_field: 1}      # optional; merged over defaults.input

Ids become file names: 1-100 of ``A-Za-z0-9._-``, starting with a letter or digit, unique
regardless of letter case. A derived id that is taken gets ``-<position>`` appended. Prompts are
stripped of surrounding whitespace. ``prompt_optimizer`` is sent only when the item or
``defaults`` sets it. YAML merge keys (``<<: *anchor``) work.

A top-level ``price_usd`` overrides the built-in price per run (see ``runner.cost``)::

    price_usd: 0.43                          # every model of the batch
    price_usd: {minimax-i2v-01: 0.43, my-model: 0.60}   # per model; others keep the table's

``read_manifest`` checks the structure in one pass and returns every problem, each placed as
``file:line:col: item 3 (id "deer"), field "prompt"``, with the items read so far (each keeps
the place of its fields, so later checks report the same way); ``load_manifest`` raises one
``ManifestError`` listing every error. The YAML is composed into nodes rather than loaded, so
that every value keeps its position. Apart from reading the manifest and hashing local images,
nothing here does I/O: image contents, prompts and model schemas are checked by
``runner.preflight``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import stat
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner import cost, models
from runner.errors import ManifestError, Problem
from runner.jobs import LOCAL_IMAGE_PREFIX, item_key

#: Ids and batch names become file and directory names: no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_NAME = 100

TOP_KEYS = ("batch", "model", "price_usd", "defaults", "items")
DEFAULTS_KEYS = ("prompt_optimizer", "input")
ITEM_KEYS = ("id", "image", "prompt", "model", "prompt_optimizer", "input")

#: Input keys the manifest sets from its own fields; ``input`` may not repeat them.
RESERVED_INPUT = frozenset(
    {"prompt", "prompt_optimizer"} | {m.image_field for m in models.MODELS.values()}
)

#: Image formats the API documents (JPEG, PNG, WebP, GIF); other suffixes get a warning
#: (ending in SUFFIX_WARNING), which the preflight drops once it has read the content.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
SUFFIX_WARNING = "the API takes JPEG, PNG, WebP or GIF images"

_HINTS: dict[str, str] = {
    "first_frame_image": 'the image goes in "image"',
    "image_url": 'the image goes in "image"',
    "price_usd": 'set prices at the top level: "price_usd: {model: price}"',
}
_TOP_HINTS = {
    "prompt_optimizer": 'put it under "defaults" or on each item',
    "input": 'put it under "defaults" or on each item',
    "price": 'the price per run is "price_usd"',
}
_DEFAULTS_HINTS = {"model": 'set the default model with the top-level "model"'}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_MAX_DEPTH = 32


class Place(NamedTuple):
    """Where a value is written: ``file:line:col`` and the field as the manifest names it."""

    position: str
    field: str | None  # None: the item itself


@dataclass(frozen=True)
class Item:
    """One video to render: a validated manifest item with its stable key."""

    id: str  # unique, safe as a file name
    index: int  # 0-based position in the manifest
    line: int  # 1-based line of the item in the YAML
    model: str
    prompt: str
    image: str  # as written in the manifest
    image_path: Path | None  # resolved absolute path of a local image, else None
    image_url: str | None  # the http(s) URL for a URL image, else None
    image_sha256: str | None  # sha256 hex of a local image's bytes, else None
    input: Mapping[str, Any] = field(hash=False)  # the model input without the image field
    key: str  # jobs.item_key of the model and the input with the image (URL or sha256:<hex>)
    #: The estimated price of one run: the manifest's ``price_usd``, else the built-in table,
    #: else ``cost.DEFAULT_PRICE_USD`` (with a warning). The charge is ``metrics.cost``.
    price_usd: float = cost.DEFAULT_PRICE_USD
    #: Where each field was written: "item", "id", "image", "prompt", "model",
    #: "prompt_optimizer" and "input.<key>" (the item's own or the defaults').
    places: Mapping[str, Place] = field(default_factory=dict, hash=False, compare=False, repr=False)

    @property
    def label(self) -> str:
        """How problems name this item: ``item 3 (id "deer")``."""
        return _label(self.index, self.id)

    def where(self, name: str | None = None) -> str:
        """``file:line:col: item 3 (id "deer"), field "prompt"`` for one of this item's fields.

        ``name`` is a key of ``places``; a field without a place (a default) names the item.
        """
        place = self.places.get(name or "item") or self.places.get("item")
        if place is None:
            return self.label
        if place.field is None:
            return f"{place.position}: {self.label}"
        return f"{place.position}: {self.label}, field {_q(place.field)}"

    def where_input(self, key: str | None) -> str:
        """Where the request input ``key`` comes from (the prompt, the image, an input value)."""
        if key is None:
            return self.where()
        if key == self.image_field:
            return self.where("image")
        if key in ("prompt", "prompt_optimizer"):
            return self.where(key)
        return self.where(f"input.{key}")

    @property
    def image_field(self) -> str:
        """The input field that carries the image for this item's model."""
        return models.image_field(self.model)

    def request_input(self, image_url: str) -> dict[str, Any]:
        """The ``input`` of the create request: this item's input plus the image URL."""
        body = copy.deepcopy(dict(self.input))
        body[self.image_field] = image_url
        return body


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: its items in order and any warnings (never errors)."""

    path: Path
    batch: str
    items: tuple[Item, ...]
    warnings: tuple[Problem, ...]


@dataclass(frozen=True)
class ManifestReading:
    """Everything read from a manifest, problems included: what ``read_manifest`` returns."""

    path: Path  # as given
    batch: str
    items: tuple[Item, ...]  # every item read; a flawed item has placeholders for its bad fields
    flawed: frozenset[int]  # indexes of the items with an error in one of their own fields
    problems: tuple[Problem, ...]  # errors and warnings, in the order of their place in the file
    prices: cost.PriceOverride = None
    model_place: str | None = None  # ``file:line:col`` of the top-level ``model``, if written

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def manifest(self) -> Manifest:
        """The runnable Manifest; raises ManifestError listing every error if there is one."""
        if self.errors:
            raise ManifestError(self.errors)
        return Manifest(self.path.resolve(), self.batch, self.items, tuple(self.warnings))


def read_manifest(path: Path) -> ManifestReading:
    """Read and check the manifest at ``path`` in one pass; hash its local images.

    Never raises for a problem of the manifest: every one is in ``problems`` (unreadable file,
    YAML syntax, unknown keys, wrong types, unsafe or duplicate ids, missing images, bad URLs
    are errors; two items with the same key and an unknown model are warnings). Problems name
    the file as ``path`` was given.
    """
    reader = _Reader(str(path))
    fallback = _slug(path.stem) or "batch"
    try:
        root = _compose(path, reader.file)
    except ManifestError as exc:
        return ManifestReading(path, fallback, (), frozenset(), tuple(exc.problems))
    top = _read_top(reader, root, path)
    fields: list[_Fields] = []
    flawed: set[int] = set()
    for index, node in _item_nodes(reader, top):
        before = reader.error_count
        fields.append(_read_item(reader, node, index, top))
        if reader.error_count > before:
            flawed.add(index)
    ids = _assign_ids(reader, fields)
    items = tuple(_build_item(f, item_id, top) for f, item_id in zip(fields, ids, strict=True))
    _warn_same_keys(reader, fields, items, flawed)
    _warn_unused_prices(reader, top, items)
    model_place = top.places["model"].position if "model" in top.places else None
    return ManifestReading(
        path,
        top.batch,
        items,
        frozenset(flawed),
        tuple(reader.all_problems()),
        top.prices,
        model_place,
    )


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest at ``path``; hash its local images.

    Raises ManifestError listing every error found (see ``read_manifest``). Problems that do
    not stop a run are ``Manifest.warnings``. The returned ``Manifest.path`` is absolute.
    """
    return read_manifest(path).manifest()


# --- reading nodes -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """Names the place of a value in problems: the item (if any) and the field."""

    label: str | None = None
    prefix: str = ""

    def at(self, name: str | None = None) -> str:
        parts = [self.label] if self.label else []
        if name is not None:
            parts.append(f"field {_q(self.prefix + name)}")
        return ", ".join(parts)

    def nested(self, name: str) -> _Scope:
        return _Scope(self.label, f"{self.prefix}{name}.")


class _Reader:
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
            self.error(node, context, f"cannot read this value: {_yaml_reason(exc)}")
            return False, None

    def entries(
        self,
        node: MappingNode,
        scope: _Scope,
        allowed: Collection[str] | None,
        hints: Mapping[str, str],
    ) -> dict[str, tuple[Node, Node]]:
        """Key → (key node, value node) of a mapping; reports odd, repeated and unknown keys."""
        explicit = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
        try:
            self._constructor.flatten_mapping(node)  # resolve "<<: *anchor" merges
        except yaml.YAMLError as exc:
            self.error(node, scope.at(), f"cannot merge: {_yaml_reason(exc)}")
            return {}
        out: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            ok, key = self.value(knode, scope.at())
            if not ok:
                continue
            if not isinstance(key, str):
                self.error(knode, scope.at(), f"keys must be strings, not {_kind(knode, key)}")
            elif key in out and id(knode) in explicit and id(out[key][0]) in explicit:
                self.error(knode, scope.at(key), f"key {_q(key)} appears twice in this mapping")
            elif allowed is not None and key not in allowed:
                self.error(knode, scope.at(key), _unknown_key(key, allowed, hints))
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
            hint = f" (quote it to make it one: {_q(str(node.value))})"
        self.error(node, context, f"must be a string, not {_kind(node, value)}{hint}")
        return None

    def boolean(self, node: Node, context: str) -> bool | None:
        """True or false, or None after reporting why not."""
        ok, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        if ok and isinstance(value, bool) and isinstance(node, ScalarNode):
            return value
        if ok:
            self.error(node, context, f"must be true or false, not {_kind(node, value)}")
        return None

    def mapping(self, node: Node, context: str) -> MappingNode | None:
        """``node`` if it is a mapping, or None after reporting what it is instead."""
        if isinstance(node, MappingNode):
            return node
        _, value = self.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        self.error(node, context, f"must be a mapping, not {_kind(node, value)}")
        return None


def _compose(path: Path, file: str) -> Node:
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
        raise ManifestError([Problem(where, f"invalid YAML: {_yaml_reason(exc)}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, f"invalid YAML: {exc}")]) from None
    if root is None:
        raise ManifestError([Problem(file, 'the manifest is empty: it needs an "items" list')])
    return root


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """A one-line reason from a PyYAML error, without its "<unicode string>" excerpt."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)
    context = exc.context or ""
    if exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
        mark = exc.context_mark
        context += f" (line {mark.line + 1}, column {mark.column + 1})"
    return ": ".join(part for part in (context, exc.problem or "") if part) or "syntax error"


# --- the top level -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Top:
    batch: str
    model: str
    prompt_optimizer: bool | None
    input: dict[str, Any]
    base_dir: Path
    items: list[Node]
    prices: cost.PriceOverride = None
    price_nodes: Mapping[str, Node] = field(default_factory=dict)  # model slug → its key node
    places: Mapping[str, Place] = field(default_factory=dict)  # "model", "prompt_optimizer", ...


def _read_top(reader: _Reader, root: Node, path: Path) -> _Top:
    """The batch, defaults and item nodes of the manifest's top-level mapping."""
    batch = _slug(path.stem) or "batch"
    base_dir = path.absolute().parent
    mapping = reader.mapping(root, "the manifest")
    if mapping is None:
        return _Top(batch, models.DEFAULT_MODEL, None, {}, base_dir, [])
    found = reader.entries(mapping, _Scope(), TOP_KEYS, _TOP_HINTS)
    if "batch" in found:
        batch = _safe_name(reader, found["batch"][1], _Scope().at("batch")) or batch
    prices: cost.PriceOverride = None
    price_nodes: dict[str, Node] = {}
    if "price_usd" in found:
        prices, price_nodes = _read_prices(reader, found["price_usd"][1])
    places: dict[str, Place] = {}
    model = _read_model(reader, found, _Scope(), prices) or models.DEFAULT_MODEL
    if "model" in found:
        places["model"] = Place(reader.position(found["model"][1]), "model")
    optimizer: bool | None = None
    extra: dict[str, Any] = {}
    if "defaults" in found:
        optimizer, extra = _read_defaults(reader, found["defaults"][1], places)
    items = _read_item_list(reader, mapping, found.get("items"))
    return _Top(batch, model, optimizer, extra, base_dir, items, prices, price_nodes, places)


def _read_defaults(
    reader: _Reader, node: Node, places: dict[str, Place]
) -> tuple[bool | None, dict[str, Any]]:
    """``defaults.prompt_optimizer`` and ``defaults.input``; their places go into ``places``."""
    scope = _Scope(prefix="defaults.")
    mapping = reader.mapping(node, _Scope().at("defaults"))
    if mapping is None:
        return None, {}
    found = reader.entries(mapping, scope, DEFAULTS_KEYS, _DEFAULTS_HINTS)
    optimizer = None
    if "prompt_optimizer" in found:
        value_node = found["prompt_optimizer"][1]
        optimizer = reader.boolean(value_node, scope.at("prompt_optimizer"))
        places["prompt_optimizer"] = Place(reader.position(value_node), "defaults.prompt_optimizer")
    extra = _read_input(reader, found["input"][1], scope, places) if "input" in found else {}
    return optimizer, extra


def _read_prices(reader: _Reader, node: Node) -> tuple[cost.PriceOverride, dict[str, Node]]:
    """``price_usd``: one price for every model, or a mapping of model slug to price."""
    context = _Scope().at("price_usd")
    if isinstance(node, MappingNode):
        scope = _Scope(prefix="price_usd.")
        prices: dict[str, float] = {}
        nodes: dict[str, Node] = {}
        for slug, (knode, vnode) in reader.entries(node, scope, None, {}).items():
            price = _price(reader, vnode, scope.at(slug))
            if price is not None:
                prices[slug], nodes[slug] = price, knode
        return prices, nodes
    if isinstance(node, ScalarNode):
        return _price(reader, node, context), {}
    reader.error(
        node, context, "must be a price in USD, or a mapping of model slug to price, not a list"
    )
    return None, {}


def _price(reader: _Reader, node: Node, context: str) -> float | None:
    """A price in USD: a finite number of at least 0; None after reporting why not."""
    ok, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
    if not ok:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
        reader.error(node, context, f"must be a price of at least 0 USD, not {value}")
        return None
    reader.error(node, context, f"must be a price in USD (a number), not {_kind(node, value)}")
    return None


def _read_item_list(
    reader: _Reader, root: MappingNode, entry: tuple[Node, Node] | None
) -> list[Node]:
    """The item nodes; reports a missing, non-list or empty ``items``."""
    context = _Scope().at("items")
    if entry is None:
        reader.error(root, context, "is required: a list of items, each with an image and a prompt")
        return []
    node = entry[1]
    if not isinstance(node, SequenceNode):
        _, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        reader.error(node, context, f"must be a list of items, not {_kind(node, value)}")
        return []
    if not node.value:
        reader.error(node, context, "must list at least one item")
    return list(node.value)


def _read_model(
    reader: _Reader,
    found: Mapping[str, tuple[Node, Node]],
    scope: _Scope,
    prices: cost.PriceOverride,
) -> str | None:
    """The ``model`` slug if given and a string; warns about a slug this runner does not know
    (and, unless ``price_usd`` names it, that its price is a guess)."""
    if "model" not in found:
        return None
    node = found["model"][1]
    slug = reader.string(node, scope.at("model"))
    if slug is not None and slug not in models.MODELS:
        close = difflib.get_close_matches(slug, list(models.MODELS), n=1)
        hint = f"did you mean {_q(close[0])}? " if close else ""
        message = f"unknown model {_q(slug)}; {hint}the server decides"
        if not cost.price_of(slug, prices)[1]:
            message += (
                f"; its price is estimated at {cost.usd(cost.DEFAULT_PRICE_USD)} a run"
                " (set price_usd to change that)"
            )
        reader.warn(node, scope.at("model"), message)
    return slug


# --- items -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    """One item's checked fields, before ids and keys. After an error, placeholders stand in."""

    index: int
    node: Node
    explicit_id: str | None
    id_node: Node | None
    model: str
    prompt: str
    image: str
    image_path: Path | None
    image_url: str | None
    image_sha256: str | None
    input: dict[str, Any]
    places: dict[str, Place] = field(default_factory=dict)

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1


def _item_nodes(reader: _Reader, top: _Top) -> list[tuple[int, MappingNode]]:
    """(index, node) of the entries of ``items`` that are mappings; reports the others."""
    nodes = []
    for index, node in enumerate(top.items):
        if isinstance(node, MappingNode):
            nodes.append((index, node))
            continue
        context = _label(index)
        _, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        what = _kind(node, value)
        reader.error(node, context, f"must be a mapping with an image and a prompt, not {what}")
    return nodes


def _read_item(reader: _Reader, node: MappingNode, index: int, top: _Top) -> _Fields:
    """Check one item's fields against the top level's defaults."""
    scope = _Scope(_label(index, _peek_id(node)))
    found = reader.entries(node, scope, ITEM_KEYS, _HINTS)
    places = {**top.places, "item": Place(reader.position(node), None)}
    for name in ("id", "image", "prompt", "model", "prompt_optimizer"):
        if name in found:
            places[name] = Place(reader.position(found[name][1]), name)
    explicit_id, id_node = None, None
    if "id" in found:
        id_node = found["id"][1]
        explicit_id = _safe_name(reader, id_node, scope.at("id"))
    model = _read_model(reader, found, scope, top.prices) or top.model
    prompt = _required_string(reader, node, found, scope, "prompt").strip()
    image = _required_string(reader, node, found, scope, "image")
    image_node = found["image"][1] if "image" in found else None
    path, url, sha = _read_image(reader, image_node, scope, image, top.base_dir)
    optimizer = top.prompt_optimizer
    if "prompt_optimizer" in found:
        optimizer = reader.boolean(found["prompt_optimizer"][1], scope.at("prompt_optimizer"))
    extra = _read_input(reader, found["input"][1], scope, places) if "input" in found else {}
    model_input: dict[str, Any] = {"prompt": prompt}
    if optimizer is not None:
        model_input["prompt_optimizer"] = optimizer
    model_input.update({**top.input, **extra})
    return _Fields(
        index,
        node,
        explicit_id,
        id_node,
        model,
        prompt,
        image,
        path,
        url,
        sha,
        model_input,
        places,
    )


def _required_string(
    reader: _Reader,
    node: MappingNode,
    found: Mapping[str, tuple[Node, Node]],
    scope: _Scope,
    name: str,
) -> str:
    """A required non-empty string field; "" after reporting it missing or wrong."""
    if name not in found:
        reader.error(node, scope.at(name), "is required")
        return ""
    return reader.string(found[name][1], scope.at(name)) or ""


def _read_image(
    reader: _Reader, node: Node | None, scope: _Scope, image: str, base_dir: Path
) -> tuple[Path | None, str | None, str | None]:
    """(local path, URL, sha256) of an image; local files are checked and hashed."""
    if not image or node is None:
        return None, None, None
    context = scope.at("image")
    scheme = _SCHEME.match(image)
    if scheme:
        parts = urlsplit(image)
        if parts.scheme.lower() not in ("http", "https"):
            reader.error(
                node,
                context,
                f"unsupported URL scheme {_q(parts.scheme)}: use an http(s) URL,"
                " or write a local path starting with ./",
            )
        elif not parts.hostname:
            reader.error(node, context, f"the URL {_q(image)} has no host")
        return None, image, None
    try:
        path = (base_dir / image).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        reader.error(node, context, f"cannot resolve the path {_q(image)}: {exc}")
        return None, None, None
    return path, None, _hash_image(reader, node, context, image, path)


def _hash_image(reader: _Reader, node: Node, context: str, image: str, path: Path) -> str | None:
    """The sha256 of a local image file; None after reporting why it cannot be read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        reader.error(node, context, f"image file {_q(image)} not found (looked for {path})")
        return None
    except OSError as exc:
        reader.error(node, context, f"cannot read image file {_q(image)} ({path}): {exc.strerror}")
        return None
    if stat.S_ISDIR(info.st_mode):
        reader.error(node, context, f"{_q(image)} is a directory, not an image file ({path})")
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        what = "is empty" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        reader.error(node, context, f"image file {_q(image)} {what} ({path})")
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        reader.warn(node, context, f"{_q(image)}: {SUFFIX_WARNING}")
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        reader.error(node, context, f"cannot read image file {_q(image)} ({path}): {exc.strerror}")
        return None


def _read_input(
    reader: _Reader, node: Node, scope: _Scope, places: dict[str, Place]
) -> dict[str, Any]:
    """An ``input`` mapping of extra model inputs: JSON values, none of the reserved keys.

    The place of each value goes into ``places`` as ``input.<key>``.
    """
    mapping = reader.mapping(node, scope.at("input"))
    if mapping is None:
        return {}
    inner = scope.nested("input")
    out: dict[str, Any] = {}
    for key, (knode, vnode) in reader.entries(mapping, inner, None, {}).items():
        if key in RESERVED_INPUT:
            source = "image" if key not in ("prompt", "prompt_optimizer") else key
            message = f'comes from the item\'s "{source}" field; remove it from "input"'
            reader.error(knode, inner.at(key), message)
            continue
        ok, value = reader.value(vnode, inner.at(key))
        problem = _json_problem(value) if ok else None
        if problem:
            reader.error(vnode, inner.at(key), problem)
        elif ok:
            out[key] = value
            places[f"input.{key}"] = Place(reader.position(vnode), inner.prefix + key)
    return out


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot travel in a JSON request body, or None if it can."""
    if depth > _MAX_DEPTH:
        return "is nested too deeply (or refers to itself)"
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number"
    if isinstance(value, list):
        return next((p for v in value if (p := _json_problem(v, depth + 1))), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "mapping keys must be strings"
        return next((p for v in value.values() if (p := _json_problem(v, depth + 1))), None)
    return f"holds a {type(value).__name__}, which JSON cannot carry; quote it"


# --- ids and keys ------------------------------------------------------------------------


def _assign_ids(reader: _Reader, fields: list[_Fields]) -> list[str]:
    """Each item's id: explicit ones (which must be unique), else derived and made unique.

    Ids compare without letter case, since output files on macOS and Windows do too.
    """
    taken: dict[str, _Fields] = {}
    for f in fields:
        if f.explicit_id is None or f.id_node is None:
            continue
        first = taken.setdefault(f.explicit_id.casefold(), f)
        if first is not f:
            context = _Scope(_label(f.index, f.explicit_id)).at("id")
            other = _label(first.index, first.explicit_id)
            reader.error(
                f.id_node, context, f"duplicate id: {other} (line {first.line}) has it too"
            )
    ids = []
    for f in fields:
        item_id = f.explicit_id or _unique(_derive_id(f.image, f.index), f.index, taken)
        taken.setdefault(item_id.casefold(), f)
        ids.append(item_id)
    return ids


def _derive_id(image: str, index: int) -> str:
    """An id from the image's file name stem, or ``item-<n>`` (1-based) if none is usable."""
    stem = (
        PurePosixPath(urlsplit(image).path).stem if _SCHEME.match(image) else PurePath(image).stem
    )
    return _slug(stem) or f"item-{index + 1}"


def _unique(base: str, index: int, taken: Mapping[str, object]) -> str:
    """``base``, or ``base-<position>`` (then ``-2``, ``-3``...) if it is already taken."""
    candidate, extra = base, 1
    while candidate.casefold() in taken:
        suffix = f"-{index + 1}" + (f"-{extra}" if extra > 1 else "")
        candidate, extra = base[: MAX_NAME - len(suffix)] + suffix, extra + 1
    return candidate


def _build_item(f: _Fields, item_id: str, top: _Top) -> Item:
    """The Item of checked fields, with its key (a local image counts by its sha256)."""
    image_value = f.image_url or f"{LOCAL_IMAGE_PREFIX}{f.image_sha256 or ''}"
    keyed = {**f.input, models.image_field(f.model): image_value}
    price, _ = cost.price_of(f.model, top.prices)
    return Item(
        id=item_id,
        index=f.index,
        line=f.line,
        model=f.model,
        prompt=f.prompt,
        image=f.image,
        image_path=f.image_path,
        image_url=f.image_url,
        image_sha256=f.image_sha256,
        input=f.input,
        key=item_key(f.model, keyed),
        price_usd=price,
        places=f.places,
    )


def _warn_same_keys(
    reader: _Reader, fields: list[_Fields], items: tuple[Item, ...], flawed: Collection[int]
) -> None:
    """Warn about each item whose key an earlier item already has: the same video twice.

    Items with an error of their own are left out: their placeholders would look alike.
    """
    first: dict[str, Item] = {}
    for f, item in zip(fields, items, strict=True):
        if item.index in flawed:
            continue
        earlier = first.setdefault(item.key, item)
        if earlier is not item:
            other = f"{_label(earlier.index, earlier.id)} (line {earlier.line})"
            message = (
                f"same model, input and image as {other}: it would render the same video twice"
            )
            reader.warn(f.node, _label(item.index, item.id), message)


def _warn_unused_prices(reader: _Reader, top: _Top, items: tuple[Item, ...]) -> None:
    """Warn about each model in a ``price_usd`` mapping that no item uses (a typo?)."""
    used = sorted({item.model for item in items})
    for slug, node in top.price_nodes.items():
        if slug not in used:
            close = difflib.get_close_matches(slug, used, n=1)
            hint = f"; did you mean {_q(close[0])}?" if close else ""
            reader.warn(
                node, _Scope(prefix="price_usd.").at(slug), f"no item uses this model{hint}"
            )


# --- small helpers -----------------------------------------------------------------------


def _safe_name(reader: _Reader, node: Node, context: str) -> str | None:
    """A string usable as a file name (an id or batch name), or None after reporting."""
    name = reader.string(node, context)
    if name is None:
        return None
    if SAFE_NAME.fullmatch(name):
        return name
    reader.error(
        node,
        context,
        f"{_q(name)} is not safe as a file name: use 1-{MAX_NAME} letters, digits, '.', '_'"
        " or '-', starting with a letter or digit",
    )
    return None


def _slug(text: str) -> str:
    """``text`` made into a safe name (ASCII, runs of other characters as '-'), or ""."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).lstrip("._-")[:MAX_NAME].rstrip("-")
    return slug if SAFE_NAME.fullmatch(slug) else ""


def _peek_id(node: MappingNode) -> str | None:
    """The item's ``id`` as written, if it is a plain string, to name the item in problems."""
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == "id" and vnode.tag == _STR_TAG:
            return str(vnode.value)
    return None


def _label(index: int, item_id: str | None = None) -> str:
    """How problems name an item: ``item 3 (id "deer")``, counting from 1."""
    return f"item {index + 1}" + (f" (id {_q(item_id)})" if item_id else "")


def _unknown_key(key: str, allowed: Collection[str], hints: Mapping[str, str]) -> str:
    """The message for an unknown key, with the near miss or the keys allowed."""
    if key in hints:
        return f"unknown key {_q(key)}: {hints[key]}"
    close = difflib.get_close_matches(key, list(allowed), n=1)
    if close:
        return f"unknown key {_q(key)}; did you mean {_q(close[0])}?"
    return f"unknown key {_q(key)}; expected one of: {', '.join(allowed)}"


def _kind(node: Node, value: Any) -> str:
    """What a YAML value is, for messages: "a list", "an integer", "null"..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if value is None:
        return "null (nothing)"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _q(text: str) -> str:
    """``text`` in double quotes, escaped as JSON so odd characters stay visible."""
    return json.dumps(text, ensure_ascii=False)
