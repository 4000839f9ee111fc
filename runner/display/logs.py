"""Log lines: stamped with an ISO 8601 date, time and offset, and printed through the live
view's console while it runs, so a line appears above the progress instead of through it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TextIO

from rich.console import Console
from rich.text import Text

#: Every log line: ``2026-11-23T06:00:00+01:00 item-003: submitted as 5f2c...``.
LOG_FORMAT = "%(asctime)s %(message)s"


def iso_time(timestamp: float) -> str:
    """``2026-11-23T06:00:00+01:00``: a POSIX time in the local zone, with its offset."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


class IsoFormatter(logging.Formatter):
    """A formatter whose ``%(asctime)s`` is ISO 8601 with the date and the UTC offset, so a
    log read the next morning (cron, CI) says when, across midnight and time zones."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


def log_handler(level: int) -> logging.Handler:
    """The CLI's handler: lines to stderr, ISO-stamped."""
    handler = logging.StreamHandler()
    handler.setFormatter(IsoFormatter(LOG_FORMAT))
    handler.setLevel(level)
    return handler


class ConsoleHandler(logging.Handler):
    """Writes log lines through a rich console (above a live display, never through it)."""

    def __init__(self, console: Console, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


@contextmanager
def through_console(console: Console, stream: TextIO, *, level: int) -> Iterator[None]:
    """While inside: the root logger's handlers that write to ``stream`` (the terminal the
    live view draws on) are replaced by one that prints through ``console`` at ``level`` and
    above, with the same format. Other handlers (a file, a test's capture) are left alone."""
    root = logging.getLogger()
    swapped = [
        handler
        for handler in root.handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    if not swapped:
        yield
        return
    handler = ConsoleHandler(console, level)
    handler.setFormatter(swapped[0].formatter or IsoFormatter(LOG_FORMAT))
    for old in swapped:
        root.removeHandler(old)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for old in swapped:
            root.addHandler(old)
