"""A download's trips to worker threads: each costs about as much CPU as an API request, so a
small video (one chunk) makes two, and a large one is still written whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
from aiohttp import web

from runner.api.transfers import fetch_video
from runner.store.videos import CHUNK, partial_path, verify
from tests.boxes import mp4
from tests.integration.loopback import Loopback


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each function sent to a worker thread."""
    names: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        names.append(function.__name__)
        return await run_sync(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return names


def serving(data: bytes) -> Callable[..., Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="video/mp4")

    return handler


async def test_a_small_video_takes_two_trips_to_the_disk(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path, trips: list[str]
) -> None:
    """Before: three (check the destination, write the chunk, seal and install)."""
    video = mp4(media=b"\x01" * 5000)
    cdn = await servers.start({"GET /v.mp4": serving(video)})
    dest = tmp_path / "item.mp4"
    got = await fetch_video(session, f"{cdn.url}/v.mp4", dest, seconds=10.0)
    assert dest.read_bytes() == video and verify(dest, got.bytes, got.sha256)
    assert not partial_path(dest).exists()
    assert trips == ["_prepare", "_finish"]


async def test_a_video_of_many_chunks_is_written_whole_in_order(
    servers: Loopback, session: aiohttp.ClientSession, tmp_path: Path, trips: list[str]
) -> None:
    video = mp4(media=bytes(range(256)) * (3 * CHUNK // 256 + 17))
    cdn = await servers.start({"GET /v.mp4": serving(video)})
    dest = tmp_path / "item.mp4"
    got = await fetch_video(session, f"{cdn.url}/v.mp4", dest, seconds=10.0)
    assert dest.read_bytes() == video and verify(dest, got.bytes, got.sha256)
    assert got.bytes == len(video)
    assert trips[0] == "_prepare" and trips[-1] == "_finish"
    assert set(trips[1:-1]) <= {"_write"}
