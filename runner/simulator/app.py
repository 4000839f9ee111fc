"""The simulator's HTTP server: the Eachlabs API routes, beside a second origin for files.

Routes turn requests into calls on ``state.Account`` and answer with the contract's shapes. Each
prediction has one task (in the simulator's task group) that fetches its image, has the video
rendered in a worker thread, and ends the prediction when its outcome is due to show. Uploads,
storage and the CDN are another host (``files.FileHost``, its own listener), as they are for the
real service. Both listen on loopback only: the API accepts any key and fetches any URL it is
given.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from runner.models import MODELS
from runner.simulator import state
from runner.simulator.config import SimConfig
from runner.simulator.files import (
    LOOPBACK_HOSTS,
    MAX_UPLOAD_BYTES,
    UPLOAD_TYPES,
    FileHost,
    OwnImage,
)
from runner.simulator.listener import Listener, request_id
from runner.simulator.state import Account, Prediction, RequestWindow, SimStats
from runner.simulator.video import RenderError, motion_for, render_mp4

#: The contract's generic image limits: at most 20 MB, 64-8192 px a side.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
IMAGE_SIDES = (64, 8192)
#: The file host listens here, on a port of its own: another origin than the API.
FILE_HOST = "127.0.0.1"
#: What a create with ``create_bad_answer="html"`` answers, as a proxy in front of an API might.
BAD_GATEWAY_HTML = "<html><body>Bad gateway</body></html>"

DEFAULT_CONFIG = SimConfig()


class FetchError(Exception):
    """An image URL could not be fetched (the prediction ends in INPUT_DOWNLOAD_ERROR)."""


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _bad_answer(kind: str) -> web.Response:
    """A create's answer under ``create_bad_answer``: 200 ``{}``, 200 HTML, or a JSON 500."""
    if kind == "empty":
        return _json({})
    if kind == "html":
        return web.Response(text=BAD_GATEWAY_HTML, content_type="text/html")
    return _json({"error": "internal server error"}, 500)


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

    ``base_url`` (set on entry) is where the client points; ``cdn_base_url`` is the other origin
    that takes uploads and serves storage and output videos; ``stats`` counts what clients did.
    ``set_reachable`` takes the API off the network and back.
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
        self.cdn_base_url = ""
        self.stats = SimStats()
        self._account = Account(config, self.stats)
        self._window = (
            RequestWindow(config.rate_limit, config.rate_window) if config.rate_limit else None
        )
        self._files = FileHost(config, self.stats, self._account)
        self._api = Listener(self._api_app, host, port)
        self._cdn = Listener(self._files.app, FILE_HOST, cancel_on_disconnect=True)
        self._renders: dict[tuple[str, str], asyncio.Future[bytes]] = {}
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
            await self._cdn.start()
            self.cdn_base_url = self._files.base_url = self._cdn.base_url
            await self._api.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self.port = self._api.port
        self.base_url = self._api.base_url
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
        await self._api.stop()
        await self._cdn.stop()
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

    @property
    def reachable(self) -> bool:
        """Whether the API listens (see ``set_reachable``)."""
        return self._api.running

    async def set_reachable(self, reachable: bool) -> None:
        """Take the API off the network (False) or put it back on its port (True).

        Unreachable, the API's socket and connections are closed, so connections are refused
        and requests under way are cut off; predictions keep running and the file host stays
        up. Raises OSError if the port was taken in between.
        """
        if reachable:
            await self._api.start()
        else:
            await self._api.stop()

    def _api_app(self) -> web.Application:
        app = web.Application(middlewares=[request_id], client_max_size=MAX_UPLOAD_BYTES + 1)
        r = app.router
        r.add_post("/v1/prediction", self._create)
        r.add_post("/v1/prediction/", self._create)
        r.add_get("/v1/prediction/{id}", self._get)
        r.add_post("/v1/prediction/{id}/cancel", self._cancel)
        r.add_get("/v1/model", self._model)
        r.add_get("/v1/models", self._models)
        r.add_get("/v1/executions", self._executions)
        r.add_post("/v1/upload/presign", self._presign)
        r.add_get("/_sim/stats", self._stats)
        return app

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

    def _redirect(self, request: web.Request, status: int, base: str) -> web.Response:
        """Send the client to the same path and query on ``base`` (another origin), before any
        accounting: the front door answers, not the API."""
        self.stats.redirects += 1
        return web.Response(
            status=status, headers={"Location": base.rstrip("/") + request.raw_path}
        )

    # -- predictions -----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        if self.config.redirect_creates_to is not None:
            return self._redirect(request, 307, self.config.redirect_creates_to)
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
        bad = self._account.bad_answer()
        if bad is not None and not self.config.create_bad_answer_creates:
            return _bad_answer(bad)  # the server broke before it created anything
        loop = asyncio.get_running_loop()
        url = str(given[info.image_field])
        own = self._files.own_image(url, loop.time())
        image = own.data if own is not None else None
        digest = hashlib.sha256(image).hexdigest() if image is not None else None
        pred = self._account.create(model, json.loads(json.dumps(given)), loop.time(), digest)
        self._task_group.create_task(self._run(pred, url, own))
        rate = self.config.create_fault_rate
        fault = rate > 0 and self._account.rng.random() < rate
        if self.config.create_delay > 0:
            await asyncio.sleep(self.config.create_delay)
        if fault:
            return web.Response(status=500, text="upstream error")
        if bad is not None:
            return _bad_answer(bad)
        return _json(
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": self.config.create_answer_id or pred.id,
            }
        )

    async def _get(self, request: web.Request) -> web.Response:
        if self.config.redirect_polls_to is not None:
            return self._redirect(request, 302, self.config.redirect_polls_to)
        refusal = self._gate(request, "get")
        if refusal is not None:
            return refusal
        pred = self._account.predictions.get(request.match_info["id"])
        if pred is None:
            return _json({"error": "Prediction not found"}, 404)
        now = asyncio.get_running_loop().time()
        if self._account.poll_hidden(pred, now):
            return _json({"status": 404, "error": "not found"}, 404)
        if self._account.poll_fails():
            status = self.config.poll_error_status
            return _json(
                {"error": "internal server error"} if status and status >= 500 else {},
                status or 500,
            )
        video_url = self._files.video_url(pred)
        return _json(self._account.envelope(pred, now, video_url, self.base_url))

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

    async def _run(self, pred: Prediction, url: str, own: OwnImage | None) -> None:
        """Fetch the image (unless it is one of the file host's), render the video, and end the
        prediction when its outcome is due."""
        loop = asyncio.get_running_loop()
        failure: state.Failure | None = None
        image = own.data if own is not None else None
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

    async def _fetch(self, url: str, own: OwnImage | None) -> bytes:
        """The bytes at an image URL; FetchError if they cannot be had within fetch_timeout."""
        if own is not None:
            raise FetchError(f"{url}: HTTP 404 ({own.missing})")
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
        page, total = state.select_executions(self._account.listed(now), query, now)
        rows = [self._account.execution_row(p, now, self._files.video_url(p)) for p in page]
        return _json(
            {
                "executions": rows,
                "total_count": min(total, state.EXECUTIONS_COUNT_CAP),
                "total_capped": total > state.EXECUTIONS_COUNT_CAP,
                "offset": query.offset,
                "limit": query.limit,
            }
        )

    # -- uploads: the presign is the API's; the PUT, storage and CDN are the file host's ----------

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
        return _json(self._files.presign(content_type, asyncio.get_running_loop().time()))

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self.stats.summary())


async def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run a simulator until cancelled (``i2v-runner simulate``), announcing its URL on stdout."""
    async with Simulator(config, host=host, port=port) as sim:
        print(
            f"simulator listening on {sim.base_url}\n"
            f"uploads, storage and CDN on {sim.cdn_base_url}",
            flush=True,
        )
        await asyncio.Event().wait()
