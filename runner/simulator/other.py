"""Another host on loopback that answers like the API and remembers everything it was sent.

It stands in for the host a hostile redirect (``SimConfig.redirect_polls_to``,
``redirect_creates_to``) points at, so a test can show that the API key never reached it:
``async with OtherHost() as other: ...`` then look at ``other.requests``.
"""

from __future__ import annotations

import uuid
from types import TracebackType

from aiohttp import web

from runner.simulator.listener import Listener
from runner.simulator.stats import SeenRequest

CREATE_PATHS = frozenset({"/v1/prediction", "/v1/prediction/"})
POLL_PREFIX = "/v1/prediction/"


class OtherHost:
    """Serves on 127.0.0.1 (an OS-picked port, ``base_url``) and records each request it gets.

    A create (``POST /v1/prediction`` or ``/v1/prediction/``) answers the documented success with
    a new id, a poll (``GET /v1/prediction/{id}``) a ``processing`` envelope, anything else
    ``200 {}``.
    """

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self._listener = Listener(self._app, "127.0.0.1")

    @property
    def base_url(self) -> str:
        return self._listener.base_url

    async def __aenter__(self) -> OtherHost:
        await self._listener.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._listener.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            SeenRequest(request.method, request.raw_path, dict(request.headers), body)
        )
        path = request.path
        if request.method == "POST" and path in CREATE_PATHS:
            return web.json_response(
                {
                    "status": "success",
                    "message": "Prediction created successfully",
                    "predictionID": str(uuid.uuid4()),
                }
            )
        prediction_id = path.removeprefix(POLL_PREFIX)
        is_poll = path.startswith(POLL_PREFIX) and prediction_id and "/" not in prediction_id
        if request.method == "GET" and is_poll:
            return web.json_response(self._envelope(prediction_id))
        return web.json_response({})

    def _envelope(self, prediction_id: str) -> dict[str, object]:
        """A poll envelope of the contract's shape for a prediction still running."""
        url = f"{self.base_url}/v1/prediction/{prediction_id}"
        return {
            "id": prediction_id,
            "input": {},
            "status": "processing",
            "output": None,
            "logs": None,
            "metrics": {"predict_time": 0, "cost": 0},
            "urls": {"get": url, "cancel": f"{url}/cancel"},
        }
