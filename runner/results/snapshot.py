"""``OUTPUT/items.json``: the batch's items as the last run read them, so that the results and
the contact sheet can be made from the output directory alone (``i2v-runner report DIR``).

The ledger records what happened to each item key, not what the item was: its prompt, image,
model and ``meta`` live in the manifest. Each run writes this snapshot once its checks have
passed, before anything is sent::

    {"version": 1, "batch": "example", "manifest": "/abs/manifests/example.yaml",
     "items": [{"id", "key", "model", "prompt", "image", "image_path", "image_sha256",
                "price_usd", "meta"}, ...]}

``image`` is the image as the manifest wrote it (a path or a URL); ``image_path`` the local
image's absolute path (null for a URL). ``read_snapshot`` checks every field it hands on: an id
that is not a safe file name, a key or a sha256 of the wrong shape makes the file unusable, so
nothing read from it can name a path outside the output directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner.config import read_regular_file
from runner.errors import ConfigError
from runner.manifest import Manifest
from runner.manifest.catalog import STDIN_NAME, is_stdin
from runner.manifest.ids import SAFE_NAME
from runner.money import json_number, usd
from runner.store.disk import write_if_changed

SNAPSHOT_NAME = "items.json"
VERSION = 1
#: The largest snapshot read: a 100,000-item batch with long prompts and meta is tens of MB.
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class SnapItem:
    """One item as the snapshot keeps it."""

    id: str
    key: str
    model: str
    prompt: str
    image: str
    image_path: str | None  # the local image's absolute path; None for a URL image
    image_sha256: str | None  # the local image's sha256 when the manifest was read
    price_usd: Decimal | None
    meta: Mapping[str, Any] | None


@dataclass(frozen=True)
class Snapshot:
    batch: str
    manifest: str
    items: tuple[SnapItem, ...]


def snapshot_of(manifest: Manifest) -> Snapshot:
    """The snapshot of a checked manifest (pure)."""
    items = tuple(
        SnapItem(
            id=item.id,
            key=item.key,
            model=item.model,
            prompt=item.prompt,
            image=item.image,
            image_path=None if item.image_path is None else str(item.image_path),
            image_sha256=item.image_sha256,
            price_usd=item.price_usd,
            meta=item.meta,
        )
        for item in manifest.items
    )
    name = STDIN_NAME if is_stdin(manifest.path) else str(manifest.path)
    return Snapshot(manifest.batch, name, items)


def encode(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as the JSON object ``items.json`` holds."""
    return {
        "version": VERSION,
        "batch": snapshot.batch,
        "manifest": snapshot.manifest,
        "items": [
            {
                "id": item.id,
                "key": item.key,
                "model": item.model,
                "prompt": item.prompt,
                "image": item.image,
                "image_path": item.image_path,
                "image_sha256": item.image_sha256,
                "price_usd": json_number(item.price_usd),
                "meta": None if item.meta is None else dict(item.meta),
            }
            for item in snapshot.items
        ],
    }


def write_snapshot(output_dir: Path, snapshot: Snapshot) -> None:
    """Write ``OUTPUT/items.json`` atomically, unless it already holds this very snapshot (a
    finished batch in a read-only directory is left alone). Blocking: run it in a worker
    thread. Raises StorageError."""
    text = json.dumps(encode(snapshot), indent=2, ensure_ascii=False) + "\n"
    write_if_changed(output_dir / SNAPSHOT_NAME, text.encode())


def read_snapshot(output_dir: Path) -> Snapshot:
    """The snapshot in ``output_dir``. Raises ConfigError saying why there is none, or why it
    cannot be used (not JSON, a field of the wrong kind, an unsafe id). Blocking."""
    path = output_dir / SNAPSHOT_NAME
    try:
        data = read_regular_file(path, MAX_SNAPSHOT_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"{output_dir} holds no {SNAPSHOT_NAME}: it is written by every run of this "
            "version once its checks pass; run the batch (or `run MANIFEST --output DIR` "
            "again) first"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_SNAPSHOT_BYTES // 2**20} MB")
    try:
        return decode(json.loads(data.decode("utf-8"), parse_constant=_refuse_constant))
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} is not a snapshot of a batch: {exc}") from None


def decode(data: object) -> Snapshot:
    """A snapshot from the JSON of ``items.json``; ValueError saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("version") != VERSION:
        raise ValueError(f"version {data.get('version')!r}, this runner reads {VERSION}")
    batch, manifest = data.get("batch"), data.get("manifest")
    if not isinstance(batch, str) or not SAFE_NAME.fullmatch(batch):
        raise ValueError("'batch' must be a batch name")
    if not isinstance(manifest, str):
        raise ValueError("'manifest' must be a string")
    raw = data.get("items")
    if not isinstance(raw, list):
        raise ValueError("'items' must be a list")
    items = tuple(_item(entry, n) for n, entry in enumerate(raw, start=1))
    if len({item.id.casefold() for item in items}) != len(items):
        raise ValueError("two items have the same id")
    return Snapshot(batch, manifest, items)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _item(entry: object, n: int) -> SnapItem:
    if not isinstance(entry, dict):
        raise ValueError(f"item {n} is not a JSON object")

    def text(name: str, *, optional: bool = False) -> Any:
        value = entry.get(name)
        if isinstance(value, str) or (optional and value is None):
            return value
        raise ValueError(f"item {n}: {name!r} must be a string{' or null' if optional else ''}")

    item_id, key = text("id"), text("key")
    if not SAFE_NAME.fullmatch(item_id):
        raise ValueError(f"item {n}: 'id' is not a safe file name")
    if not _KEY.fullmatch(key):
        raise ValueError(f"item {n}: 'key' is not an item key")
    sha = text("image_sha256", optional=True)
    if sha is not None and not _HEX64.fullmatch(sha):
        raise ValueError(f"item {n}: 'image_sha256' is not a sha256")
    meta = entry.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"item {n}: 'meta' must be an object or null")
    return SnapItem(
        id=item_id,
        key=key,
        model=text("model"),
        prompt=text("prompt"),
        image=text("image"),
        image_path=text("image_path", optional=True),
        image_sha256=sha,
        price_usd=usd(entry.get("price_usd")),
        meta=meta,
    )
