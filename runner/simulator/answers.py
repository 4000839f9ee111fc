"""The API's answers that are not a route's own data: error bodies, 429s, bad create answers,
and the JSON 404 and 405 for paths and methods it does not route.

Errors answer as ``SimConfig.error_bodies`` says: ``terse`` (the default, the real gateway's
``{}`` and ``not found`` bodies) or ``helpful``; unknown routes and methods answer JSON 404 and
405 either way.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runner.simulator.config import SimConfig
from runner.simulator.listener import Handler

NOT_FOUND = {"status": 404, "error": "not found"}
METHOD_NOT_ALLOWED = {"status": 405, "error": "method not allowed"}
SERVER_ERROR = {"error": "internal server error"}
#: What a create with ``create_bad_answer="html"`` answers, as a proxy in front of an API might.
BAD_GATEWAY_HTML = "<html><body>Bad gateway</body></html>"


def json_answer(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def error(config: SimConfig, status: int, text: str) -> web.Response:
    """A 400, 401 or 422: ``{}`` as the real gateway answers, or with ``error_bodies=
    "helpful"`` ``{"error": text}``."""
    helpful = config.error_bodies == "helpful"
    return json_answer({"error": text} if helpful else {}, status)


def unknown_prediction(config: SimConfig) -> web.Response:
    """A poll of an id the account does not have."""
    if config.error_bodies == "helpful":
        return json_answer({"error": "Prediction not found"}, 404)
    return json_answer(NOT_FOUND, 404)


def too_many(config: SimConfig, body: dict[str, Any]) -> web.Response:
    """A 429 with ``body``, and ``Retry-After`` if ``retry_after`` is set."""
    after = config.retry_after
    return json_answer(body, 429, {"Retry-After": f"{after:g}"} if after is not None else None)


def bad_answer(kind: str) -> web.Response:
    """A create's answer under ``create_bad_answer``: 200 ``{}``, 200 HTML, or a JSON 500."""
    if kind == "empty":
        return json_answer({})
    if kind == "html":
        return web.Response(text=BAD_GATEWAY_HTML, content_type="text/html")
    return json_answer(SERVER_ERROR, 500)


@web.middleware
async def json_route_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The gateway's JSON for a path it does not route (404) or a method it does not take
    (405, with ``Allow``), instead of aiohttp's text pages."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return json_answer(METHOD_NOT_ALLOWED, 405, {"Allow": exc.headers.get("Allow", "")})
    except web.HTTPNotFound:
        return json_answer(NOT_FOUND, 404)
