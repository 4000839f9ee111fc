"""Transfers from hosts that are not the API: output videos, and the heads of image URLs.

A video is streamed to ``<name>.part`` beside its final name, checked (length when the server
gave one, the MP4 ``ftyp`` signature), hashed, fsynced, then renamed into place: a file with
the final name is always complete. A partial file left by an earlier attempt is resumed with a
Range request when the server honours it, else fetched again from the start. Transient
failures are retried with jittered exponential backoff (stamina); an expired or missing URL
(403/404/410) is not retried here: the caller re-polls the prediction for a fresh one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import aiofiles
import aiohttp
import anyio
import stamina

from runner.errors import DownloadError

CHUNK = 256 * 1024
#: Statuses that mean the URL is gone or expired: fetching it again cannot help.
GONE = frozenset({401, 403, 404, 410})
DOWNLOAD_ATTEMPTS = 5


@dataclass(frozen=True)
class Downloaded:
    path: Path
    bytes: int
    sha256: str


def looks_like_mp4(head: bytes) -> bool:
    """Whether the first bytes carry the ISO media ``ftyp`` box every MP4 starts with."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


def video_path(output_dir: Path, item_id: str) -> Path:
    """Where an item's video goes: ``OUTPUT/<id>.mp4``, never anywhere else.

    The manifest already refuses unsafe ids; this is the last guard before a write. Raises
    ValueError for an id that is empty, hidden, or would name a path outside ``output_dir``.
    """
    if not item_id or item_id.startswith(".") or "/" in item_id or "\\" in item_id:
        raise ValueError(f"unsafe item id {item_id!r}")
    path = output_dir / f"{item_id}.mp4"
    if path.resolve().parent != output_dir.resolve():
        raise ValueError(f"item id {item_id!r} leaves the output directory")
    return path


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _transient(exc: Exception) -> bool:
    """Worth another try: the connection broke, the body was cut short, or the CDN had a 5xx."""
    return isinstance(exc, DownloadError) and (exc.status is None or exc.status >= 500)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify(path: Path, size: int | None, sha256: str | None) -> bool:
    """Whether the file at ``path`` exists, is an MP4, and matches the recorded size and hash.

    Blocking: run it in a worker thread.
    """
    try:
        with open(path, "rb") as handle:
            if not looks_like_mp4(handle.read(8)):
                return False
        actual_size, actual_sha = _hash_file(path)
    except OSError:
        return False
    return (size is None or actual_size == size) and (sha256 is None or actual_sha == sha256)


async def _fetch_once(
    session: aiohttp.ClientSession, url: str, dest: Path, limit: aiohttp.ClientTimeout
) -> Downloaded:
    part = partial_path(dest)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        async with session.get(url, headers=headers, timeout=limit) as response:
            if response.status in GONE:
                raise DownloadError(
                    f"the output URL answered {response.status}", status=response.status
                )
            if response.status == 416:  # our partial file is not a prefix of this one: start over
                part.unlink(missing_ok=True)
                raise DownloadError("the partial download did not match; starting over")
            if response.status >= 300:
                raise DownloadError(f"download answered {response.status}", status=response.status)
            resumed = (
                response.status == 206 and _starts_at(response.headers.get("Content-Range")) == have
            )
            offset = have if resumed else 0
            expected = response.content_length
            total = offset + expected if expected is not None else None
            digest = hashlib.sha256()
            if resumed:
                await anyio.to_thread.run_sync(_feed, digest, part)
            received = 0
            async with aiofiles.open(part, "ab" if resumed else "wb") as out:
                async for chunk in response.content.iter_chunked(CHUNK):
                    digest.update(chunk)
                    received += len(chunk)
                    await out.write(chunk)
                await out.flush()
                await anyio.to_thread.run_sync(os.fsync, out.fileno())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DownloadError(f"download interrupted: {type(exc).__name__}: {exc}") from None
    size = offset + received
    if total is not None and size != total:
        raise DownloadError(f"download incomplete: {size} of {total} bytes")
    if not looks_like_mp4(await anyio.to_thread.run_sync(_head, part)):
        part.unlink(missing_ok=True)
        raise DownloadError("the downloaded file is not an MP4 (no ftyp signature)", status=415)
    os.replace(part, dest)
    return Downloaded(dest, size, digest.hexdigest())


def _feed(digest: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


def _starts_at(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


async def fetch_video(
    session: aiohttp.ClientSession, url: str, dest: Path, *, seconds: float
) -> Downloaded:
    """Download ``url`` to ``dest`` atomically and return its size and sha256.

    Raises DownloadError; its ``status`` is in GONE when the URL has expired or vanished.
    """
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    async for attempt in stamina.retry_context(
        on=_transient, attempts=DOWNLOAD_ATTEMPTS, wait_initial=0.5, wait_max=30.0, timeout=None
    ):
        with attempt:
            return await _fetch_once(session, url, dest, client_timeout)
    raise AssertionError("unreachable: stamina re-raises the last error")


# -- the head of an image URL, for --check-urls --------------------------------------------
#
# Only the first bytes are fetched (a Range request; a server that ignores Range is read no
# further than that either), never with the API key: these are image hosts, not the API, and
# the requests do not count against the API's budget. Errors become a message; nothing raises.

_CONTENT_RANGE = re.compile(r"bytes\s+\d+-\d+/(\d+)")


@dataclass(frozen=True)
class Head:
    """The first bytes of a URL and the size of the whole (None: not told), or the error."""

    data: bytes = b""
    size: int | None = None
    error: str | None = None


async def fetch_head(
    session: aiohttp.ClientSession, url: str, *, limit: int, seconds: float
) -> Head:
    """Up to ``limit`` first bytes of ``url``; ``Head.error`` says why they could not be had."""
    headers = {"Range": f"bytes=0-{limit - 1}", "Accept": "image/*"}
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            if response.status >= 400:
                reason = f" ({response.reason})" if response.reason else ""
                return Head(error=f"the URL answered HTTP {response.status}{reason}")
            size = _total_size(response)
            chunks: list[bytes] = []
            got = 0
            while got < limit:
                chunk = await response.content.read(limit - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return Head(b"".join(chunks), size)
    except TimeoutError:
        return Head(error=f"the URL did not answer within {seconds:g} s")
    except aiohttp.ClientError as exc:
        return Head(error=f"cannot fetch the URL: {type(exc).__name__}: {exc}")


def _total_size(response: aiohttp.ClientResponse) -> int | None:
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    return response.content_length
