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

``load_manifest`` checks everything in one pass and raises one ``ManifestError`` listing every
problem, each placed as ``file:line:col: item 3 (id "deer"), field "prompt"``. The YAML is
composed into nodes rather than loaded, so that every value keeps its position. Apart from
reading the manifest and hashing local images, nothing here does I/O.
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
from typing import Any
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner import models
from runner.errors import ManifestError, Problem
from runner.jobs import LOCAL_IMAGE_PREFIX, item_key

#: Ids and batch names become file and directory names: no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_NAME = 100

TOP_KEYS = ("batch", "model", "defaults", "items")
DEFAULTS_KEYS = ("prompt_optimizer", "input")
ITEM_KEYS = ("id", "image", "prompt", "model", "prompt_optimizer", "input")

#: Input keys the manifest sets from its own fields; ``input`` may not repeat them.
RESERVED_INPUT = frozenset(
    {"prompt", "prompt_optimizer"} | {m.image_field for m in models.MODELS.values()}
)

#: Image formats the API documents (JPEG, PNG, WebP, GIF); other suffixes get a warning.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})

_HINTS: dict[str, str] = {
    "first_frame_image": 'the image goes in "image"',
    "image_url": 'the image goes in "image"',
}
_TOP_HINTS = {
    "prompt_optimizer": 'put it under "defaults" or on each item',
    "input": 'put it under "defaults" or on each item',
}
_DEFAULTS_HINTS = {"model": 'set the default model with the top-level "model"'}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_MAX_DEPTH = 32


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


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest at ``path``; hash its local images.

    Raises ManifestError listing every problem found: unreadable file, YAML syntax, unknown
    keys, wrong types, unsafe or duplicate ids, missing images, bad URLs. Problems that do not
    stop a run (two items with the same key, an unknown model) are ``Manifest.warnings``.
    The returned ``Manifest.path`` is absolute; problems name the file as ``path`` was given.
    """
    reader = _Reader(str(path))
    root = _compose(path, reader.file)
    top = _read_top(reader, root, path)
    fields = [_read_item(reader, node, index, top) for index, node in _item_nodes(reader, top)]
    ids = _assign_ids(reader, fields)
    items = tuple(_build_item(f, item_id) for f, item_id in zip(fields, ids, strict=True))
    _warn_same_keys(reader, fields, items)
    errors = reader.problems("error")
    if errors:
        raise ManifestError(errors)
    return Manifest(path.resolve(), top.batch, items, tuple(reader.problems("warning")))


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
        ordered = sorted(self._problems, key=lambda entry: entry[:2])
        return [problem for _, _, problem in ordered if problem.severity == severity]

    def where(self, node: Node, context: str) -> str:
        mark = node.start_mark
        place = f"{self.file}:{mark.line + 1}:{mark.column + 1}"
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
    model = _read_model(reader, found, _Scope()) or models.DEFAULT_MODEL
    optimizer: bool | None = None
    extra: dict[str, Any] = {}
    if "defaults" in found:
        optimizer, extra = _read_defaults(reader, found["defaults"][1])
    items = _read_item_list(reader, mapping, found.get("items"))
    return _Top(batch, model, optimizer, extra, base_dir, items)


def _read_defaults(reader: _Reader, node: Node) -> tuple[bool | None, dict[str, Any]]:
    """``defaults.prompt_optimizer`` and ``defaults.input``."""
    scope = _Scope(prefix="defaults.")
    mapping = reader.mapping(node, _Scope().at("defaults"))
    if mapping is None:
        return None, {}
    found = reader.entries(mapping, scope, DEFAULTS_KEYS, _DEFAULTS_HINTS)
    optimizer = None
    if "prompt_optimizer" in found:
        optimizer = reader.boolean(found["prompt_optimizer"][1], scope.at("prompt_optimizer"))
    extra = _read_input(reader, found["input"][1], scope) if "input" in found else {}
    return optimizer, extra


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
    reader: _Reader, found: Mapping[str, tuple[Node, Node]], scope: _Scope
) -> str | None:
    """The ``model`` slug if given and a string; warns about a slug this runner does not know."""
    if "model" not in found:
        return None
    node = found["model"][1]
    slug = reader.string(node, scope.at("model"))
    if slug is not None and slug not in models.MODELS:
        close = difflib.get_close_matches(slug, list(models.MODELS), n=1)
        hint = f"did you mean {_q(close[0])}? " if close else ""
        reader.warn(node, scope.at("model"), f"unknown model {_q(slug)}; {hint}the server decides")
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
    explicit_id, id_node = None, None
    if "id" in found:
        id_node = found["id"][1]
        explicit_id = _safe_name(reader, id_node, scope.at("id"))
    model = _read_model(reader, found, scope) or top.model
    prompt = _required_string(reader, node, found, scope, "prompt").strip()
    image = _required_string(reader, node, found, scope, "image")
    image_node = found["image"][1] if "image" in found else None
    path, url, sha = _read_image(reader, image_node, scope, image, top.base_dir)
    optimizer = top.prompt_optimizer
    if "prompt_optimizer" in found:
        optimizer = reader.boolean(found["prompt_optimizer"][1], scope.at("prompt_optimizer"))
    extra = _read_input(reader, found["input"][1], scope) if "input" in found else {}
    model_input: dict[str, Any] = {"prompt": prompt}
    if optimizer is not None:
        model_input["prompt_optimizer"] = optimizer
    model_input.update({**top.input, **extra})
    return _Fields(
        index, node, explicit_id, id_node, model, prompt, image, path, url, sha, model_input
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
        reader.warn(node, context, f"{_q(image)}: the API takes JPEG, PNG, WebP or GIF images")
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        reader.error(node, context, f"cannot read image file {_q(image)} ({path}): {exc.strerror}")
        return None


def _read_input(reader: _Reader, node: Node, scope: _Scope) -> dict[str, Any]:
    """An ``input`` mapping of extra model inputs: JSON values, none of the reserved keys."""
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


def _build_item(f: _Fields, item_id: str) -> Item:
    """The Item of checked fields, with its key (a local image counts by its sha256)."""
    image_value = f.image_url or f"{LOCAL_IMAGE_PREFIX}{f.image_sha256 or ''}"
    keyed = {**f.input, models.image_field(f.model): image_value}
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
    )


def _warn_same_keys(reader: _Reader, fields: list[_Fields], items: tuple[Item, ...]) -> None:
    """Warn about each item whose key an earlier item already has: the same video twice."""
    first: dict[str, Item] = {}
    for f, item in zip(fields, items, strict=True):
        earlier = first.setdefault(item.key, item)
        if earlier is not item:
            other = f"{_label(earlier.index, earlier.id)} (line {earlier.line})"
            message = (
                f"same model, input and image as {other}: it would render the same video twice"
            )
            reader.warn(f.node, _label(item.index, item.id), message)


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
