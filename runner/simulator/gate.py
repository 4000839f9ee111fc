"""The API's front door: every API request passes ``Gate.check`` before its route does anything.

It counts the request (``SimStats.api_requests``), then answers instead of the route if the
request draws a transient fault (``fault_rate``), is over the request rate (``rate_limit``'s
window or ``rate_burst``'s bucket: ``Account.rate_refusal``), or lacks a valid key. Downloads,
uploads and storage are the file host's, not API requests, and never pass here.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from runner.simulator import answers
from runner.simulator.account import Account
from runner.simulator.config import SimConfig
from runner.simulator.faults import fault_answer
from runner.simulator.stats import SimStats


class Gate:
    """Accounting, faults, request rate and the API key, for one simulator's API."""

    def __init__(self, config: SimConfig, stats: SimStats, account: Account) -> None:
        self.config = config
        self.stats = stats
        self.account = account

    async def check(
        self, request: web.Request, endpoint: str, *, auth: bool = True
    ) -> web.Response | None:
        """Count an API request; the answer to send instead if it faults (``fault_rate``), is
        over the rate, or lacks a valid key (``auth``); None to let the route answer.

        A faulted request, or one refused for rate, does not count against the rate limit, so
        waiting it out works.
        """
        now = asyncio.get_running_loop().time()
        self.stats.api_requests.append((now, endpoint))
        fault = self.account.fault(endpoint)
        if fault is not None:
            server_error = answers.json_answer(answers.SERVER_ERROR, 500)
            return await fault_answer(
                request, fault, self.config.fault_hang, server_error=server_error
            )
        refused = self.account.rate_refusal(now)
        if refused is not None:
            return answers.too_many(self.config, refused)
        if auth and not self.key_accepted(request):
            return answers.error(self.config, 401, "Invalid or missing API key")
        return None

    def key_accepted(self, request: web.Request) -> bool:
        """Whether the request carries a key (``X-API-Key``, or ``Authorization: Bearer``) the
        account accepts: any non-empty one, or one of ``api_keys``."""
        key = request.headers.get("X-API-Key", "").strip()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not key and scheme.lower() == "bearer":
            key = token.strip()
        return bool(key) and (self.config.api_keys is None or key in self.config.api_keys)
