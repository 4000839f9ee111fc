"""The simulator's HTTP server: the Eachlabs API routes, presigned uploads, storage and the CDN.

Routes turn requests into calls on ``state.Account`` and answer with the contract's shapes. Each
prediction has one task (in the simulator's task group) that fetches its image, has the video
rendered in a worker thread, and ends the prediction when its outcome is due to show. The server
listens on loopback only: it accepts any key and fetches any URL it is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError
from yarl import URL

from runner.models import MODELS
from runner.simulator import state
from runner.simulator.config import SimConfig
from runner.simulator.state import Account, Prediction, RequestWindow, SimStats
from runner.simulator.video import RenderError, motion_for, render_mp4

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: The contract's upload limits: 100 MB a file, presigned URLs live 15 minutes (not scaled).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
PRESIGN_TTL = 15 * 60.0
UPLOAD_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
#: The contract's generic image limits: at most 20 MB, 64-8192 px a side.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_SIDES = (64, 8192)
#: How long the server waits for running handlers when it stops (a held create, a slow download).
SHUTDOWN_GRACE = 0.25

DEFAULT_CONFIG = SimConfig()
REQUEST_ID = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FetchError(Exception):
    """An image URL could not be fetched (the prediction ends in INPUT_DOWNLOAD_ERROR)."""


@dataclass
class Upload:
    """One presigned upload slot and, once PUT, its bytes."""

    id: str
    content_type: str
    name: str  # the public file name, "<id><ext>"
    created: float
    data: bytes | None = None


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


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


def image_problem(data: bytes) -> str | None:
    """Why ``data`` is not an image the model takes (format, size, sides), or None."""
    if len(data) > MAX_IMAGE_BYTES:
        return "larger than 20 MB"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        return "not a JPEG, PNG, WebP or GIF image"
    low, high = IMAGE_SIDES
    if not (low <= width <= high and low <= height <= high):
        return f"{width}x{height} px; each side must be {low}-{high} px"
    return None


class Simulator:
    """The built-in Eachlabs API on loopback: ``async with Simulator(config) as sim: ...``.

    ``base_url`` (set on entry) is where the client points; ``stats`` counts what it did.
    """

    def __init__(
        self, config: SimConfig = DEFAULT_CONFIG, *, host: str = "127.0.0.1", port: int = 0
    ):
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"the simulator listens on loopback only, not {host!r}")
        self.config = config
        self.host = host
        self.port = port
        self.base_url = ""
        self.stats = SimStats()
        self._account = Account(config, self.stats)
        self._window = (
            RequestWindow(config.rate_limit, config.rate_window) if config.rate_limit else None
        )
        self._uploads: dict[str, Upload] = {}  # by id and by public name
        self._renders: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._secret = secrets.token_bytes(16)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._driver: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        self._driver = asyncio.create_task(self._drive(started))
        try:
            await started
            self._session = aiohttp.ClientSession()
            app = web.Application(
                middlewares=[self._request_id], client_max_size=MAX_UPLOAD_BYTES + 1
            )
            self._add_routes(app)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.port).start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self.port = int(self._runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving, then stop the prediction tasks, then close the fetch session.

        Raises what a prediction task raised by mistake (a bug in the simulator).
        """
        if self._runner is not None:
            await self._runner.cleanup()
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.cancel()
            await asyncio.wait([driver])
        if self._session is not None:
            await self._session.close()
        error = driver.exception() if driver is not None and not driver.cancelled() else None
        if error is not None:
            raise error

    async def _drive(self, started: asyncio.Future[None]) -> None:
        """Own the task group of the prediction tasks until the simulator stops."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            started.set_result(None)
            await asyncio.Event().wait()

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/prediction", self._create)
        r.add_post("/v1/prediction/", self._create)
        r.add_get("/v1/prediction/{id}", self._get)
        r.add_post("/v1/prediction/{id}/cancel", self._cancel)
        r.add_get("/v1/model", self._model)
        r.add_get("/v1/models", self._models)
        r.add_get("/v1/executions", self._executions)
        r.add_post("/v1/upload/presign", self._presign)
        r.add_put("/upload/{id}", self._put)
        r.add_get("/storage/{name}", self._storage)
        r.add_get("/cdn/{name}", self._cdn)
        r.add_get("/_sim/stats", self._stats)

    @web.middleware
    async def _request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Echo the client's X-Request-Id (or make one) on every answer."""
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["X-Request-Id"] = request_id
            raise
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    # -- the API's gate: accounting, request rate, key --------------------------------------------

    def _gate(
        self, request: web.Request, endpoint: str, *, auth: bool = True
    ) -> web.Response | None:
        """Count an API request; the refusal to send if it is over the rate or lacks a valid key.

        A request refused for rate does not count against the window, so waiting it out works.
        """
        now = asyncio.get_running_loop().time()
        self.stats.api_requests.append((now, endpoint))
        if self._window is not None and not self._window.admit(now):
            self.stats.refused_rate += 1
            details = (
                f"Rate limit exceeded: at most {self._window.limit} requests "
                f"per {self._window.window:g} seconds"
            )
            return self._too_many({"status": 429, "error": "too many requests", "details": details})
        if auth:
            key = request.headers.get("X-API-Key", "").strip()
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if not key and scheme.lower() == "bearer":
                key = token.strip()
            if not key or (self.config.api_keys is not None and key not in self.config.api_keys):
                return _json({"error": "Invalid or missing API key"}, 401)
        return None

    def _too_many(self, body: dict[str, Any]) -> web.Response:
        after = self.config.retry_after
        return _json(body, 429, {"Retry-After": f"{after:g}"} if after is not None else None)

    # -- predictions -----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "create")
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            body = None
        if not isinstance(body, dict):
            return _json({"error": "invalid request body"}, 422)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _json({"error": "model is required"}, 400)
        info = MODELS.get(model)
        if info is None:
            return _json({"status": 404, "error": "not found"}, 404)
        given = body.get("input")
        problem = state.validate_input(info.request_schema(), given)
        if problem is not None:
            return _json({"error": problem}, 400)
        assert isinstance(given, dict)
        refused = self._account.create_refusal()
        if refused is not None:
            status, answer = refused
            return self._too_many(answer) if status == 429 else _json(answer, status)
        loop = asyncio.get_running_loop()
        own, image = self._own_upload(str(given[info.image_field]))
        digest = hashlib.sha256(image).hexdigest() if image is not None else None
        pred = self._account.create(model, json.loads(json.dumps(given)), loop.time(), digest)
        self._task_group.create_task(self._run(pred, str(given[info.image_field]), own, image))
        rate = self.config.create_fault_rate
        fault = rate > 0 and self._account.rng.random() < rate
        if self.config.create_delay > 0:
            await asyncio.sleep(self.config.create_delay)
        if fault:
            return web.Response(status=500, text="upstream error")
        return _json(
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": pred.id,
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "get")
        if refusal is not None:
            return refusal
        pred = self._account.predictions.get(request.match_info["id"])
        if pred is None:
            return _json({"error": "Prediction not found"}, 404)
        now = asyncio.get_running_loop().time()
        return _json(self._account.envelope(pred, now, self._video_url(pred), self.base_url))

    async def _cancel(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "cancel")
        if refusal is not None:
            return refusal
        pred = self._account.predictions.get(request.match_info["id"])
        if pred is None:
            return _json({"error": "Prediction not found"}, 404)
        message = "Prediction already finished; nothing to cancel"
        if pred.ended is None:
            self._account.finish(pred, "cancelled", asyncio.get_running_loop().time())
            message = "Prediction cancelled"
        return _json({"status": "success", "message": message, "predictionID": pred.id})

    @property
    def _task_group(self) -> asyncio.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the simulator is not running")
        return self._tg

    def _own_upload(self, url: str) -> tuple[bool, bytes | None]:
        """``(is one of ours, its bytes if uploaded)`` for an image URL."""
        try:
            parsed = URL(url)
        except ValueError:
            return False, None
        ours = parsed.host in LOOPBACK_HOSTS | {self.host} and parsed.port == self.port
        if not ours or not parsed.path.startswith("/storage/"):
            return False, None
        upload = self._uploads.get(parsed.name)
        return True, upload.data if upload is not None else None

    async def _run(self, pred: Prediction, url: str, own: bool, image: bytes | None) -> None:
        """Fetch the image, render the video, and end the prediction when its outcome is due."""
        loop = asyncio.get_running_loop()
        failure: state.Failure | None = None
        try:
            if image is None:
                image = await self._fetch(url, own)
        except FetchError as exc:
            failure = state.download_failure(str(exc))
        else:
            problem = image_problem(image)
            if problem is not None:
                failure = state.image_failure(problem)
        if failure is not None:  # an input problem shows soon, not after the run time
            pred.failure = failure
            await asyncio.sleep(self._account.visible_time(pred, loop.time()) - loop.time())
            self._account.finish(pred, "error", loop.time())
            return
        assert image is not None
        due = pred.due
        if pred.failure is None:
            try:
                pred.video = await self._render(image, str(pred.input.get("prompt", "")))
            except RenderError as exc:
                pred.failure = state.image_failure(str(exc))
            due = max(due, self._account.visible_time(pred, loop.time()))
        await asyncio.sleep(due - loop.time())
        self._account.finish(pred, "success" if pred.failure is None else "error", loop.time())

    async def _fetch(self, url: str, own: bool) -> bytes:
        """The bytes at an image URL; FetchError if they cannot be had within fetch_timeout."""
        if own:
            raise FetchError(f"{url}: HTTP 404 (nothing was uploaded there)")
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.config.fetch_timeout)
        try:
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise FetchError(f"{url}: HTTP {response.status}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        break
                return b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def _render(self, image: bytes, prompt: str) -> bytes:
        """The MP4 for an image and prompt, rendered once per (image, motion) in a worker thread."""
        key = (hashlib.sha256(image).hexdigest(), motion_for(prompt))
        pending = self._renders.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._renders[key] = done
        self.stats.renders += 1
        c = self.config
        try:
            video = await asyncio.to_thread(
                render_mp4, image, prompt, seconds=c.video_seconds, max_side=c.max_side
            )
        except RenderError as exc:
            del self._renders[key]
            done.set_exception(exc)
            done.exception()  # retrieved: waiters (if any) get it too
            raise
        except BaseException:
            del self._renders[key]
            done.cancel()
            raise
        done.set_result(video)
        return video

    def _video_url(self, pred: Prediction) -> str | None:
        """A fresh CDN URL for a finished video; signed with an expiry when url_ttl is set."""
        if pred.ended != "success":
            return None
        url = f"{self.base_url}/cdn/{pred.id}.mp4"
        if self.config.url_ttl is None:
            return url
        expires = f"{time.time() + self.config.url_ttl:.3f}"
        return f"{url}?exp={expires}&sig={self._sign(pred.id, expires)}"

    def _sign(self, *parts: str) -> str:
        message = ":".join(parts).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    # -- models and executions -------------------------------------------------------------------

    async def _model(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "model", auth=False)
        if refusal is not None:
            return refusal
        info = MODELS.get(request.query.get("slug", ""))
        if info is None:
            return _json({"error": "Failed to fetch model: model not found"}, 404)
        return _json(info.describe())

    async def _models(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "models", auth=False)
        if refusal is not None:
            return refusal
        try:
            limit = int(request.query.get("limit") or 50)
            offset = int(request.query.get("offset") or 0)
        except ValueError:
            return _json({"error": "limit and offset must be integers"}, 400)
        if not (1 <= limit <= 100 and offset >= 0):
            return _json({"error": "limit must be 1-100 and offset at least 0"}, 400)
        name = request.query.get("name", "").lower()
        found = [
            m.describe()
            for m in MODELS.values()
            if name in m.slug.lower() or name in m.title.lower()
        ]
        return _json(found[offset : offset + limit])

    async def _executions(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "executions")
        if refusal is not None:
            return refusal
        if not self.config.executions_enabled:
            return _json({"status": 404, "error": "not found"}, 404)
        try:
            query = state.parse_executions_query(request.query)
        except state.QueryError as exc:
            return _json({"error": str(exc)}, 400)
        now = asyncio.get_running_loop().time()
        page, total = state.select_executions(self._account.predictions.values(), query, now)
        rows = [self._account.execution_row(p, now, self._video_url(p)) for p in page]
        return _json(
            {
                "executions": rows,
                "total_count": min(total, state.EXECUTIONS_COUNT_CAP),
                "total_capped": total > state.EXECUTIONS_COUNT_CAP,
                "offset": query.offset,
                "limit": query.limit,
            }
        )

    # -- uploads, storage, CDN (not API requests, apart from the presign) ------------------------

    async def _presign(self, request: web.Request) -> web.Response:
        refusal = self._gate(request, "presign")
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _json({"error": "invalid request body"}, 422)
        content_type = body.get("content_type")
        if content_type not in UPLOAD_TYPES:
            return _json({"error": f"content_type must be one of {sorted(UPLOAD_TYPES)}"}, 400)
        if body.get("file_type", "image") != "image":
            return _json({"error": "file_type must be image"}, 400)
        now = asyncio.get_running_loop().time()
        upload_id = uuid.uuid4().hex
        upload = Upload(upload_id, content_type, upload_id + UPLOAD_TYPES[content_type], now)
        self._uploads[upload.id] = self._uploads[upload.name] = upload
        self.stats.presigns += 1
        signature = self._sign("put", upload_id)
        return _json(
            {
                "id": upload_id,
                "presigned_url": f"{self.base_url}/upload/{upload_id}?X-Amz-Expires="
                f"{PRESIGN_TTL:.0f}&X-Amz-Signature={signature}",
                "public_url": f"{self.base_url}/storage/{upload.name}",
                "expires_at": state.rfc3339(time.time() + PRESIGN_TTL),
                "required_headers": {"Content-Type": content_type, "x-amz-acl": "public-read"},
            }
        )

    async def _put(self, request: web.Request) -> web.Response:
        """The presigned PUT: signature, expiry and the required headers, as S3 checks them."""
        upload = self._uploads.get(request.match_info["id"])
        signature = request.query.get("X-Amz-Signature", "")
        if upload is None or not hmac.compare_digest(signature, self._sign("put", upload.id)):
            return web.Response(status=403, text="SignatureDoesNotMatch")
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
        upload.data = data
        self.stats.uploads += 1
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def _storage(self, request: web.Request) -> web.Response:
        upload = self._uploads.get(request.match_info["name"])
        if upload is None or upload.data is None or upload.name != request.match_info["name"]:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=upload.data, content_type=upload.content_type)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """An output video: Range (206), expiring signed URLs (403), and truncated transfers."""
        c = self.config
        self.stats.downloads += 1
        name = request.match_info["name"]
        pred = self._account.predictions.get(name.removesuffix(".mp4"))
        if (
            not name.endswith(".mp4")
            or pred is None
            or pred.video is None
            or pred.ended != "success"
        ):
            return web.Response(status=404, text="Not Found")
        if c.url_ttl is not None:
            expires, signature = request.query.get("exp", ""), request.query.get("sig", "")
            if not hmac.compare_digest(signature, self._sign(pred.id, expires)):
                return web.Response(status=403, text="AccessDenied: bad signature")
            if float(expires) < time.time():
                return web.Response(status=403, text="AccessDenied: Request has expired")
        video = pred.video
        headers = {"Content-Type": "video/mp4", "Accept-Ranges": "bytes" if c.cdn_range else "none"}
        first, last, status = 0, len(video) - 1, 200
        if c.cdn_range and "Range" in request.headers:
            try:
                wanted = parse_range(request.headers["Range"], len(video))
            except ValueError:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(video)}"})
            if wanted is not None:
                (first, last), status = wanted, 206
                headers["Content-Range"] = f"bytes {first}-{last}/{len(video)}"
        body = video[first : last + 1]
        headers["X-Request-Id"] = request[REQUEST_ID]
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        rate = c.truncate_downloads_rate
        truncate = rate > 0 and self._account.rng.random() < rate
        await response.prepare(request)
        if truncate:  # promise everything, send part, hang up
            await response.write(body[: len(body) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write(body)
        await response.write_eof()
        return response

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats.summary())


async def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run a simulator until cancelled (``i2v-runner simulate``), announcing its URL on stdout."""
    async with Simulator(config, host=host, port=port) as sim:
        print(f"simulator listening on {sim.base_url}", flush=True)
        await asyncio.Event().wait()
