"""The API's front door: every API request passes the ``Gate`` before its route does anything.

In this order: it counts the request (``SimStats.api_requests``); answers instead of the route
if the request draws a transient fault (``Faults``); resolves its key to the caller's account
(``Accounts``), answering 401 for a missing or unknown key (counted against no account's rate);
then answers 429 if the request is over that account's rate (``rate_limit``'s window or
``rate_burst``'s bucket: ``Account.rate_refusal``). ``check`` hands the route the caller's
account. The model routes need no key (``check_open``): with one they count against its
account's rate, without one against none. Downloads, uploads and storage are the file host's,
not API requests, and never pass here.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from runner.simulator import answers
from runner.simulator.account import Account
from runner.simulator.accounts import Accounts, request_key
from runner.simulator.config import SimConfig
from runner.simulator.faults import Faults, fault_answer
from runner.simulator.stats import SimStats


class Gate:
    """Accounting, faults, the API key and each account's request rate, for one simulator."""

    def __init__(
        self, config: SimConfig, stats: SimStats, accounts: Accounts, faults: Faults
    ) -> None:
        self.config = config
        self.stats = stats
        self.accounts = accounts
        self.faults = faults

    async def check(self, request: web.Request, endpoint: str) -> Account | web.Response:
        """The caller's account, or the answer to send instead: a fault (``fault_rate``), 401
        for a missing or unknown key, 429 over the account's rate.

        A faulted request, or one refused for rate or key, does not count against the rate
        limit, so waiting it out works.
        """
        passed = await self._pass(request, endpoint)
        if passed is None:
            self.stats.unauthorized += 1
            return answers.error(self.config, 401, "Invalid or missing API key")
        return passed

    async def check_open(self, request: web.Request, endpoint: str) -> web.Response | None:
        """As ``check`` for a route that needs no key: the answer to send instead, or None to
        let the route answer. A request without a (known) key counts against no account."""
        passed = await self._pass(request, endpoint)
        return passed if isinstance(passed, web.Response) else None

    async def _pass(self, request: web.Request, endpoint: str) -> Account | web.Response | None:
        """Count, fault, key, rate: the account, an answer to send instead, or None when the
        request carries no key the simulator accepts."""
        now = asyncio.get_running_loop().time()
        self.stats.api_requests.append((now, endpoint))
        fault = self.faults.draw(endpoint)
        if fault is not None:
            server_error = answers.json_answer(answers.SERVER_ERROR, 500)
            return await fault_answer(
                request, fault, self.config.fault_hang, server_error=server_error
            )
        account = self.accounts.resolve(request_key(request.headers))
        if account is None:
            return None
        account.own.api_requests.append((now, endpoint))
        refused = account.rate_refusal(now)
        if refused is not None:
            return answers.too_many(self.config, refused)
        return account
