"""The running event loop's clock and sleep, read without anyio's look-up of the backend.

``anyio.current_time()`` and ``anyio.sleep()`` find out which async library runs the current
task on every call (an ``import`` statement and a dict look-up, about a microsecond). The
request window and the poll loop read the clock a few times per API request: at a thousand in
flight that look-up alone was 5-8 % of the runner's CPU. Under asyncio, ``now`` and ``sleep``
go to the running loop directly; under any other backend they are anyio's. Either way they read
the same clock as ``anyio.current_time()``, so times from both can be compared.
"""

from __future__ import annotations

import asyncio

import anyio


def now() -> float:
    """The running event loop's clock, in seconds (``anyio.current_time()``)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another backend: anyio knows its clock
        return anyio.current_time()
    return loop.time()


async def sleep(seconds: float) -> None:
    """Wait ``seconds`` on the event loop's clock, a checkpoint even for 0 (``anyio.sleep``).

    Raises ValueError for a negative or NaN ``seconds``, as ``anyio.sleep`` does.
    """
    if not seconds >= 0:
        raise ValueError(f"cannot sleep {seconds!r} seconds")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        await anyio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)
