"""``--log-file PATH``: every event of the run as one JSON line, appended.

Each line is ``{"type": "ItemChanged", "time": "2026-11-23T06:00:00.123+01:00", ...}`` with the
event's fields (``runner.events``): amounts of money as strings (``"2.58"``: Decimal, never a
float), a ``Said``'s level by name. The file is opened in append mode (a nightly run adds to
the last one's) and each line is written whole and flushed as it comes, so ``tail -f`` and a
crash see complete lines. The subscriber only queues the event; a task of the run writes the
lines in a worker thread, so the scheduler never waits for the disk. The API key is in no
event; any text equal to a secret the caller names is written ``***`` all the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runner.errors import ConfigError, os_cause
from runner.events import Event, Said

log = logging.getLogger("runner")

REDACTED = "***"


def _plain(value: object) -> object:
    """What ``json`` cannot write itself: money as a string, enums as their value."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def event_line(event: Event, at: float, secrets: tuple[str, ...] = ()) -> str:
    """``event`` (heard at POSIX time ``at``) as one JSON line, without its newline."""
    fields: dict[str, Any] = {
        "type": type(event).__name__,
        "time": datetime.fromtimestamp(at).astimezone().isoformat(timespec="milliseconds"),
    }
    for field in dataclasses.fields(event):
        fields[field.name] = getattr(event, field.name)
    if isinstance(event, Said):
        fields["level"] = logging.getLevelName(event.level)
    line = json.dumps(fields, default=_plain, ensure_ascii=False, separators=(",", ":"))
    for secret in secrets:
        if secret:
            line = line.replace(secret, REDACTED)
    return line


class LogFile:
    """The subscriber of ``--log-file``: call it with each event; ``run`` writes them."""

    def __init__(self, path: Path, *, secrets: tuple[str, ...] = ()) -> None:
        """Opens ``path`` for appending, making its folder if needed (a log inside an output
        directory the first run has yet to make); ConfigError naming it if it cannot be."""
        self.path = path
        self._secrets = secrets
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"--log-file {path}: cannot open it to append: {os_cause(exc)}"
            ) from None
        self._send: MemoryObjectSendStream[tuple[float, Event]]
        self._receive: MemoryObjectReceiveStream[tuple[float, Event]]
        self._send, self._receive = anyio.create_memory_object_stream[tuple[float, Event]](math.inf)
        self._broken = False

    def __call__(self, event: Event) -> None:
        """Queue ``event`` with the time it was heard (no I/O here)."""
        with contextlib.suppress(anyio.ClosedResourceError):  # after the run: closed
            self._send.send_nowait((time.time(), event))

    async def run(self) -> None:
        """Write the queued events until ``close``, then the rest, and close the file."""
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while True:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                        except anyio.EndOfStream:
                            break
                    await anyio.to_thread.run_sync(self._write, batch)
        finally:
            self._file.close()

    def close(self) -> None:
        """No more events: ``run`` writes what is queued and ends."""
        self._send.close()

    def _write(self, batch: list[tuple[float, Event]]) -> None:
        """Each line whole and flushed. A file that cannot be written any more (disk full) is
        said once and given up: the log is no reason to stop a batch that costs money."""
        if self._broken:
            return
        try:
            for at, event in batch:
                self._file.write(event_line(event, at, self._secrets) + "\n")
                self._file.flush()
        except OSError as exc:
            self._broken = True
            log.error("--log-file %s: cannot write it any more: %s", self.path, os_cause(exc))
