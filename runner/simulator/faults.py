"""Transient faults, as a real service's gateway and storage hosts have them now and then.

``Faults`` draws which requests fault: ``SimConfig.fault_rate`` (and the outage of
``fault_first``) per endpoint, ``create_fault_rate`` for creates and ``truncate_downloads_rate``
for CDN downloads. They are the server's, not an account's: a request is drawn before its key is
looked at, from the server's one ``random.Random``. ``fault_answer`` says what a faulted request
gets: a 500 from the service, a 502 or 504 page from the gateway in front of it, a connection
closed without an answer, or a request held until the gateway gives up. A faulted request has
no other effect: nothing is read, stored or created.
"""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from runner.simulator.config import SimConfig
from runner.simulator.stats import SimStats

#: The pages an nginx gateway sends for the upstream errors (what real proxies answer).
GATEWAY_PAGES = {
    502: "Bad Gateway",
    504: "Gateway Time-out",
}


class Faults:
    """The transient-fault draws of one simulator, from its one ``random.Random``. Each draws
    only when its switch is on, so other runs keep their sequence of draws."""

    def __init__(self, config: SimConfig, stats: SimStats, rng: random.Random) -> None:
        self.config = config
        self.stats = stats
        self.rng = rng

    def draw(self, endpoint: str) -> str | None:
        """The transient fault (one of ``fault_kinds``) this request to ``endpoint`` gets: every
        one of the first ``fault_first`` to the ``fault_endpoints``, then drawn at
        ``fault_rate``; None to answer it. Counted per endpoint."""
        c = self.config
        if endpoint not in c.fault_endpoints:
            return None
        if sum(self.stats.faults.values()) < c.fault_first:
            pass  # still in the outage
        elif c.fault_rate <= 0 or self.rng.random() >= c.fault_rate:
            return None
        self.stats.faults[endpoint] = self.stats.faults.get(endpoint, 0) + 1
        return self.rng.choice(sorted(c.fault_kinds))

    def create_fails(self) -> bool:
        """Whether this create (which made its prediction) answers 500 (``create_fault_rate``)."""
        rate = self.config.create_fault_rate
        return rate > 0 and self.rng.random() < rate

    def truncates(self) -> bool:
        """Whether this CDN download is cut short (``truncate_downloads_rate``)."""
        rate = self.config.truncate_downloads_rate
        return rate > 0 and self.rng.random() < rate


def gateway_page(status: int) -> web.Response:
    """A gateway's HTML error page for ``status`` (502 or 504)."""
    title = f"{status} {GATEWAY_PAGES[status]}"
    html = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=html, content_type="text/html")


async def fault_answer(
    request: web.Request, kind: str, hang: float, *, server_error: web.Response
) -> web.Response:
    """The answer to a faulted request: ``server_error`` for ``500``, a gateway page for ``502``
    and ``504``, none at all for ``reset`` (the connection is closed), and for ``timeout`` a
    504 page after holding the request ``hang`` seconds."""
    if kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never sent: the connection is gone
    if kind == "timeout":
        await asyncio.sleep(hang)
        return gateway_page(504)
    if kind in ("502", "504"):
        return gateway_page(int(kind))
    return server_error
