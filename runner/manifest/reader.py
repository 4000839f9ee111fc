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
        meta: {client: acme, shot: 12}     # optional; carried to the results untouched

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
``runner.checks.preflight``.

This module holds the public types and the one pass over the file: it gives each item its id
and key and warns about what only shows across items (the same video twice, a price no item
uses). The reading underneath is in layers: ``document`` (the file composed into YAML nodes
that keep their place, within limits), ``yamlnodes`` (the reader that checks nodes),
``fields`` (the top level and each item's fields), ``imagesource`` (an item's image: a URL, or a
local file hashed) and ``ids`` (names safe as file names).
"""

from __future__ import annotations

import copy
import difflib
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import cost, gcpause, models
from runner.diagnostics import Diagnostic, Place, Severity, item_label, of_severity
from runner.errors import ManifestError
from runner.jobs import LOCAL_IMAGE_PREFIX, item_key
from runner.manifest.catalog import catalog_document, is_catalog, is_stdin
from runner.manifest.document import MAX_NODES, compose, expanded_size
from runner.manifest.fields import (
    DEFAULTS_KEYS,
    ITEM_KEYS,
    TOP_KEYS,
    Fields,
    Top,
    item_nodes,
    read_item,
    read_top,
)
from runner.manifest.ids import MAX_NAME, SAFE_NAME, derive_id, slugify, unique_id
from runner.manifest.imagesource import IMAGE_SUFFIXES
from runner.manifest.jsonvalues import RESERVED_INPUT
from runner.manifest.nodes import marker
from runner.manifest.places import ITEM
from runner.manifest.yamlnodes import Reader, Scope, quote

__all__ = [
    "DEFAULTS_KEYS",
    "IMAGE_SUFFIXES",
    "ITEM_KEYS",
    "MAX_NAME",
    "RESERVED_INPUT",
    "SAFE_NAME",
    "TOP_KEYS",
    "Item",
    "Manifest",
    "ManifestReading",
    "load_manifest",
    "read_manifest",
]


#: Values that cannot change: ``Item.request_input`` shares them rather than copy them.
_PLAIN = (str, int, float, bool, type(None))


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
    price_usd: Decimal = Decimal(str(cost.DEFAULT_PRICE_USD))
    #: Where each field was written: "item", "id", "image", "prompt", "model",
    #: "prompt_optimizer" and "input.<key>" (the item's own or the defaults'), kept small
    #: (``runner.manifest.places.Places``).
    places: Mapping[str, Place] = field(default_factory=dict, hash=False, compare=False, repr=False)
    #: The item's ``meta`` mapping as written (None: none given): passed through to the
    #: results untouched, never sent to the API and never part of ``key``.
    meta: Mapping[str, Any] | None = field(default=None, hash=False)
    #: The item's ``priority:`` (higher is created first; ``runner.night.submit_order``).
    priority: int = 0

    @property
    def label(self) -> str:
        """How diagnostics name this item: ``item 3 (id "deer")``."""
        return item_label(self.index, self.id)

    def place(self, name: str | None = None) -> Place:
        """Where one of this item's fields was written, with the item:
        ``file:line:col: item 3 (id "deer"), field "prompt"``.

        ``name`` is a key of ``places``; a field without a place (a default) names the item.
        """
        place = self.places.get(name or "item") or self.places.get("item") or Place()
        return replace(place, item=self.index, item_id=self.id)

    def input_place(self, key: str | None) -> Place:
        """Where the request input ``key`` comes from (the prompt, the image, an input value)."""
        if key is None:
            return self.place()
        if key == self.image_field:
            return self.place("image")
        if key in ("prompt", "prompt_optimizer"):
            return self.place(key)
        return self.place(f"input.{key}")

    @property
    def image_field(self) -> str:
        """The input field that carries the image for this item's model."""
        return models.image_field(self.model)

    def request_input(self, image_url: str) -> dict[str, Any]:
        """The ``input`` of the create request: this item's input plus the image URL."""
        body = {  # a copy the caller may change; plain values need no deep copy
            key: value if isinstance(value, _PLAIN) else copy.deepcopy(value)
            for key, value in self.input.items()
        }
        body[self.image_field] = image_url
        return body


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: its items in order and any warnings (never errors)."""

    path: Path  # absolute, or ``-`` for a catalog read from standard input
    batch: str
    items: tuple[Item, ...]
    warnings: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class ManifestReading:
    """Everything read from a manifest, problems included: what ``read_manifest`` returns."""

    path: Path  # as given
    batch: str
    items: tuple[Item, ...]  # every item read; a flawed item has placeholders for its bad fields
    flawed: frozenset[int]  # indexes of the items with an error in one of their own fields
    problems: tuple[Diagnostic, ...]  # errors and warnings, in the order of their place
    prices: cost.PriceOverride = None
    model_place: Place | None = None  # where the top-level ``model`` is written, if it is

    @property
    def errors(self) -> list[Diagnostic]:
        return of_severity(self.problems, Severity.ERROR)

    @property
    def warnings(self) -> list[Diagnostic]:
        return of_severity(self.problems, Severity.WARNING)

    def manifest(self) -> Manifest:
        """The runnable Manifest; raises ManifestError listing every error if there is one."""
        if self.errors:
            raise ManifestError(self.errors)
        path = self.path if is_stdin(self.path) else self.path.resolve()  # "-" is no file
        return Manifest(path, self.batch, self.items, tuple(self.warnings))


def read_manifest(path: Path) -> ManifestReading:
    """Read and check the manifest at ``path`` in one pass; hash its local images.

    Never raises for a problem of the manifest: every one is in ``problems`` (unreadable file,
    YAML syntax, unknown keys, wrong types, unsafe or duplicate ids, missing images, bad URLs
    are errors; two items with the same key and an unknown model are warnings). Problems name
    the file as ``path`` was given.

    The cyclic garbage collector is held off meanwhile (``runner.gcpause``): the reading
    builds millions of objects, none of them garbage, that its passes would walk again and
    again.
    """
    with gcpause.paused():
        return _read(path)


def _read(path: Path) -> ManifestReading:
    reader = Reader(str(path))
    fallback = slugify(path.stem) or "batch"
    try:
        document = catalog_document(path) if is_catalog(path) else compose(path, reader.file)
    except ManifestError as exc:
        return ManifestReading(path, fallback, (), frozenset(), tuple(exc.problems))
    top = read_top(reader, document.root, path)
    if _defaults_overflow(reader, top, document.values):
        return ManifestReading(path, top.batch, (), frozenset(), tuple(reader.diagnostics()))
    # Each item's nodes are dropped once it is read (its Fields keep places, not nodes), so
    # that the document and the items it makes are not both held whole.
    pending = deque(item_nodes(reader, top))
    del document
    top = replace(top, items=[], rows=None)
    fields: list[Fields] = []
    flawed: set[int] = set()
    while pending:
        index, node = pending.popleft()
        before = reader.error_count
        fields.append(read_item(reader, node, index, top))
        reader.forget_values()
        if reader.error_count > before:
            flawed.add(index)
    ids = _assign_ids(reader, fields)
    # each Fields is let go once its Item is made: the two are never all held at once
    done, prices = deque(fields), _Prices(top.prices)
    del fields
    items = tuple(_build_item(done.popleft(), item_id, prices) for item_id in ids)
    _warn_same_keys(reader, items, flawed)
    _warn_unused_prices(reader, top, items)
    return ManifestReading(
        path,
        top.batch,
        items,
        frozenset(flawed),
        tuple(reader.diagnostics()),
        top.prices,
        top.places.get("model"),
    )


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest at ``path``; hash its local images.

    Raises ManifestError listing every error found (see ``read_manifest``). Problems that do
    not stop a run are ``Manifest.warnings``. The returned ``Manifest.path`` is absolute.
    """
    return read_manifest(path).manifest()


def _defaults_overflow(reader: Reader, top: Top, values: int) -> bool:
    """Whether ``defaults.input``, merged into every item, takes the manifest over
    ``MAX_NODES`` values (reported at ``defaults.input``): each item's key and schema check
    walk it again, so it counts once per item."""
    if top.input_node is None or not top.items:
        return False
    size = expanded_size(top.input_node)
    if values + size * len(top.items) <= MAX_NODES:
        return False
    message = (
        f"holds {size:,} values, merged into each of the {len(top.items):,} items: the manifest "
        f"would hold more than {MAX_NODES:,} values"
    )
    reader.error(top.input_node, Scope().at("defaults.input"), message)
    return True


# --- ids and keys ------------------------------------------------------------------------


def _assign_ids(reader: Reader, fields: list[Fields]) -> list[str]:
    """Each item's id: explicit ones (which must be unique), else derived and made unique.

    Ids compare without letter case, since output files on macOS and Windows do too.
    """
    taken: dict[str, Fields] = {}
    for f in fields:
        if f.explicit_id is None:
            continue
        first = taken.setdefault(f.explicit_id.casefold(), f)
        if first is not f:
            context = Scope(f.index, f.explicit_id).at("id")
            other = item_label(first.index, first.explicit_id)
            reader.error(
                f.spot("id"), context, f"duplicate id: {other} (line {first.line}) has it too"
            )
    ids = []
    for f in fields:
        item_id = f.explicit_id or unique_id(derive_id(f.image, f.index), f.index, taken)
        taken.setdefault(item_id.casefold(), f)
        ids.append(item_id)
    return ids


class _Prices(dict[str, Decimal]):
    """Each model's price per run under the manifest's ``price_usd``, looked up once: the
    items of a model share one Decimal."""

    def __init__(self, override: cost.PriceOverride) -> None:
        super().__init__()
        self.override = override

    def __missing__(self, model: str) -> Decimal:
        price = self[model] = cost.price_of(model, self.override)[0]
        return price


def _build_item(f: Fields, item_id: str, prices: Mapping[str, Decimal]) -> Item:
    """The Item of checked fields, with its key (a local image counts by its sha256) and its
    price (``prices[f.model]``)."""
    image_value = f.image_url or f"{LOCAL_IMAGE_PREFIX}{f.image_sha256 or ''}"
    keyed = {**f.input, models.image_field(f.model): image_value}
    price = prices[f.model]
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
        meta=f.meta,
        priority=f.priority,
    )


def _warn_same_keys(reader: Reader, items: tuple[Item, ...], flawed: Collection[int]) -> None:
    """Warn about each item whose key an earlier item already has: the same video twice.

    Items with an error of their own are left out: their placeholders would look alike.
    """
    first: dict[str, Item] = {}
    for item in items:
        if item.index in flawed:
            continue
        earlier = first.setdefault(item.key, item)
        if earlier is not item:
            other = f"{item_label(earlier.index, earlier.id)} (line {earlier.line})"
            message = (
                f"same model, input and image as {other}: it would render the same video twice"
            )
            where = item.places[ITEM]
            spot = marker(where.file, where.line, where.column)
            reader.warn(spot, Place(item=item.index, item_id=item.id), message)


def _warn_unused_prices(reader: Reader, top: Top, items: tuple[Item, ...]) -> None:
    """Warn about each model in a ``price_usd`` mapping that no item uses (a typo?)."""
    used = sorted({item.model for item in items})
    for slug, node in top.price_nodes.items():
        if slug not in used:
            close = difflib.get_close_matches(slug, used, n=1)
            hint = f"; did you mean {quote(close[0])}?" if close else ""
            reader.warn(node, Scope(prefix="price_usd.").at(slug), f"no item uses this model{hint}")
