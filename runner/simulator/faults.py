"""Transient faults, as a real service's gateway and storage hosts have them now and then.

``SimConfig.fault_rate`` picks the requests (``account.Account.fault`` draws, per endpoint); this
module says what such a request gets: a 500 from the service, a 502 or 504 page from the
gateway in front of it, a connection closed without an answer, or a request held until the
gateway gives up. A faulted request has no other effect: nothing is read, stored or created.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

#: The pages an nginx gateway sends for the upstream errors (what real proxies answer).
GATEWAY_PAGES = {
    502: "Bad Gateway",
    504: "Gateway Time-out",
}


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
