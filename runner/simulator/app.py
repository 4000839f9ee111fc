"""The simulator's HTTP server: the Eachlabs API on loopback, beside a second origin for files.

``Simulator`` wires the parts together and owns their lifetimes: the accounts, one per API key
(``accounts``), the transient faults (``faults``), the API's front door (``gate``), its routes
(``predictions``, ``lookups``), the tasks behind the predictions (``worker``), and the file host
(``files.FileHost``: uploads, storage and the CDN on a listener of its own, another origin, as
they are for the real service). Both listen on loopback only: the API accepts any key by
default (each its own account), and fetches public image URLs it is given.
``serve_forever`` is ``i2v-runner simulate``.
"""

from __future__ import annotations

import asyncio
import random
from types import TracebackType

from aiohttp import web

from runner.simulator.accounts import Accounts
from runner.simulator.answers import json_answer, json_route_errors
from runner.simulator.config import SimConfig
from runner.simulator.faults import Faults
from runner.simulator.files import LOOPBACK_HOSTS, MAX_UPLOAD_BYTES, FileHost
from runner.simulator.gate import Gate
from runner.simulator.listener import Listener, request_id
from runner.simulator.lookups import LookupRoutes
from runner.simulator.predictions import PredictionRoutes
from runner.simulator.stats import SimStats
from runner.simulator.worker import Worker

#: The file host listens here, on a port of its own: another origin than the API.
FILE_HOST = "127.0.0.1"

DEFAULT_CONFIG = SimConfig()


class Simulator:
    """The built-in Eachlabs API on loopback: ``async with Simulator(config) as sim: ...``.

    ``base_url`` (set on entry) is where the client points; ``cdn_base_url`` is the other origin
    that takes uploads and serves storage and output videos; ``stats`` counts what clients did,
    over the server and per account; ``accounts`` holds the account of each API key used.
    ``set_reachable`` takes the API off the network and back. Every random draw, of every
    account, comes from one ``random.Random(config.seed)``.
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
        rng = random.Random(config.seed)
        self.accounts = Accounts(config, self.stats, rng)
        faults = Faults(config, self.stats, rng)
        gate = Gate(config, self.stats, self.accounts, faults)
        self._files = FileHost(config, self.stats, self.accounts, faults)
        self._worker = Worker(config, self.stats)
        self._predictions = PredictionRoutes(
            config, self.stats, self.accounts, self._files, gate, self._worker, faults
        )
        self._lookups = LookupRoutes(config, self._files, gate)
        self._api = Listener(self._api_app, host, port)
        self._cdn = Listener(self._files.app, FILE_HOST, cancel_on_disconnect=True)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        try:
            await self._worker.start()
            await self._cdn.start()
            self.cdn_base_url = self._files.base_url = self._cdn.base_url
            await self._api.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self.port = self._api.port
        self.base_url = self._predictions.base_url = self._api.base_url
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
        await self._worker.stop()

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
        self._predictions.add_to(app.router)
        self._lookups.add_to(app.router)
        app.router.add_get("/_sim/stats", self._stats)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        """The counters (``SimStats.summary``): not an API request, never refused."""
        return json_answer(self.stats.summary())


async def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run a simulator until cancelled (``i2v-runner simulate``), announcing its URL on stdout."""
    async with Simulator(config, host=host, port=port) as sim:
        print(
            f"simulator listening on {sim.base_url}\n"
            f"uploads, storage and CDN on {sim.cdn_base_url}",
            flush=True,
        )
        await asyncio.Event().wait()
