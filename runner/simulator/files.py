"""The simulator's second origin: presigned uploads, public storage and the CDN.

The real CDN (``cdn-us.eachlabs.ai``) and the presigned upload host are other hosts than the API,
so ``FileHost`` is served by a listener of its own (``Simulator.cdn_base_url``) and records every
request it receives in ``SimStats.cdn_requests``: a client that sends its API key to a file host
shows up there. Nothing here is an API request; only the presign is, and the API answers it by
calling ``FileHost.presign``. Transient faults (``SimConfig.fault_rate``) hit the PUT
(``upload``), storage reads (``storage``) and, if named, CDN downloads (``cdn``). It is one host
for all the accounts: uploads are shared, and the CDN serves any account's videos.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from runner.simulator.accounts import Accounts
from runner.simulator.config import SimConfig
from runner.simulator.faults import Faults, fault_answer
from runner.simulator.lifecycle import Run
from runner.simulator.listener import REQUEST_ID, Handler, request_id
from runner.simulator.stats import SeenRequest, SimStats
from runner.simulator.wire import rfc3339

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: The contract's upload limits: 100 MB a file, presigned URLs live 15 minutes (not scaled).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
PRESIGN_TTL = 15 * 60.0
#: The contract's default retention of an uploaded file (what the presign's ``expires_at`` says).
RETENTION = 180 * 24 * 3600.0
UPLOAD_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
#: Bodies are sent in chunks this large, so a generated body of gigabytes is never in memory.
CHUNK = 256 * 1024
#: What a stalled CDN sends before it goes quiet (less, if the answer is shorter: never all of it).
STALL_BYTES = 4096
#: The start of a generated body (``cdn_body_bytes``): an ``ftyp`` box, then zeros.
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@dataclass
class Upload:
    """One presigned upload slot and, once PUT, its bytes."""

    id: str
    content_type: str
    name: str  # the public file name, "<id><ext>"
    created: float
    data: bytes | None = None
    put_at: float | None = None  # loop time of the PUT

    def served(self, now: float, ttl: float | None) -> bool:
        """Whether storage serves it at ``now``: uploaded, and (with ``ttl``) not yet expired."""
        if self.data is None or self.put_at is None:
            return False
        return ttl is None or now < self.put_at + ttl


@dataclass(frozen=True)
class OwnImage:
    """An image URL that points at this simulator's storage: its bytes, or why there are none."""

    data: bytes | None
    missing: str = ""


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of a single ``bytes=`` range; None to ignore the header.

    As RFC 9110 says, a malformed range (or several, which this CDN does not serve) is ignored
    and the whole file sent; a valid one that misses the file raises ValueError (416).
    """
    unit, _, spec = header.partition("=")
    first_text, dash, last_text = (part.strip() for part in spec.partition("-"))
    numbers = [text for text in (first_text, last_text) if text]
    if unit.strip().lower() != "bytes" or not dash or not numbers:
        return None
    if not all(text.isdigit() for text in numbers):
        return None
    if not first_text:  # a suffix: the last N bytes
        if int(last_text) == 0:
            raise ValueError("an empty suffix range")
        return max(0, size - int(last_text)), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        raise ValueError("the range starts beyond the file")
    last = min(int(last_text), size - 1) if last_text else size - 1
    return first, last


def generated_bytes(offset: int, length: int) -> bytes:
    """Bytes ``offset`` to ``offset + length`` of a generated body: FTYP, then zeros."""
    head = FTYP[offset : offset + length]
    return head + bytes(length - len(head))


class FileHost:
    """Uploads, storage and the CDN of one simulator; ``app`` builds what its listener serves.

    ``base_url`` is set by the simulator once the listener is bound.
    """

    def __init__(
        self, config: SimConfig, stats: SimStats, accounts: Accounts, faults: Faults
    ) -> None:
        self.config = config
        self.stats = stats
        self.accounts = accounts
        self.faults = faults
        self.base_url = ""
        self._uploads: dict[str, Upload] = {}  # by id and by public name
        self._secret = secrets.token_bytes(16)

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._record, request_id], client_max_size=MAX_UPLOAD_BYTES + 1
        )
        app.router.add_put("/upload/{id}", self._put)
        app.router.add_get("/storage/{name}", self._storage)
        app.router.add_get("/cdn/{name}", self._cdn)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Keep every request this host receives (not its body: uploads may be 100 MB)."""
        seen = SeenRequest(request.method, request.raw_path, dict(request.headers))
        self.stats.cdn_requests.append(seen)
        return await handler(request)

    # -- what the API asks of it -----------------------------------------------------------------

    def presign(self, content_type: str, now: float) -> dict[str, Any]:
        """A new upload slot: the presign answer. ``expires_at`` is the file's retention deadline
        (``storage_ttl`` when set, else the contract's 180 days), not the 15-minute PUT window."""
        upload_id = uuid.uuid4().hex
        upload = Upload(upload_id, content_type, upload_id + UPLOAD_TYPES[content_type], now)
        self._uploads[upload.id] = self._uploads[upload.name] = upload
        self.stats.presigns += 1
        signature = self._sign("put", upload_id)
        retention = self.config.storage_ttl if self.config.storage_ttl is not None else RETENTION
        return {
            "id": upload_id,
            "presigned_url": f"{self.base_url}/upload/{upload_id}?X-Amz-Expires="
            f"{PRESIGN_TTL:.0f}&X-Amz-Signature={signature}",
            "public_url": f"{self.base_url}/storage/{upload.name}",
            "expires_at": rfc3339(time.time() + retention),
            "required_headers": {"Content-Type": content_type, "x-amz-acl": "public-read"},
        }

    def own_image(self, url: str, now: float) -> OwnImage | None:
        """What storage holds for an image URL on this host at ``now``; None if it is not one."""
        try:
            parsed = URL(url)
        except ValueError:
            return None
        if parsed.host not in LOOPBACK_HOSTS or parsed.port != URL(self.base_url).port:
            return None
        if not parsed.path.startswith("/storage/"):
            return None
        upload = self._uploads.get(parsed.name)
        if upload is None or upload.data is None or upload.name != parsed.name:
            return OwnImage(None, "nothing was uploaded there")
        if not upload.served(now, self.config.storage_ttl):
            self.stats.expired_uploads += 1
            return OwnImage(None, "the upload expired")
        return OwnImage(upload.data)

    def video_url(self, run: Run) -> str | None:
        """A fresh CDN URL for a finished video; signed with an expiry when url_ttl is set."""
        if run.ended != "success":
            return None
        url = f"{self.base_url}/cdn/{run.id}.mp4"
        if self.config.url_ttl is None:
            return url
        expires = f"{time.time() + self.config.url_ttl:.3f}"
        return f"{url}?exp={expires}&sig={self._sign(run.id, expires)}"

    def _sign(self, *parts: str) -> str:
        message = ":".join(parts).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    async def _fault(self, request: web.Request, endpoint: str) -> web.Response | None:
        """The answer to send if this request to ``endpoint`` faults (``fault_rate``), else None."""
        kind = self.faults.draw(endpoint)
        if kind is None:
            return None
        error = web.Response(status=500, text="InternalError: We encountered an internal error.")
        return await fault_answer(request, kind, self.config.fault_hang, server_error=error)

    # -- the routes ------------------------------------------------------------------------------

    async def _put(self, request: web.Request) -> web.Response:
        """The presigned PUT: signature, expiry and the required headers, as S3 checks them."""
        fault = await self._fault(request, "upload")
        if fault is not None:
            return fault
        upload = self._uploads.get(request.match_info["id"])
        signature = request.query.get("X-Amz-Signature", "")
        if upload is None or not hmac.compare_digest(signature, self._sign("put", upload.id)):
            return web.Response(status=403, text="SignatureDoesNotMatch")
        refuse = self.config.upload_refuse_status
        if refuse is not None:
            return web.Response(status=refuse, text="AccessDenied: the bucket refuses uploads")
        if asyncio.get_running_loop().time() > upload.created + PRESIGN_TTL:
            return web.Response(status=403, text="Request has expired")
        if request.headers.get("Content-Type") != upload.content_type:
            return web.Response(status=403, text="SignatureDoesNotMatch: Content-Type")
        if request.headers.get("x-amz-acl") != "public-read":
            return web.Response(status=403, text="SignatureDoesNotMatch: x-amz-acl")
        if (request.content_length or 0) > MAX_UPLOAD_BYTES:
            return web.Response(status=413, text="EntityTooLarge")
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="EntityTooLarge")
        if len(data) > MAX_UPLOAD_BYTES:
            return web.Response(status=413, text="EntityTooLarge")
        upload.data, upload.put_at = data, asyncio.get_running_loop().time()
        self.stats.uploads += 1
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def _storage(self, request: web.Request) -> web.Response:
        """An uploaded file, publicly readable until ``storage_ttl`` after its PUT."""
        fault = await self._fault(request, "storage")
        if fault is not None:
            return fault
        upload = self._uploads.get(request.match_info["name"])
        if upload is None or upload.data is None or upload.name != request.match_info["name"]:
            return web.Response(status=404, text="NoSuchKey")
        if not upload.served(asyncio.get_running_loop().time(), self.config.storage_ttl):
            self.stats.expired_uploads += 1
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=upload.data, content_type=upload.content_type)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """An output video: Range (206), expiring signed URLs (403), truncated transfers, and
        (``cdn_body_bytes``, ``cdn_stall``) a generated body or a transfer that goes quiet.

        A stalled answer promises its whole Content-Length, sends the first STALL_BYTES (at most
        all but the last byte), then nothing until the client goes away or the host stops."""
        c = self.config
        self.stats.downloads += 1
        fault = await self._fault(request, "cdn")
        if fault is not None:
            return fault
        name = request.match_info["name"]
        run = self.accounts.find(name.removesuffix(".mp4"))
        if not name.endswith(".mp4") or run is None or run.video is None or run.ended != "success":
            return web.Response(status=404, text="Not Found")
        if c.url_ttl is not None:
            expires, signature = request.query.get("exp", ""), request.query.get("sig", "")
            if not hmac.compare_digest(signature, self._sign(run.id, expires)):
                return web.Response(status=403, text="AccessDenied: bad signature")
            if float(expires) < time.time():
                return web.Response(status=403, text="AccessDenied: Request has expired")
        video = run.video
        size = len(video) if c.cdn_body_bytes is None else c.cdn_body_bytes
        read: Callable[[int, int], bytes] = (
            (lambda offset, length: video[offset : offset + length])
            if c.cdn_body_bytes is None
            else generated_bytes
        )
        headers = {"Content-Type": "video/mp4", "Accept-Ranges": "bytes" if c.cdn_range else "none"}
        first, last, status = 0, size - 1, 200
        if c.cdn_range and "Range" in request.headers:
            try:
                wanted = parse_range(request.headers["Range"], size)
            except ValueError:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            if wanted is not None:
                (first, last), status = wanted, 206
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        length = last + 1 - first
        headers["X-Request-Id"] = request[REQUEST_ID]
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = length
        truncate = self.faults.truncates()
        await response.prepare(request)
        if c.cdn_stall:  # promise everything, send the start, then nothing until cancelled
            # Never the last byte: a stalled transfer never completes, however short the answer
            # (a client resuming 4 KB at a time would otherwise finish a small video).
            await _send(response, read, first, min(length - 1, STALL_BYTES))
            await asyncio.Event().wait()  # the listener cancels it when the client goes away
            return response
        if truncate:  # promise everything, send part, hang up
            await _send(response, read, first, length // 2)
            if request.transport is not None:
                request.transport.close()
            return response
        await _send(response, read, first, length)
        await response.write_eof()
        return response


async def _send(
    response: web.StreamResponse, read: Callable[[int, int], bytes], first: int, length: int
) -> None:
    """Write ``length`` bytes from ``first`` in chunks, each waiting for the client to take it."""
    offset, end = first, first + length
    while offset < end:
        count = min(CHUNK, end - offset)
        await response.write(read(offset, count))
        offset += count
