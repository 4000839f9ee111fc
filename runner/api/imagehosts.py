"""Images and the hosts that are not the API: the upload's PUT to a presigned URL, and the
first bytes of an image URL for ``--check-urls``. Neither carries the API key or counts against
the request window; network errors are translated by ``runner.api.transport``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import anyio
import yarl

from runner.api import protocol, transport
from runner.errors import TransferError

#: 307/308 hops followed for one upload.
UPLOAD_HOPS = 3


# -- an image to a presigned URL --------------------------------------------------------------


async def put_image(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    data: bytes,
    headers: Mapping[str, str],
    *,
    limits: aiohttp.ClientTimeout,
    scrub: Callable[[str], str],
) -> None:
    """PUT ``data`` to a presigned URL, following 307/308 to http(s) URLs only (at most
    UPLOAD_HOPS); ``scrub`` blanks the API key from the host's text should it echo it.

    Raises TransferError: with the host's ``status`` when it answered one (a 4xx, or another
    redirect, or one to a URL that is not http(s): refused), ``status`` None when no answer came.
    """
    for _hop in range(UPLOAD_HOPS + 1):
        host = transport.origin(url)
        with transport.transfer_errors(f"the image upload to {host} failed"):
            async with session.put(
                url, data=data, headers=headers, timeout=limits, allow_redirects=False
            ) as response:
                status, reason = response.status, response.reason or ""
                where = response.headers.get("Location")
                text = scrub((await response.content.read(4096)).decode("utf-8", errors="replace"))
        if status < 300:
            return
        if status in transport.KEEP_METHOD:
            target = transport.location(url, where)
            if target is not None and transport.is_http(target):
                url = target
                continue
            shown = transport.origin(target) if target is not None else "no usable URL"
            raise TransferError(
                f"the image upload to {host} was redirected ({status}) to {shown}: not followed",
                status=status,
            )
        message, _ = protocol.error_text(text, reason)
        raise TransferError(
            f"the image upload to {host} was refused: HTTP {status}: {message}", status=status
        )
    raise TransferError(f"the image upload made more than {UPLOAD_HOPS} redirects", status=status)


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
