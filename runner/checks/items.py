"""Each item checked where it stands: the pure checks run on the batch's items, and every
diagnostic they return placed at the item's field.

An item's image is checked by its content (a local file read in a worker thread; with
``--check-urls`` the head of a URL too), and warned about if the API's servers cannot fetch it;
its prompt is linted; its input is validated against its model's live schema, each model looked
up once (``schema.look_up``). The pure checks (``images``, ``prompts``, ``schema``) know nothing
of manifests: here each of their diagnostics gets its place (``Item.place``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import anyio

from runner import cost, models
from runner.api import imagehosts
from runner.api.client import EachlabsClient
from runner.checks import images, prompts, schema
from runner.config import CheckConfig, open_regular_file
from runner.diagnostics import Diagnostic, Place, error, warning
from runner.manifest import Item, ManifestReading

#: Stands in for a local image's future upload URL when an input is checked against a schema.
PLACEHOLDER_UPLOAD = "https://upload.invalid/"
#: Unknown-model errors name at most this many items, then count the rest.
MAX_NAMED_ITEMS = 5


@dataclass(frozen=True)
class ModelCheck:
    """How one model's schema was checked, for the plan printout."""

    slug: str
    items: int
    how: str  # "fetched", "cached at <ts>", "unknown to the API", "not checked"


# --- images --------------------------------------------------------------------------------


async def check_local_images(items: Sequence[Item], checks: CheckConfig) -> list[Diagnostic]:
    """Each local image read by its content; a diagnostic is reported at every item using it."""
    local = [(item, path) for item in items if (path := _hashed_path(item)) is not None]
    results: dict[Path, list[Diagnostic]] = {}
    for path in sorted({path for _, path in local}):
        results[path] = await anyio.to_thread.run_sync(_check_file, path, checks.max_image_bytes)
    return [found.at(item.place("image")) for item, path in local for found in results[path]]


def _hashed_path(item: Item) -> Path | None:
    """The local image of ``item`` if the manifest could read it (else it reported why)."""
    return item.image_path if item.image_sha256 is not None else None


def _check_file(path: Path, max_bytes: int) -> list[Diagnostic]:
    """The diagnostics of one local image file (read in a worker thread), not placed."""
    try:
        with open_regular_file(path) as handle:  # never waits on a FIFO swapped in
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(images.HEAD_BYTES)
            if images.dimensions(head) is None and len(head) < size <= max_bytes:
                head += handle.read(size - len(head))  # a JPEG with long metadata: read it all
    except OSError as exc:
        return [error(f"cannot read the image file ({exc.strerror})")]
    return images.check(head, size, max_bytes=max_bytes, complete=len(head) >= size)


async def check_url_images(
    session: aiohttp.ClientSession, items: Sequence[Item], checks: CheckConfig
) -> list[Diagnostic]:
    """``--check-urls``: the head of each http(s) image URL, checked like a local file."""
    urls = sorted({item.image_url for item in items if item.image_url and _fetchable(item)})
    heads: dict[str, imagehosts.Head] = {}
    limiter = anyio.CapacityLimiter(checks.url_concurrency)

    async def fetch(url: str) -> None:
        async with limiter:
            heads[url] = await imagehosts.fetch_head(
                session, url, limit=checks.url_head_bytes, seconds=checks.url_timeout
            )

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(fetch, url)
    found: list[Diagnostic] = []
    for item in items:
        head = heads.get(item.image_url or "")
        if head is None:
            continue
        place = item.place("image")
        if head.error is not None:
            found.append(error(head.error, place))
            continue
        complete = head.size is not None and len(head.data) >= head.size
        for finding in images.check(
            head.data, head.size, max_bytes=checks.max_image_bytes, complete=complete
        ):
            found.append(replace(finding, message=f"the URL {finding.message}", place=place))
    return found


def _fetchable(item: Item) -> bool:
    parts = urlsplit(item.image_url or "")
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def private_urls(items: Sequence[Item]) -> list[Diagnostic]:
    """A warning for each URL image the real service cannot fetch: a host on this machine or
    a private network. Its prediction would fail with INPUT_DOWNLOAD_ERROR."""
    found: list[Diagnostic] = []
    for item in items:
        if item.image_url is None:
            continue
        why = images.unreachable_host(item.image_url)
        if why is not None:
            message = (
                f"the API's servers cannot fetch an image from {why}; upload the file "
                "instead (give its local path)"
            )
            found.append(warning(message, item.place("image")))
    return found


# --- prompts -------------------------------------------------------------------------------


def lint_prompts(items: Sequence[Item]) -> list[Diagnostic]:
    """Prompt lint of every item whose prompt was read (an empty one is a manifest error)."""
    return [
        found.at(item.place("prompt"))
        for item in items
        if item.prompt
        for found in prompts.lint(item.prompt, director=models.is_director(item.model))
    ]


# --- model schemas -------------------------------------------------------------------------


async def check_schemas(
    reading: ManifestReading,
    client: EachlabsClient | None,
    output: Path,
    checks: CheckConfig,
) -> tuple[tuple[ModelCheck, ...], list[Diagnostic], frozenset[str]]:
    """Look up each model once and validate every sound item's input against its schema.

    Also returns the slugs outside the built-in table that the API settled (known or 404).
    """
    by_model: dict[str, list[Item]] = {}
    for item in reading.items:
        by_model.setdefault(item.model, []).append(item)
    lookup = await schema.look_up(
        client, by_model, output / schema.CACHE_NAME, offline=checks.offline
    )
    found: list[Diagnostic] = []
    model_checks: list[ModelCheck] = []
    decided: set[str] = set()  # slugs the API answered for: the manifest's guess is moot
    for slug, users in sorted(by_model.items()):
        place = _model_place(users, reading.model_place)
        if slug in lookup.unknown:
            decided.add(slug)
            found.append(error(_unknown_model(slug, users), place))
            model_checks.append(ModelCheck(slug, len(users), "unknown to the API"))
            continue
        found += [note.at(place) for note in lookup.notes.get(slug, ())]
        model_schema = lookup.schemas.get(slug)
        if model_schema is None:
            model_checks.append(ModelCheck(slug, len(users), "not checked"))
            continue
        if slug not in models.MODELS:
            decided.add(slug)
            if not cost.price_of(slug, reading.prices)[1]:
                found.append(warning(_unknown_price(slug), place))
        how = f"cached at {model_schema.fetched_at}" if model_schema.cached else "fetched"
        model_checks.append(ModelCheck(slug, len(users), how))
        unusable = schema.schema_problem(model_schema.request_schema)
        if unusable is not None:
            found.append(warning(f"model {_q(slug)}: {unusable}", place))
            continue
        validator = schema.InputValidator(model_schema.request_schema)  # one per model
        for item in users:
            if item.index in reading.flawed:
                continue
            url = item.image_url or f"{PLACEHOLDER_UPLOAD}{item.image_sha256}"
            for issue in validator.validate(item.request_input(url)):
                found.append(issue.at(item.input_place(issue.subject)))
    if lookup.cache_error:
        found.append(warning(lookup.cache_error, Place(str(reading.path))))
    return tuple(model_checks), found, frozenset(decided)


def _model_place(users: Sequence[Item], top_place: Place | None) -> Place:
    """Where to report about a model: the top-level ``model`` if an item takes it from there,
    else the first item that names it."""
    if top_place is not None and any(item.places.get("model") == top_place for item in users):
        return top_place
    return users[0].place("model")


def _unknown_price(slug: str) -> str:
    return (
        f"no price is known for the model {_q(slug)}: estimated at "
        f"{cost.usd(cost.DEFAULT_PRICE_USD)} a run (set price_usd to change that)"
    )


def _unknown_model(slug: str, users: Sequence[Item]) -> str:
    named = ", ".join(item.label for item in users[:MAX_NAMED_ITEMS])
    more = len(users) - MAX_NAMED_ITEMS
    rest = f" and {more} more" if more > 0 else ""
    close = difflib.get_close_matches(slug, list(models.MODELS), n=1)
    hint = f"did you mean {_q(close[0])}? " if close else ""
    return f"the API does not know the model {_q(slug)} (HTTP 404); {hint}used by {named}{rest}"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
