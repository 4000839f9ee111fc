"""One HTTP listener on loopback that can stop and listen again on the same port.

The simulator runs two (the API, and the CDN and upload host) and ``OtherHost`` one. Stopping a
listener closes its socket and its connections, so new connections are refused, as from a host
that went away; starting it again binds the port it had.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

#: How long a listener waits for running handlers when it stops (a held create, a stalled
#: download): short, so a test's teardown never waits on a client that went quiet.
SHUTDOWN_GRACE = 0.25

REQUEST_ID = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo the client's X-Request-Id (or make one) on every answer."""
    given = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request[REQUEST_ID] = given
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = given
        raise
    if not response.prepared:
        response.headers["X-Request-Id"] = given
    return response


class Listener:
    """Serves the application ``make_app()`` builds on ``host``:``port`` (0: the OS picks).

    ``port`` holds the bound port once started, and ``start`` after ``stop`` binds it again with
    a fresh application (an aiohttp application serves one runner in its life). With
    ``cancel_on_disconnect``, a handler is cancelled when its client goes away (how a stalled
    answer learns that nobody is waiting any more).
    """

    def __init__(
        self,
        make_app: Callable[[], web.Application],
        host: str,
        port: int = 0,
        *,
        cancel_on_disconnect: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self._make_app = make_app
        self._cancel_on_disconnect = cancel_on_disconnect
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen (doing nothing if already listening); raises OSError if the port is taken."""
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
            handler_cancellation=self._cancel_on_disconnect,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening, close every connection, and cancel handlers still running after
        SHUTDOWN_GRACE."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
