"""Transfers from hosts that are not the API: output videos, and the heads of image URLs.

A video is streamed to ``<id>.mp4.part`` beside its final name, checked (the length the server
announced, at most ``max_bytes``, and a real MP4: ``mp4_problem`` walks its boxes), hashed,
fsynced, then renamed into place: a file with the final name is always complete. A partial file
left by an earlier attempt is resumed with a Range request when the server honours it, else
fetched again from the start.

Nothing is written through a planted link: the ``.part`` is opened with ``O_NOFOLLOW`` (a link
there is removed, which never touches its target, and the file created afresh with
``O_EXCL``), and the final rename replaces whatever entry has the final name rather than
writing through it.

Time is bounded twice: a read that brings no data for ``stall`` seconds fails the attempt, and
the whole transfer, every retry and back-off included, ends after ``seconds``. Transient
failures (no answer, a body cut short, a 5xx) are retried with jittered exponential back-off
(stamina), each logged at WARNING with the caller's label. Redirects are followed to http(s)
URLs only, and the API key is never sent (these are not API requests).

Errors: DownloadError for the CDN's side. Its ``status`` is the host's HTTP status (GONE: the URL
expired or vanished, re-poll for a fresh one), 413 for a video over ``max_bytes`` and 415 for a
file that is not an MP4 (neither is retried), or None when no answer came. StorageError for
ours: the path and the cause (a directory in the way, a full or read-only disk).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio
import stamina
import yarl

from runner import transport
from runner.config import DEFAULT_TRANSFER_STALL, Limits
from runner.errors import DownloadError, StorageError, TransferError

log = logging.getLogger("runner")

CHUNK = 256 * 1024
#: Statuses that mean the URL is gone or expired: fetching it again cannot help.
GONE = frozenset({401, 403, 404, 410})
#: Attempts per video, and the jittered back-off between them (0.5 s doubling to 30 s, plus
#: up to 0.5 s of jitter; scaled by ``Limits.fault_wait``).
DOWNLOAD_ATTEMPTS = 5
WAIT_INITIAL = 0.5
WAIT_MAX = 30.0
#: Redirects followed for one download (CDNs redirect to edges, seldom more than once).
MAX_REDIRECTS = 5
#: The pseudo statuses of a video refused for what it is: retrying cannot change either.
TOO_LARGE = 413
NOT_MP4 = 415
_MB = 1024 * 1024


@dataclass(frozen=True)
class Downloaded:
    path: Path
    bytes: int
    sha256: str


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


# -- the MP4 check: a small ISO-BMFF box walker (pure) ---------------------------------------

#: More top-level boxes than this is not a video of ours (a fragmented MP4 of a few seconds
#: has a few hundred), and would only make the walk slow.
MAX_BOXES = 100_000

Reader = Callable[[int, int], bytes]
"""``read(offset, size)``: up to ``size`` bytes of the file from ``offset``."""


@dataclass(frozen=True)
class Box:
    """One box: its four-letter type, where its payload starts and where it ends."""

    kind: bytes
    start: int
    payload: int
    end: int


class _Malformed(Exception):
    pass


def boxes(read: Reader, start: int, end: int) -> Iterator[Box]:
    """The boxes laid end to end in ``[start, end)``; _Malformed at the first that is not
    well formed (a header cut short, a size that is impossible or runs past ``end``, a type
    that is not four printable characters)."""
    offset = start
    count = 0
    while offset < end:
        count += 1
        if count > MAX_BOXES:
            raise _Malformed(f"more than {MAX_BOXES} boxes")
        header = read(offset, 8) if offset + 8 <= end else b""
        if len(header) < 8:
            raise _Malformed(f"the box header at byte {offset} is cut short")
        size, kind = struct.unpack(">I4s", header)
        if not all(0x20 <= byte <= 0x7E for byte in kind):
            raise _Malformed(f"the box at byte {offset} has no type ({kind!r})")
        head = 8
        if size == 1:  # a 64-bit size follows the type
            large = read(offset + 8, 8) if offset + 16 <= end else b""
            if len(large) < 8:
                raise _Malformed(f"the {_name(kind)} box at byte {offset} is cut short")
            (size,) = struct.unpack(">Q", large)
            head = 16
        elif size == 0:  # the box runs to the end
            size = end - offset
        if size < head:
            raise _Malformed(f"the {_name(kind)} box at byte {offset} has the size {size}")
        if offset + size > end:
            raise _Malformed(
                f"the {_name(kind)} box at byte {offset} runs past the end "
                f"({offset + size} > {end} bytes)"
            )
        yield Box(kind, offset, offset + head, offset + size)
        offset += size


def _name(kind: bytes) -> str:
    return kind.decode("latin-1")


def _children(read: Reader, parent: Box, kind: bytes) -> Iterator[Box]:
    return (box for box in boxes(read, parent.payload, parent.end) if box.kind == kind)


def mp4_problem(read: Reader, size: int) -> str | None:
    """Why a file of ``size`` bytes is not an MP4 video; None when it is one.

    An MP4 here: top-level boxes well formed and inside the file, the first an ``ftyp``, and a
    ``moov`` holding at least one ``trak`` whose ``mdia/hdlr`` handler type is ``vide``.
    """
    try:
        top = boxes(read, 0, size)
        first = next(top, None)
        if first is None or first.kind != b"ftyp":
            return "it does not start with an ftyp box"
        moovs = [box for box in top if box.kind == b"moov"]
        if not moovs:
            return "it has no moov box"
        for moov in moovs:
            for trak in _children(read, moov, b"trak"):
                for mdia in _children(read, trak, b"mdia"):
                    for hdlr in _children(read, mdia, b"hdlr"):
                        # FullBox: version and flags (4), pre_defined (4), handler_type (4)
                        if hdlr.end >= hdlr.payload + 12 and read(hdlr.payload + 8, 4) == b"vide":
                            return None
    except _Malformed as exc:
        return str(exc)
    return "it has no video track"


def mp4_bytes_problem(data: bytes) -> str | None:
    """``mp4_problem`` of bytes in memory."""
    return mp4_problem(lambda offset, size: data[offset : offset + size], len(data))


def _fd_reader(fd: int) -> Reader:
    return lambda offset, size: os.pread(fd, size, offset)


# -- files on disk (blocking: run in a worker thread) ----------------------------------------


@contextmanager
def _storage(path: Path, doing: str) -> Iterator[None]:
    """OSError of a local file operation becomes StorageError naming the path and the cause."""
    try:
        yield
    except IsADirectoryError:
        raise StorageError(f"cannot {doing} {path}: a directory is in the way") from None
    except OSError as exc:
        raise StorageError(f"cannot {doing} {path}: {exc.strerror or exc}") from None


def verify(path: Path, size: int | None, sha256: str | None) -> bool:
    """Whether ``path`` is a regular file (not a link) holding an MP4 video that matches the
    recorded size and hash. Blocking: run it in a worker thread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (size is not None and info.st_size != size):
            return False
        if mp4_problem(_fd_reader(fd), info.st_size) is not None:
            return False
        digest = hashlib.sha256()
        _feed(digest, fd)
        return sha256 is None or digest.hexdigest() == sha256
    except OSError:
        return False
    finally:
        os.close(fd)


def _check_destination(dest: Path) -> None:
    """StorageError if the final name is taken by a directory (nothing would be saved)."""
    with _storage(dest, "save the video to"):
        try:
            if stat.S_ISDIR(os.lstat(dest).st_mode):
                raise IsADirectoryError
        except FileNotFoundError:
            pass


def _partial_size(part: Path) -> int:
    """Bytes of an earlier attempt to resume from. Anything at ``part`` that is not a regular
    file (a link, a FIFO) is removed: unlinking a link never touches its target."""
    with _storage(part, "use the partial download"):
        try:
            info = os.lstat(part)
        except FileNotFoundError:
            return 0
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if stat.S_ISREG(info.st_mode):
            return info.st_size
        os.unlink(part)
        return 0


def _open_part(part: Path, resume: bool) -> int:
    """A descriptor to write ``part`` through, never through a link: appending to the regular
    file there (``resume``), or to a file created afresh after removing whatever was there."""
    with _storage(part, "write"):
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        if resume:
            fd = os.open(part, flags | os.O_APPEND | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise StorageError(f"cannot write {part}: it is not a regular file")
            return fd
        with suppress(FileNotFoundError):
            os.unlink(part)
        return os.open(part, flags | os.O_CREAT | os.O_EXCL, 0o644)


def _write(fd: int, data: bytes, part: Path) -> None:
    with _storage(part, "write"):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


def _seal(fd: int, part: Path) -> str | None:
    """fsync the finished part and check it is an MP4; the problem, or None."""
    with _storage(part, "write"):
        os.fsync(fd)
        return mp4_problem(_fd_reader(fd), os.fstat(fd).st_size)


def _install(part: Path, dest: Path) -> None:
    """Rename ``part`` onto ``dest`` (replacing a link there, never writing through it) and
    make the rename durable."""
    with _storage(dest, "save the video to"):
        os.replace(part, dest)
        folder = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _discard(part: Path) -> None:
    with _storage(part, "remove"):
        part.unlink(missing_ok=True)


def _feed(digest: hashlib._Hash, fd: int) -> None:
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)


# -- the transfer ----------------------------------------------------------------------------


def _transient(exc: Exception) -> bool:
    """Worth another try: the connection broke, the body was cut short, or the CDN had a 5xx."""
    return isinstance(exc, DownloadError) and (exc.status is None or exc.status >= 500)


def _too_large(max_bytes: int) -> DownloadError:
    return DownloadError(
        f"the video is over {max_bytes / _MB:g} MB (--max-video-mb)", status=TOO_LARGE
    )


@asynccontextmanager
async def _get(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    headers: dict[str, str],
    limits: aiohttp.ClientTimeout,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The answer to a GET of ``url``, redirects followed by hand to http(s) URLs only."""
    status = 0
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(
            url, headers=headers, timeout=limits, allow_redirects=False
        ) as response:
            if response.status not in transport.REDIRECTS:
                yield response
                return
            status = response.status
            target = transport.location(url, response.headers.get("Location"))
        if target is None or not transport.is_http(target):
            shown = transport.origin(target) if target is not None else "no usable URL"
            raise DownloadError(
                f"the output URL redirected ({status}) to {shown}: not followed", status=status
            )
        url = target
    raise DownloadError(f"the output URL redirected more than {MAX_REDIRECTS} times", status=status)


async def _fetch_once(
    session: aiohttp.ClientSession, url: str, dest: Path, *, stall: float, max_bytes: int
) -> Downloaded:
    part = partial_path(dest)
    have = await anyio.to_thread.run_sync(_partial_size, part)
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
    with transport.transfer_errors("", DownloadError, stall=stall):
        async with _get(session, yarl.URL(url), headers, timeout) as response:
            if response.status in GONE:
                raise DownloadError(
                    f"the output URL answered {response.status}", status=response.status
                )
            if response.status == 416:  # our partial file is not a prefix of this one
                await anyio.to_thread.run_sync(_discard, part)
                raise DownloadError("the partial download did not match; starting over")
            if response.status >= 300:
                raise DownloadError(
                    f"the output URL answered {response.status}", status=response.status
                )
            resumed = (
                response.status == 206 and _starts_at(response.headers.get("Content-Range")) == have
            )
            offset = have if resumed else 0
            expected = response.content_length
            total = offset + expected if expected is not None else None
            if total is not None and total > max_bytes:
                raise _too_large(max_bytes)
            fd = await anyio.to_thread.run_sync(_open_part, part, resumed)
            try:
                digest = hashlib.sha256()
                if resumed:
                    await anyio.to_thread.run_sync(_feed, digest, fd)
                size = offset
                async for chunk in response.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        await anyio.to_thread.run_sync(_discard, part)
                        raise _too_large(max_bytes)
                    digest.update(chunk)
                    await anyio.to_thread.run_sync(_write, fd, chunk, part)
                if total is not None and size != total:
                    raise DownloadError(f"the body ended after {size} of {total} bytes")
                problem = await anyio.to_thread.run_sync(_seal, fd, part)
            finally:
                os.close(fd)
    if problem is not None:
        await anyio.to_thread.run_sync(_discard, part)
        raise DownloadError(f"the downloaded file is not an MP4 video: {problem}", status=NOT_MP4)
    await anyio.to_thread.run_sync(_install, part, dest)
    return Downloaded(dest, size, digest.hexdigest())


def _starts_at(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


async def fetch_video(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    seconds: float,
    stall: float = DEFAULT_TRANSFER_STALL,
    max_bytes: int = Limits().max_video_bytes,
    label: str | None = None,
    wait: float = WAIT_INITIAL,
) -> Downloaded:
    """Download ``url`` to ``dest`` atomically and return its size and sha256.

    Each read waits at most ``stall`` seconds for data; the whole transfer, retries included,
    at most ``seconds``. Retries wait ``wait`` seconds at first (plus up to as much jitter,
    then doubling, at most WAIT_MAX / WAIT_INITIAL times that). Every failed attempt is logged
    at WARNING, starting with ``label`` (the item's id; the file's name if not given). Raises
    DownloadError (its ``status`` is in GONE when the URL has expired or vanished) and
    StorageError (``dest`` cannot be written: a local problem, not the CDN's).
    """
    if not transport.is_http(url):
        raise DownloadError(f"the output URL is not an http(s) URL: {transport.origin(url)}")
    await anyio.to_thread.run_sync(_check_destination, dest)
    with anyio.move_on_after(seconds) as scope:
        async for attempt in stamina.retry_context(
            on=_transient,
            attempts=DOWNLOAD_ATTEMPTS,
            wait_initial=wait,
            wait_max=wait * WAIT_MAX / WAIT_INITIAL,
            wait_jitter=wait,
            timeout=None,
        ):
            with attempt:
                try:
                    return await _fetch_once(session, url, dest, stall=stall, max_bytes=max_bytes)
                except DownloadError as exc:
                    _log_attempt(label or dest.name, attempt.num, exc)
                    raise
    if scope.cancelled_caught:
        raise DownloadError(f"the download did not finish within {seconds:g} s")
    raise AssertionError("unreachable: stamina re-raises the last error")


def _log_attempt(label: str, number: int, exc: DownloadError) -> None:
    if not _transient(exc):
        then = "not retried"
    elif number >= DOWNLOAD_ATTEMPTS:
        then = "giving up"
    else:
        then = "retrying"
    log.warning(
        "%s: download attempt %d of %d failed (%s); %s",
        label,
        number,
        DOWNLOAD_ATTEMPTS,
        exc,
        then,
    )


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
    head = Head(error=f"the URL did not answer within {seconds:g} s")
    with anyio.move_on_after(seconds):
        try:
            head = await _read_head(session, url, headers, limit)
        except TransferError as exc:
            head = Head(error=str(exc))
    return head


async def _read_head(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], limit: int
) -> Head:
    with transport.transfer_errors("cannot fetch the URL"):
        async with session.get(url, headers=headers) as response:
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


def _total_size(response: aiohttp.ClientResponse) -> int | None:
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    return response.content_length
