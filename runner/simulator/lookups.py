"""The API's routes besides predictions: the model schema and list (``GET /v1/model``,
``/v1/models``, no key needed), the executions list (``GET /v1/executions``), and the upload
presign (``POST /v1/upload/presign``; the PUT, storage and CDN are the file host's).

Each route passes the ``Gate`` first, so every one of them counts against the request rate of
the caller's account (the model routes: if they carry a key). The executions list shows only the
caller's own predictions.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from runner.models import MODELS
from runner.simulator import answers, executions, wire
from runner.simulator.answers import NOT_FOUND, json_answer
from runner.simulator.config import SimConfig
from runner.simulator.files import UPLOAD_TYPES, FileHost
from runner.simulator.gate import Gate


class LookupRoutes:
    """Model, models, executions and presign for one simulator."""

    def __init__(self, config: SimConfig, files: FileHost, gate: Gate) -> None:
        self.config = config
        self.files = files
        self.gate = gate

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/model", self.model)
        router.add_get("/v1/models", self.models)
        router.add_get("/v1/executions", self.executions)
        router.add_post("/v1/upload/presign", self.presign)

    async def model(self, request: web.Request) -> web.Response:
        """The schema of the model ``slug`` names (400 without one, 404 if unknown)."""
        refusal = await self.gate.check_open(request, "model")
        if refusal is not None:
            return refusal
        slug = request.query.get("slug", "")
        if not slug:
            return json_answer({"error": "slug parameter is required"}, 400)
        info = MODELS.get(slug)
        if info is None:
            return json_answer({"error": "Failed to fetch model: model not found"}, 404)
        return json_answer(info.describe())

    async def models(self, request: web.Request) -> web.Response:
        """A page of the models whose slug or title holds ``name``, as a bare JSON array."""
        refusal = await self.gate.check_open(request, "models")
        if refusal is not None:
            return refusal
        try:
            limit = int(request.query.get("limit") or 50)
            offset = int(request.query.get("offset") or 0)
        except ValueError:
            return answers.error(self.config, 400, "limit and offset must be integers")
        if not (1 <= limit <= 100 and offset >= 0):
            return answers.error(self.config, 400, "limit must be 1-100 and offset at least 0")
        name = request.query.get("name", "").lower()
        found = [
            m.describe()
            for m in MODELS.values()
            if name in m.slug.lower() or name in m.title.lower()
        ]
        return json_answer(found[offset : offset + limit])

    async def executions(self, request: web.Request) -> web.Response:
        """A page of the caller's executions (``executions.parse_executions_query``); 404 on
        an older server (``executions_enabled`` off)."""
        account = await self.gate.check(request, "executions")
        if isinstance(account, web.Response):
            return account
        if not self.config.executions_enabled:
            return json_answer(NOT_FOUND, 404)
        try:
            query = executions.parse_executions_query(request.query)
        except executions.QueryError as exc:
            return answers.error(self.config, 400, str(exc))
        now = asyncio.get_running_loop().time()
        page, total = account.executions(query, now)
        rows = [
            wire.execution_row(run, now, self.files.video_url(run), self.config) for run in page
        ]
        return json_answer(
            {
                "executions": rows,
                "total_count": min(total, executions.EXECUTIONS_COUNT_CAP),
                "total_capped": total > executions.EXECUTIONS_COUNT_CAP,
                "offset": query.offset,
                "limit": query.limit,
            }
        )

    async def presign(self, request: web.Request) -> web.Response:
        """A presigned upload slot on the file host for an image of ``content_type``."""
        account = await self.gate.check(request, "presign")
        if isinstance(account, web.Response):
            return account
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return answers.error(self.config, 422, "invalid request body")
        content_type = body.get("content_type")
        if content_type not in UPLOAD_TYPES:
            return answers.error(
                self.config, 400, f"content_type must be one of {sorted(UPLOAD_TYPES)}"
            )
        if body.get("file_type", "image") != "image":
            return answers.error(self.config, 400, "file_type must be image")
        return json_answer(self.files.presign(content_type, asyncio.get_running_loop().time()))
