"""Fixtures for tests against the built-in simulator over real loopback HTTP."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageDraw

from runner.simulator import SimConfig, Simulator

from .loopback import Loopback

#: A simulator fast enough for tests: runs of 0.2-0.4 s, status visible in 50 ms steps, small
#: videos. A test overrides only the fields its behaviour is about.
FAST: dict[str, Any] = {
    "runtime_mean": 0.3,
    "runtime_min": 0.2,
    "runtime_max": 0.4,
    "outlier_rate": 0.0,
    "queue_delay": 0.02,
    "status_quantum": 0.05,
    "max_side": 128,
    "video_seconds": 1.5,
    "starting_delay": 0.02,
    "executions_lag": 0.05,  # lags as the real list does, well within the tests' reconcile wait
}

#: The simulator profile the runner's integration tests meet (``runner.simulator.PROFILES``):
#: ``real`` by default; ``make test`` runs them again against ``realistic`` (a few percent
#: transient faults on every endpoint). Tests of the simulator itself pin their own switches.
PROFILE = os.environ.get("SIM_PROFILE", "real")

#: For a test whose seeded draws (which items fail, which downloads are cut) must come out the
#: same under every profile: the realistic profile's faults draw from the same random source.
NO_PROFILE_FAULTS: dict[str, Any] = {
    "fault_rate": 0.0,
    "create_fault_rate": 0.0,
    "truncate_downloads_rate": 0.0,
}

StartSimulator = Callable[..., Awaitable[Simulator]]
MakePng = Callable[..., bytes]


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[StartSimulator]:
    """A factory: ``sim = await simulator(concurrency=2)`` starts one (FAST plus the changes);
    every simulator started is stopped at teardown. A test module of the simulator itself
    sets ``SIM_PROFILE = "real"`` to stay on the default whatever ``SIM_PROFILE`` says."""
    profile = getattr(request.module, "SIM_PROFILE", PROFILE)
    async with contextlib.AsyncExitStack() as stack:

        async def start(**changes: Any) -> Simulator:
            config = SimConfig.profile(profile, **{**FAST, **changes})
            return await stack.enter_async_context(Simulator(config))

        yield start


@pytest.fixture
async def servers() -> AsyncIterator[Loopback]:
    """Scripted loopback servers (``loopback.Loopback``) for tests of the wire itself."""
    async with Loopback() as started:
        yield started


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that sends a key the default simulator accepts."""
    async with aiohttp.ClientSession(headers={"X-API-Key": "test-key"}) as client:
        yield client


def png_bytes(
    size: tuple[int, int] = (96, 64),
    color: tuple[int, int, int] = (200, 40, 40),
    pattern: bool = True,
) -> bytes:
    """A small PNG: a colour field with (by default) a few shapes, so frames can be compared."""
    image = Image.new("RGB", size, color)
    if pattern:
        draw = ImageDraw.Draw(image)
        w, h = size
        draw.rectangle((w // 8, h // 8, w // 2, h // 2), fill=(20, 20, 220))
        draw.ellipse((w // 2, h // 3, w - w // 8, h - h // 8), fill=(240, 240, 60))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def make_png() -> MakePng:
    """``make_png(size=(96, 64), color=(r, g, b), pattern=True)`` → PNG bytes."""
    return png_bytes
