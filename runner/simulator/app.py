"""The simulator's HTTP server: the Eachlabs API routes, beside a second origin for files.

Routes turn requests into calls on ``state.Account`` and answer with the contract's shapes. Each
prediction has one task (in the simulator's task group) that fetches its image, has the video
rendered in a worker thread, and ends the prediction when its outcome is due to show; a cancel
that takes effect has a task of its own. Uploads, storage and the CDN are another host
(``files.FileHost``, its own listener), as they are for the real service. Both listen on
loopback only: the API accepts any key by default, and fetches public image URLs it is given.

Errors answer as ``SimConfig.error_bodies`` says: ``terse`` (the default, the real gateway's
``{}`` and ``not found`` bodies) or ``helpful``; unknown routes and methods answer JSON 404 and
405 either way.
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
from yarl import URL

from runner.models import MODELS
from runner.simulator import executions, inputs, state
from runner.simulator.config import SimConfig
from runner.simulator.faults import fault_answer
from runner.simulator.files import (
    LOOPBACK_HOSTS,
    MAX_UPLOAD_BYTES,
    UPLOAD_TYPES,
    FileHost,
    OwnImage,
)
from runner.simulator.listener import Handler, Listener, request_id
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

NOT_FOUND = {"status": 404, "error": "not found"}
METHOD_NOT_ALLOWED = {"status": 405, "error": "method not allowed"}
SERVER_ERROR = {"error": "internal server error"}


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
    return _json(SERVER_ERROR, 500)


@web.middleware
async def json_route_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The gateway's JSON for a path it does not route (404) or a method it does not take
    (405, with ``Allow``), instead of aiohttp's text pages."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return _json(METHOD_NOT_ALLOWED, 405, {"Allow": exc.headers.get("Allow", "")})
    except web.HTTPNotFound:
        return _json(NOT_FOUND, 404)


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
        app = web.Application(
            middlewares=[request_id, json_route_errors], client_max_size=MAX_UPLOAD_BYTES + 1
        )
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

    async def _gate(
        self, request: web.Request, endpoint: str, *, auth: bool = True
    ) -> web.Response | None:
        """Count an API request; the answer to send instead if it faults (``fault_rate``), is
        over the rate, or lacks a valid key.

        A faulted request, or one refused for rate, does not count against the window, so
        waiting it out works.
        """
        now = asyncio.get_running_loop().time()
        self.stats.api_requests.append((now, endpoint))
        fault = self._account.fault(endpoint)
        if fault is not None:
            return await fault_answer(
                request, fault, self.config.fault_hang, server_error=_json(SERVER_ERROR, 500)
            )
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
                return self._error(401, "Invalid or missing API key")
        return None

    def _error(self, status: int, text: str) -> web.Response:
        """A 400, 401 or 422: ``{}`` as the real gateway answers, or with ``error_bodies=
        "helpful"`` ``{"error": text}``."""
        helpful = self.config.error_bodies == "helpful"
        return _json({"error": text} if helpful else {}, status)

    def _unknown_prediction(self) -> web.Response:
        """A poll of an id the account does not have."""
        if self.config.error_bodies == "helpful":
            return _json({"error": "Prediction not found"}, 404)
        return _json(NOT_FOUND, 404)

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
        refusal = await self._gate(request, "create")
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            body = None
        if not isinstance(body, dict):
            return self._error(422, "invalid request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(400, "model is required")
        info = MODELS.get(model)
        if info is None:
            return _json(NOT_FOUND, 404)
        given = body.get("input")
        problem = inputs.validate_input(info.request_schema(), given)
        if problem is not None:
            return self._error(400, problem)
        if not isinstance(given, dict):  # the schema says type object; a schema may not
            return self._error(400, "input must be an object")
        refused = self._account.create_refusal()
        if refused is not None:
            status, answer = refused
            return self._too_many(answer) if status == 429 else _json(answer, status)
        if self.config.create_queue_delay > 0:  # a gateway queue in front of the service
            await asyncio.sleep(self.config.create_queue_delay)
        bad = self._account.bad_answer()
        if bad is not None and not self.config.create_bad_answer_creates:
            return _bad_answer(bad)  # the server broke before it created anything
        loop = asyncio.get_running_loop()
        image_url = given.get(info.image_field)
        url = image_url if isinstance(image_url, str) else ""
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
        refusal = await self._gate(request, "get")
        if refusal is not None:
            return refusal
        pred = self._account.predictions.get(request.match_info["id"])
        if pred is None:
            return self._unknown_prediction()
        now = asyncio.get_running_loop().time()
        if self._account.poll_hidden(pred, now):
            return _json(NOT_FOUND, 404)
        if self._account.poll_fails():
            status = self.config.poll_error_status
            return _json(SERVER_ERROR if status and status >= 500 else {}, status or 500)
        video_url = self._files.video_url(pred)
        return _json(self._account.envelope(pred, now, video_url, self.base_url))

    async def _cancel(self, request: web.Request) -> web.Response:
        """Best effort, as the real service: the answer says nothing of the outcome (poll it).

        An unknown id answers 500 (``helpful``: 404 ``Prediction not found``). A cancel that
        takes effect ends the prediction at its next status quantum, unless its own end comes
        first (``state.Account.cancel``, ``cancel_due``)."""
        refusal = await self._gate(request, "cancel")
        if refusal is not None:
            return refusal
        pred = self._account.predictions.get(request.match_info["id"])
        if pred is None:
            if self.config.error_bodies == "helpful":
                return _json({"error": "Prediction not found"}, 404)
            return _json(SERVER_ERROR, 500)
        loop = asyncio.get_running_loop()
        ended = pred.ended is not None
        scheduled = pred.cancel_at
        plan = self._account.cancel(pred, loop.time())
        if plan.takes_effect_at is not None and plan.takes_effect_at != scheduled:
            if plan.takes_effect_at <= loop.time():
                self._account.cancel_due(pred, loop.time())
            else:
                self._task_group.create_task(self._cancel_later(pred, plan.takes_effect_at))
        message = "Prediction cancelled successfully"
        if self.config.error_bodies == "helpful":
            message = (
                "Prediction already finished; nothing to cancel"
                if ended
                else "Cancel requested; poll the prediction for its outcome"
            )
        return _json({"status": plan.answer_status, "message": message, "predictionID": pred.id})

    async def _cancel_later(self, pred: Prediction, at: float) -> None:
        """End ``pred`` as cancelled at loop time ``at``, unless its own end came first or an
        earlier cancel took its place."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(at - loop.time())
        if pred.cancel_at == at:  # ends on its quantum, however late this task woke
            self._account.cancel_due(pred, at)

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
            pred.due = self._account.visible_time(pred, loop.time())
            await asyncio.sleep(pred.due - loop.time())
            self._account.finish(pred, "error", loop.time())
            return
        assert image is not None
        if pred.failure is None:
            try:
                pred.video = await self._render(image, str(pred.input.get("prompt", "")))
            except RenderError as exc:
                pred.failure = state.image_failure(str(exc))
            pred.due = max(pred.due, self._account.visible_time(pred, loop.time()))
        await asyncio.sleep(pred.due - loop.time())
        self._account.finish(pred, "success" if pred.failure is None else "error", loop.time())

    async def _fetch(self, url: str, own: OwnImage | None) -> bytes:
        """The bytes at an image URL; FetchError if they cannot be had within fetch_timeout,
        or (``refuse_private_urls``) the URL's host is one the real service cannot reach."""
        if own is not None:
            raise FetchError(f"{url}: HTTP 404 ({own.missing})")
        if not url:
            raise FetchError("no image URL given")
        try:
            parsed = URL(url)
        except ValueError:
            raise FetchError(f"{url}: not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise FetchError(f"{url}: unsupported URL (an http or https URL is needed)")
        if self.config.refuse_private_urls:
            private = inputs.private_host(parsed.raw_host)
            if private is not None:
                self.stats.private_urls_refused += 1
                raise FetchError(
                    f"{url}: cannot connect: {private}, not reachable from the service"
                )
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
        refusal = await self._gate(request, "model", auth=False)
        if refusal is not None:
            return refusal
        slug = request.query.get("slug", "")
        if not slug:
            return _json({"error": "slug parameter is required"}, 400)
        info = MODELS.get(slug)
        if info is None:
            return _json({"error": "Failed to fetch model: model not found"}, 404)
        return _json(info.describe())

    async def _models(self, request: web.Request) -> web.Response:
        refusal = await self._gate(request, "models", auth=False)
        if refusal is not None:
            return refusal
        try:
            limit = int(request.query.get("limit") or 50)
            offset = int(request.query.get("offset") or 0)
        except ValueError:
            return self._error(400, "limit and offset must be integers")
        if not (1 <= limit <= 100 and offset >= 0):
            return self._error(400, "limit must be 1-100 and offset at least 0")
        name = request.query.get("name", "").lower()
        found = [
            m.describe()
            for m in MODELS.values()
            if name in m.slug.lower() or name in m.title.lower()
        ]
        return _json(found[offset : offset + limit])

    async def _executions(self, request: web.Request) -> web.Response:
        refusal = await self._gate(request, "executions")
        if refusal is not None:
            return refusal
        if not self.config.executions_enabled:
            return _json(NOT_FOUND, 404)
        try:
            query = executions.parse_executions_query(request.query)
        except executions.QueryError as exc:
            return self._error(400, str(exc))
        now = asyncio.get_running_loop().time()
        page, total = self._account.executions(query, now)
        rows = [self._account.execution_row(p, now, self._files.video_url(p)) for p in page]
        return _json(
            {
                "executions": rows,
                "total_count": min(total, executions.EXECUTIONS_COUNT_CAP),
                "total_capped": total > executions.EXECUTIONS_COUNT_CAP,
                "offset": query.offset,
                "limit": query.limit,
            }
        )

    # -- uploads: the presign is the API's; the PUT, storage and CDN are the file host's ----------

    async def _presign(self, request: web.Request) -> web.Response:
        refusal = await self._gate(request, "presign")
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._error(422, "invalid request body")
        content_type = body.get("content_type")
        if content_type not in UPLOAD_TYPES:
            return self._error(400, f"content_type must be one of {sorted(UPLOAD_TYPES)}")
        if body.get("file_type", "image") != "image":
            return self._error(400, "file_type must be image")
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
