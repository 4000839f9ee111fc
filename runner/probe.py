"""``--check-urls``: fetch the first bytes of an image URL to check it like a local file.

Only the head is fetched (a ``Range`` request; a server that ignores Range is read no further
than the head either). The API key is never sent: these are the image hosts, not the API, and
the requests do not count against the API's request budget. aiohttp's errors are turned into a
message here; nothing is raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiohttp

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
