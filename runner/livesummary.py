"""``summary.json`` kept current while a run goes, not only written at its end: a task beside
the run rebuilds the summary every few seconds and replaces the file (atomically, through
``store.outdir.write_json_atomically``) when it changed, so ``status`` and anyone else
reading the directory see the batch as it stands.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from runner.errors import StorageError
from runner.store.outdir import write_json_atomically

#: Seconds between two looks at the run's summary: often enough for a person or a script
#: watching the directory, rare enough that a 2,000-item summary costs nothing to the run.
REFRESH_EVERY = 5.0

T = TypeVar("T")


async def refreshing(
    work: Awaitable[T],
    path: Path,
    build: Callable[[], dict[str, Any]],
    say: Callable[..., None],
    *,
    every: float = REFRESH_EVERY,
) -> T:
    """Await ``work`` while ``path`` is kept current with ``build()``: written at once, then
    every ``every`` seconds when it changed. The refreshing has stopped (its last write
    finished) when this returns, so the caller's final write is the last. A write that fails
    is said once through ``say(level, message, *args)``; the run goes on."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_keep_current, path, build, say, every)
        result = await work
        tg.cancel_scope.cancel()
    return result


async def _keep_current(
    path: Path, build: Callable[[], dict[str, Any]], say: Callable[..., None], every: float
) -> None:
    written: dict[str, Any] | None = None
    warned = False
    while True:
        summary = build()
        if summary != written:
            try:
                await anyio.to_thread.run_sync(write_json_atomically, path, summary)
            except StorageError as exc:
                if not warned:
                    warned = True
                    say(
                        logging.WARNING,
                        "%s; the run goes on, summary.json is written at its end",
                        exc,
                    )
            else:
                written = summary
        await anyio.sleep(every)
