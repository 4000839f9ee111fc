"""Rows of the decision table that only a hostile server shows, end to end over loopback: a
proxy in front of the simulator answers chosen requests itself and forwards the rest."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runner.batch import run_batch

from .helpers import FAST, ledger_events, run_config, write_manifest

pytestmark = pytest.mark.timeout(120)

Intercept = Callable[[web.Request], Awaitable[web.Response | None]]


class Proxy:
    """Forwards every request to ``target`` unless ``intercept`` answers it first."""

    def __init__(self, target: str, intercept: Intercept) -> None:
        self.target = target
        self.intercept = intercept
        self.url = ""

    async def __aenter__(self) -> Proxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        answer = await self.intercept(request)
        if answer is not None:
            return answer
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            keep = {k: v for k, v in upstream.headers.items() if k.lower() in _KEPT}
            return web.Response(status=upstream.status, body=body, headers=keep)


_KEPT = frozenset({"content-type", "retry-after", "location", "x-request-id"})


async def test_a_create_answered_408_is_sent_again_not_failed(
    simulator: Any, tmp_path: Path
) -> None:
    """A 408 means the server did not take the request: nothing was created, so the item is
    created again. Before the decision table, the engine failed the item (HTTP_408)."""
    sim = await simulator()
    creates = 0

    async def first_create_times_out(request: web.Request) -> web.Response | None:
        nonlocal creates
        if request.method == "POST" and request.path == "/v1/prediction":
            creates += 1
            if creates == 1:
                await request.read()
                return web.json_response({}, status=408)
        return None

    manifest_path = write_manifest(tmp_path, count=1)
    output = tmp_path / "out"
    async with Proxy(sim.base_url, first_create_times_out) as proxy:
        result = await run_batch(run_config(manifest_path, proxy.url, output), resume_command="x")
    assert creates == 2
    assert len(sim.stats.creates) == 1  # the 408 never reached the simulator
    [row] = result.summary["items"]
    assert row["status"] == "done", result.text
    events = [e["event"] for e in ledger_events(output)]
    assert events.count("submitting") == 2 and events.count("submitted") == 1
    assert events.index("pending") < events.index("submitted")  # the 408 left it pending


async def test_an_image_gone_after_the_checks_fails_its_item_and_the_batch_goes_on(
    simulator: Any, tmp_path: Path
) -> None:
    """The second item's image file is deleted while the first item is being created (one in
    flight, so the second is read only later). Before: the OSError of reading it was no
    answer the engine knew, and it ended the whole run with a traceback."""
    sim = await simulator()
    manifest_path = write_manifest(tmp_path, count=2)
    second = sorted((manifest_path.parent / "images").iterdir())[1]

    async def delete_the_second_image(request: web.Request) -> web.Response | None:
        if request.method == "POST" and request.path == "/v1/prediction":
            second.unlink(missing_ok=True)
        return None

    output = tmp_path / "out"
    one_at_a_time = replace(FAST, concurrency=1)
    async with Proxy(sim.base_url, delete_the_second_image) as proxy:
        result = await run_batch(
            run_config(manifest_path, proxy.url, output, limits=one_at_a_time),
            resume_command="x",
        )
    first, gone = result.summary["items"]
    assert first["status"] == "done", result.text
    assert gone["status"] == "failed" and gone["error_code"] == "IMAGE_UNREADABLE"
    assert str(second) in gone["error"]
    assert len(sim.stats.creates) == 1
    assert result.exit_code == 1


@pytest.mark.parametrize("burst", [None, 2])
async def test_burst_smooths_requests_for_a_gateway_with_a_small_token_bucket(
    simulator: Any, tmp_path: Path, burst: int | None
) -> None:
    """A gateway that limits with a token bucket of 4 (refilled at 20/s) refuses part of a
    burst that is legal under the runner's strict window of 16 in any second; ``burst`` (an
    aiolimiter stage in front of the window) spreads the same requests so none is refused."""
    sim = await simulator(rate_limit=20, rate_window=1.0, rate_burst=4, retry_after=0.2)
    manifest_path = write_manifest(tmp_path, count=6)
    limits = replace(FAST, rate_limit=16, rate_window=1.0, burst=burst)
    result = await run_batch(
        run_config(manifest_path, sim.base_url, tmp_path / "out", limits), resume_command="x"
    )
    assert result.exit_code == 0, result.text  # 429s are waited out either way
    if burst is None:
        assert sim.stats.refused_rate > 0
    else:
        assert sim.stats.refused_rate == 0
