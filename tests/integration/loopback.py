"""Tiny local HTTP servers for wire tests: one handler per route, every request recorded.

::

    async with Loopback() as servers:
        api = await servers.start({"GET /v1/prediction/p1": handler})
        ...  # api.url, api.seen

A route is ``"METHOD /path"``; a request no route names is recorded and answered 404. Handlers
that must hang (a stalled CDN) wait on ``servers.hold()``, released before the servers stop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

KEY_HEADERS = ("X-API-Key", "Authorization")


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def credentials(self) -> list[str]:
        """Every key header value this server was sent."""
        return [s.headers[name] for s in self.seen for name in KEY_HEADERS if name in s.headers]


class Loopback:
    """Starts servers on 127.0.0.1 (a free port each) and stops them all on exit."""

    def __init__(self) -> None:
        self._runners: list[web.AppRunner] = []
        self._release = asyncio.Event()

    async def hold(self) -> None:
        """Wait until the servers are being stopped (for handlers that must hang)."""
        await self._release.wait()

    async def start(self, routes: Mapping[str, Handler]) -> Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = Server(f"http://127.0.0.1:{sock.getsockname()[1]}")

        async def dispatch(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {name: value for name, value in request.headers.items()}
            server.seen.append(Seen(request.method, request.path_qs, headers, body))
            handler = routes.get(f"{request.method} {request.path}")
            if handler is None:
                return web.json_response({"error": "no such route"}, status=404)
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock).start()
        return server

    async def __aenter__(self) -> Loopback:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._release.set()
        for runner in self._runners:
            await runner.cleanup()


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
