"""Downloads of the output videos from hosts that are not the API (the CDN). They never carry
the API key or count against the request window, and every failure is a TransferError (network
errors translated by ``runner.api.transport``). Images go the other way in ``imagehosts``.

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
(stamina), each said at WARNING (``runner.events``) with the caller's label. Redirects are
followed by hand, to http(s) URLs only.

Errors of a download: DownloadError for the CDN's side. Its ``status`` is the host's HTTP status
(GONE: the URL expired or vanished, re-poll for a fresh one), 413 for a video over ``max_bytes``
and 415 for a file that is not an MP4 (neither is retried), or None when no answer came.
StorageError for ours: the path and the cause (a directory in the way, a full or read-only
disk), raised by ``runner.store.videos``, whose blocking file operations run in worker threads.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anyio
import stamina
import yarl

from runner.api import transport
from runner.config import DEFAULT_TRANSFER_STALL, Limits
from runner.errors import DownloadError
from runner.events import Events, logged
from runner.store import videos
from runner.store.videos import CHUNK, partial_path

log = logging.getLogger("runner")

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
    have = await anyio.to_thread.run_sync(_prepare, dest, part)
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=stall, sock_read=stall)
    with transport.transfer_errors("", DownloadError, stall=stall):
        async with _get(session, yarl.URL(url), headers, timeout) as response:
            if response.status in GONE:
                raise DownloadError(
                    f"the output URL answered {response.status}", status=response.status
                )
            if response.status == 416:  # our partial file is not a prefix of this one
                await anyio.to_thread.run_sync(videos.discard, part)
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
            # Each trip to a worker thread costs about as much CPU as an API request: the
            # part is opened with its first chunk, and the body's last chunk is written in
            # the trip that seals and installs it (a small video takes one trip, not three).
            fd: int | None = None
            try:
                if resumed:
                    fd, digest = await anyio.to_thread.run_sync(_open_resumed, part)
                else:
                    digest = hashlib.sha256()
                size = offset
                last = b""  # the body's last chunk, held for the sealing trip
                async for chunk in response.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        await anyio.to_thread.run_sync(videos.discard, part)
                        raise _too_large(max_bytes)
                    digest.update(chunk)
                    if response.content.at_eof():
                        last = chunk
                    else:
                        fd = await anyio.to_thread.run_sync(_write, fd, part, chunk)
                if total is not None and size != total:
                    if last:  # kept in the part, for the next attempt to resume after
                        fd = await anyio.to_thread.run_sync(_write, fd, part, last)
                    raise DownloadError(f"the body ended after {size} of {total} bytes")
                fd, problem = await anyio.to_thread.run_sync(_finish, fd, part, last, dest)
            finally:
                # Inline, not in a worker thread: a cancelled download must not leak it, and
                # closing waits on no disk (the file was fsynced, or is being given up).
                if fd is not None:
                    videos.close(fd, part)
    if problem is not None:
        await anyio.to_thread.run_sync(videos.discard, part)
        raise DownloadError(f"the downloaded file is not an MP4 video: {problem}", status=NOT_MP4)
    return Downloaded(dest, size, digest.hexdigest())


def _prepare(dest: Path, part: Path) -> int:
    """In a worker thread: StorageError if ``dest`` cannot be saved to; the bytes of an earlier
    attempt at ``part`` to resume from."""
    videos.check_destination(dest)
    return videos.partial_size(part)


def _open_resumed(part: Path) -> tuple[int, hashlib._Hash]:
    """In a worker thread: the part of an earlier attempt opened to append, and its sha256."""
    fd = videos.open_part(part, resume=True)
    try:
        return fd, videos.digest_of(fd, part)
    except BaseException:
        videos.close(fd, part)
        raise


def _write(fd: int | None, part: Path, chunk: bytes) -> int:
    """In a worker thread: write ``chunk`` to the part, created afresh first if ``fd`` is None;
    the descriptor written through."""
    opened = fd is None
    if fd is None:
        fd = videos.open_part(part, resume=False)
    try:
        videos.write(fd, chunk, part)
    except BaseException:
        if opened:  # else the caller closes it
            videos.close(fd, part)
        raise
    return fd


def _finish(fd: int | None, part: Path, last: bytes, dest: Path) -> tuple[int, str | None]:
    """In a worker thread: write the body's ``last`` chunk (the part created afresh first if
    ``fd`` is None: an empty body makes an empty part, which is no MP4), then seal and install
    it (``_seal_and_install``). Returns the descriptor and the problem."""
    opened = fd is None
    if last or fd is None:
        fd = _write(fd, part, last)
    try:
        return fd, _seal_and_install(fd, part, dest)
    except BaseException:
        if opened:  # else the caller closes it
            videos.close(fd, part)
        raise


def _seal_and_install(fd: int, part: Path, dest: Path) -> str | None:
    """In a worker thread: fsync the part and check it is an MP4; if it is, rename it onto
    ``dest`` (durably) and return None, else the problem (the part stays)."""
    problem = videos.seal(fd, part)
    if problem is None:
        videos.install(part, dest)
    return problem


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
    events: Events | None = None,
) -> Downloaded:
    """Download ``url`` to ``dest`` atomically and return its size and sha256.

    Each read waits at most ``stall`` seconds for data; the whole transfer, retries included,
    at most ``seconds``. Retries wait ``wait`` seconds at first (plus up to as much jitter,
    then doubling, at most WAIT_MAX / WAIT_INITIAL times that). Every failed attempt is said
    to ``events`` (None: the log) at WARNING, starting with ``label`` (the item's id; the
    file's name if not given). Raises
    DownloadError (its ``status`` is in GONE when the URL has expired or vanished) and
    StorageError (``dest`` cannot be written: a local problem, not the CDN's).
    """
    if not transport.is_http(url):
        raise DownloadError(f"the output URL is not an http(s) URL: {transport.origin(url)}")
    events = events or logged(log)
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
                    _say_attempt(events, label or dest.name, attempt.num, exc)
                    raise
    if scope.cancelled_caught:
        raise DownloadError(f"the download did not finish within {seconds:g} s")
    raise AssertionError("unreachable: stamina re-raises the last error")


class SessionFetcher:
    """``fetch_video`` over one session, the run's way to download its videos
    (``runner.api.port.VideoFetcher``), saying failed attempts to the run's ``events``."""

    def __init__(self, session: aiohttp.ClientSession, events: Events | None = None) -> None:
        self._session = session
        self._events = events

    async def __call__(
        self,
        url: str,
        dest: Path,
        *,
        seconds: float,
        stall: float = DEFAULT_TRANSFER_STALL,
        max_bytes: int = Limits().max_video_bytes,
        label: str | None = None,
        wait: float = WAIT_INITIAL,
    ) -> Downloaded:
        """As ``fetch_video``, which documents the arguments and what it raises."""
        return await fetch_video(
            self._session,
            url,
            dest,
            seconds=seconds,
            stall=stall,
            max_bytes=max_bytes,
            label=label,
            wait=wait,
            events=self._events,
        )


def _say_attempt(events: Events, label: str, number: int, exc: DownloadError) -> None:
    if not _transient(exc):
        then = "not retried"
    elif number >= DOWNLOAD_ATTEMPTS:
        then = "giving up"
    else:
        then = "retrying"
    events.say(
        logging.WARNING,
        "%s: download attempt %d of %d failed (%s); %s",
        label,
        number,
        DOWNLOAD_ATTEMPTS,
        exc,
        then,
        item_id=label,
    )
