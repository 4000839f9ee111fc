"""The manifest's fields read and checked: the top level and each item, before ids and keys.

``read_top`` reads the batch name, the default model, ``price_usd``, ``defaults`` and the list
of items; ``read_item`` reads one item's id, image, prompt, model, ``prompt_optimizer`` and
``input`` over the top level's defaults, and its ``meta`` (the user's own data, carried to the
results untouched and never part of the item's key). Every problem goes to the ``Reader`` at
its place; a field in error gets a placeholder, so that reading goes on and reports the rest.
The image field is read by ``runner.manifest.imagesource``; ids, keys and the ``Item`` they
make are ``runner.manifest.reader``'s; the rules of ids and batch names are
``runner.manifest.ids``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner import cost, models
from runner.diagnostics import Code, Place
from runner.manifest.catalog import Rows, read_items_from
from runner.manifest.ids import SAFE_NAME, safe_name, slugify
from runner.manifest.imagesource import read_image
from runner.manifest.jsonvalues import read_input, read_meta
from runner.manifest.nodes import marker
from runner.manifest.places import ITEM, PlacesMaker
from runner.manifest.yamlnodes import Reader, Scope, kind_of, quote

TOP_KEYS = ("batch", "model", "price_usd", "defaults", "items", "items_from", "columns")
DEFAULTS_KEYS = ("prompt_optimizer", "input")
ITEM_KEYS = ("id", "image", "prompt", "model", "prompt_optimizer", "priority", "input", "meta")
#: An item's ``priority:`` is a whole number within this (higher is created first).
MAX_PRIORITY = 1_000_000

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
_STR_TAG = "tag:yaml.org,2002:str"


# --- the top level -----------------------------------------------------------------------


@dataclass(frozen=True)
class Top:
    """The top level as read: the batch, the defaults every item starts from, the item nodes."""

    batch: str
    model: str
    prompt_optimizer: bool | None
    input: dict[str, Any]
    base_dir: Path
    items: list[Node]
    prices: cost.PriceOverride = None
    price_nodes: Mapping[str, Node] = field(default_factory=dict)  # model slug → its key node
    places: Mapping[str, Place] = field(default_factory=dict)  # "model", "prompt_optimizer", ...
    input_node: Node | None = None  # ``defaults.input`` as written, merged into every item
    rows: Rows | None = None  # (index, node) of the items of an ``items_from`` catalog


def read_top(reader: Reader, root: Node, path: Path) -> Top:
    """The batch, defaults and item nodes of the manifest's top-level mapping."""
    batch = slugify(path.stem) or "batch"
    base_dir = path.absolute().parent
    mapping = reader.mapping(root, Place(document=True))
    if mapping is None:
        return Top(batch, models.DEFAULT_MODEL, None, {}, base_dir, [])
    found = reader.entries(mapping, Scope(), TOP_KEYS, _TOP_HINTS)
    if "batch" in found:
        batch = safe_name(reader, found["batch"][1], Scope().at("batch")) or batch
    prices: cost.PriceOverride = None
    price_nodes: dict[str, Node] = {}
    if "price_usd" in found:
        prices, price_nodes = _read_prices(reader, found["price_usd"][1])
    places: dict[str, Place] = {}
    model = _read_model(reader, found, Scope(), prices) or models.DEFAULT_MODEL
    if "model" in found:
        places["model"] = reader.place(found["model"][1], "model")
    optimizer: bool | None = None
    extra: dict[str, Any] = {}
    input_node: Node | None = None
    if "defaults" in found:
        optimizer, extra, input_node = _read_defaults(reader, found["defaults"][1], places)
    catalog = read_items_from(reader, found, base_dir)  # None: the manifest lists its items
    if catalog is not None:
        folder, rows = catalog
        nodes: list[Node] = [node for _, node in rows]
        top = Top(
            batch, model, optimizer, extra, folder, nodes, prices, price_nodes, places, input_node
        )
        return replace(top, rows=rows)
    items = _read_item_list(reader, mapping, found.get("items"))
    return Top(
        batch, model, optimizer, extra, base_dir, items, prices, price_nodes, places, input_node
    )


def _read_defaults(
    reader: Reader, node: Node, places: dict[str, Place]
) -> tuple[bool | None, dict[str, Any], Node | None]:
    """``defaults.prompt_optimizer``, ``defaults.input`` and the node of the latter (if given);
    their places go into ``places``."""
    scope = Scope(prefix="defaults.")
    mapping = reader.mapping(node, Scope().at("defaults"))
    if mapping is None:
        return None, {}, None
    found = reader.entries(mapping, scope, DEFAULTS_KEYS, _DEFAULTS_HINTS)
    optimizer = None
    if "prompt_optimizer" in found:
        value_node = found["prompt_optimizer"][1]
        optimizer = reader.boolean(value_node, scope.at("prompt_optimizer"))
        places["prompt_optimizer"] = reader.place(value_node, "defaults.prompt_optimizer")
    if "input" not in found:
        return optimizer, {}, None
    input_node = found["input"][1]
    value_nodes: dict[str, Node] = {}
    extra = read_input(reader, input_node, scope, value_nodes)
    for name, value_node in value_nodes.items():
        places[name] = reader.place(value_node, scope.prefix + name)
    return optimizer, extra, input_node


def _read_prices(reader: Reader, node: Node) -> tuple[cost.PriceOverride, dict[str, Node]]:
    """``price_usd``: one price for every model, or a mapping of model slug to price."""
    context = Scope().at("price_usd")
    if isinstance(node, MappingNode):
        scope = Scope(prefix="price_usd.")
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


def _price(reader: Reader, node: Node, context: Place) -> float | None:
    """A price in USD: a finite number of at least 0; None after reporting why not."""
    ok, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
    if not ok:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
        reader.error(node, context, f"must be a price of at least 0 USD, not {value}")
        return None
    reader.error(node, context, f"must be a price in USD (a number), not {kind_of(node, value)}")
    return None


def _read_item_list(
    reader: Reader, root: MappingNode, entry: tuple[Node, Node] | None
) -> list[Node]:
    """The item nodes; reports a missing, non-list or empty ``items``."""
    context = Scope().at("items")
    if entry is None:
        reader.error(root, context, "is required: a list of items, each with an image and a prompt")
        return []
    node = entry[1]
    if not isinstance(node, SequenceNode):
        _, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        reader.error(node, context, f"must be a list of items, not {kind_of(node, value)}")
        return []
    if not node.value:
        reader.error(node, context, "must list at least one item")
    return list(node.value)


def _read_model(
    reader: Reader,
    found: Mapping[str, tuple[Node, Node]],
    scope: Scope,
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
        hint = f"did you mean {quote(close[0])}? " if close else ""
        message = f"unknown model {quote(slug)}; {hint}the server decides"
        if not cost.price_of(slug, prices)[1]:
            message += (
                f"; its price is estimated at {cost.usd(cost.DEFAULT_PRICE_USD)} a run"
                " (set price_usd to change that)"
            )
        reader.warn(node, scope.at("model"), message, code=Code.UNKNOWN_MODEL, subject=slug)
    return slug


# --- items -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fields:
    """One item's checked fields, before ids and keys. After an error, placeholders stand in.

    It keeps where the item and its fields are written (``places``, ``ITEM`` the item
    itself), never the item's nodes."""

    index: int
    line: int  # the item's line, from 1
    explicit_id: str | None
    model: str
    prompt: str
    image: str
    image_path: Path | None
    image_url: str | None
    image_sha256: str | None
    input: dict[str, Any]
    places: Mapping[str, Place]  # ``runner.manifest.places``; "id" if the item gives one
    meta: dict[str, Any] | None  # the item's ``meta`` mapping, if it has one
    priority: int = 0  # higher is created first (``runner.night.submit_order``)

    def spot(self, name: str = ITEM) -> Node:
        """A node marking where the item (``ITEM``) or its field ``name`` is written."""
        place = self.places[name]
        return marker(place.file, place.line, place.column)


def item_nodes(reader: Reader, top: Top) -> list[tuple[int, MappingNode]]:
    """(index, node) of the entries of ``items`` that are mappings; reports the others."""
    if top.rows is not None:  # a catalog's rows, checked as they were read
        return list(top.rows)
    nodes = []
    for index, node in enumerate(top.items):
        if isinstance(node, MappingNode):
            nodes.append((index, node))
            continue
        context = Place(item=index)
        _, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
        what = kind_of(node, value)
        reader.error(node, context, f"must be a mapping with an image and a prompt, not {what}")
    return nodes


def read_item(reader: Reader, node: MappingNode, index: int, top: Top) -> Fields:
    """Check one item's fields against the top level's defaults."""
    scope = Scope(index, _peek_id(node))
    found = reader.entries(node, scope, ITEM_KEYS, _HINTS)
    own = {ITEM: reader.where(node)}  # the item's own places (``runner.manifest.places``)
    for name in ("id", "image", "prompt", "model", "prompt_optimizer"):
        if name in found:
            own[name] = reader.where(found[name][1])
    explicit_id = None
    if "id" in found:
        id_node = found["id"][1]
        explicit_id = _text(id_node)
        if explicit_id is None or not SAFE_NAME.fullmatch(explicit_id):
            explicit_id = safe_name(reader, id_node, scope.at("id"))
    model = _read_model(reader, found, scope, top.prices) or top.model
    prompt = _required_string(reader, node, found, scope, "prompt").strip()
    image = _required_string(reader, node, found, scope, "image")
    image_node = found["image"][1] if "image" in found else None
    path, url, sha = read_image(reader, image_node, scope, image, top.base_dir)
    optimizer = top.prompt_optimizer
    if "prompt_optimizer" in found:
        optimizer = reader.boolean(found["prompt_optimizer"][1], scope.at("prompt_optimizer"))
    extra: dict[str, Any] = {}
    if "input" in found:
        value_nodes: dict[str, Node] = {}
        extra = read_input(reader, found["input"][1], scope, value_nodes)
        own.update((name, reader.where(value_node)) for name, value_node in value_nodes.items())
    meta = read_meta(reader, found["meta"][1], scope) if "meta" in found else None
    priority = _priority(reader, found["priority"][1], scope) if "priority" in found else 0
    model_input: dict[str, Any] = {"prompt": prompt}
    if optimizer is not None:
        model_input["prompt_optimizer"] = optimizer
    model_input.update({**top.input, **extra})
    return Fields(
        index,
        own[ITEM][1],
        explicit_id,
        model,
        prompt,
        image,
        path,
        url,
        sha,
        model_input,
        _places_maker(reader, top).make(own),
        meta,
        priority,
    )


def _priority(reader: Reader, node: Node, scope: Scope) -> int:
    """An item's ``priority``: a whole number (higher goes first), or 0 after reporting."""
    context = scope.at("priority")
    ok, value = reader.value(node, context) if isinstance(node, ScalarNode) else (True, None)
    if not ok:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_PRIORITY:
        return value
    reader.error(
        node,
        context,
        f"must be a whole number from -{MAX_PRIORITY:,} to {MAX_PRIORITY:,} (higher is created "
        f"first), not {kind_of(node, value)}",
    )
    return 0


_PLACES = "item places"


def _places_maker(reader: Reader, top: Top) -> PlacesMaker:
    """The reading's maker of items' places, over the top level's (kept in ``reader.memo``)."""
    maker = reader.memo.get(_PLACES)
    if not isinstance(maker, PlacesMaker) or maker.shared is not top.places:
        maker = reader.memo[_PLACES] = PlacesMaker(top.places)
    return maker


def _text(node: Node) -> str | None:
    """The value of a plain string node that is not blank, as ``Reader.string`` gives it; None
    for any other node (then ``Reader.string`` says what is wrong with it)."""
    if node.tag == _STR_TAG and isinstance(node, ScalarNode) and node.value.strip():
        return str(node.value)
    return None


def _required_string(
    reader: Reader,
    node: MappingNode,
    found: Mapping[str, tuple[Node, Node]],
    scope: Scope,
    name: str,
) -> str:
    """A required non-empty string field; "" after reporting it missing or wrong."""
    if name not in found:
        reader.error(node, scope.at(name), "is required")
        return ""
    return _text(found[name][1]) or reader.string(found[name][1], scope.at(name)) or ""


def _peek_id(node: MappingNode) -> str | None:
    """The item's ``id`` as written, if it is a plain string, to name the item in problems."""
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == "id" and vnode.tag == _STR_TAG:
            return str(vnode.value)
    return None
