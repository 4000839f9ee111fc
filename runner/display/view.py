"""What a run shows as it goes: the live view on a terminal, heartbeat lines without one, the
``--log-file``, and the end of the run; the CLI's one handle on all of them.

``RunView`` is an async context around ``check_and_run``: ``on_event`` is its subscriber,
``start`` (once the checks passed) builds the progress from the plan and starts the screen,
``finish`` stops it and prints the end of the run. A task of its own redraws (or logs the
heartbeat) every ``TICK`` seconds from the latest snapshot; the subscriber only updates the
progress and queues lines, so the scheduler never waits for a terminal or a disk.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TextIO

import anyio
from rich.console import Console

from runner.checks.preflight import Report
from runner.config import DEFAULT_HEARTBEAT, Limits
from runner.display.endtable import print_end
from runner.display.heartbeat import HeartbeatScreen
from runner.display.live import LiveScreen
from runner.display.logfile import LogFile
from runner.display.progress import Progress, Snapshot
from runner.events import Event
from runner.money import ZERO, usd
from runner.report import RunResult

log = logging.getLogger("runner")

#: Seconds between two looks at the progress: the live view's redraw pace (rich draws at most
#: 4 a second), how soon a 429 or a pause is printed, the heartbeat's resolution.
TICK = 0.25
#: ``TERM`` values of a terminal that cannot move its cursor (rich's list).
DUMB_TERMS = frozenset({"dumb", "unknown"})


class Mode(enum.StrEnum):
    LIVE = "live"  # a terminal: the live view
    PLAIN = "plain"  # no terminal, or asked for none: heartbeat lines in the log
    QUIET = "quiet"  # -q: nothing but the end of the run


@dataclass(frozen=True)
class ViewSettings:
    """What the user asked of the view (``--no-progress``, ``--heartbeat``, ``--log-file``,
    ``-q``, ``-v``)."""

    progress: bool = True
    heartbeat: float = DEFAULT_HEARTBEAT
    log_file: Path | None = None
    quiet: bool = False
    verbose: bool = False


def choose_mode(settings: ViewSettings, stream: TextIO, environ: Mapping[str, str]) -> Mode:
    """The live view only on a terminal (``stream``, where it draws) that can take it, and
    only if nobody said no: ``--no-progress``, ``NO_COLOR`` (set and not empty, as
    no-color.org has it) or ``TERM=dumb`` give the plain lines; ``-q`` gives neither."""
    if settings.quiet:
        return Mode.QUIET
    if not settings.progress or environ.get("NO_COLOR"):
        return Mode.PLAIN
    if environ.get("TERM", "").lower() in DUMB_TERMS:
        return Mode.PLAIN
    return Mode.LIVE if _is_terminal(stream) else Mode.PLAIN


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Screen(Protocol):
    def start(self, snapshot: Snapshot) -> None: ...
    def show(self, snapshot: Snapshot) -> None: ...
    def news(self, line: str) -> None: ...
    def stop(self, snapshot: Snapshot | None) -> None: ...


class RunView:
    """The view of one command. ``async with RunView(...) as view``: ``view.on_event``
    subscribed to the run, ``view.start(report, limits, budget)`` from ``show``,
    ``view.finish(result)`` at the end."""

    def __init__(
        self,
        settings: ViewSettings,
        mode: Mode,
        out: TextIO,
        err: TextIO,
        *,
        secrets: tuple[str, ...] = (),
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        """ConfigError if ``settings.log_file`` cannot be opened to append."""
        self.settings = settings
        self.mode = mode
        self._out = out
        self._err = err
        self._clock = clock
        self._log_file = (
            None if settings.log_file is None else LogFile(settings.log_file, secrets=secrets)
        )
        self._progress: Progress | None = None
        self._screen: Screen | None = None
        self._news: list[str] = []
        self._started_at: float | None = None
        self._ticker = anyio.CancelScope()
        self._tasks = anyio.create_task_group()

    async def __aenter__(self) -> RunView:
        await self._tasks.__aenter__()
        if self._log_file is not None:
            self._tasks.start_soon(self._log_file.run)
        self._tasks.start_soon(self._tick)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the screen, write the rest of the log file. An error of the command passes
        through as it is (not wrapped in a task group's ExceptionGroup)."""
        self._stop_screen()
        self._ticker.cancel()
        if self._log_file is not None:
            self._log_file.close()
        await self._tasks.__aexit__(None, None, None)

    def on_event(self, event: Event) -> None:
        """The run's subscriber: the log file queues it, the progress follows it."""
        if self._log_file is not None:
            self._log_file(event)
        if self._progress is not None:
            line = self._progress.apply(event, self._clock())
            if line is not None and not self.settings.verbose:  # -v logs them already
                self._news.append(line)

    def start(self, report: Report, limits: Limits, budget_usd: float | None) -> None:
        """The checks passed and the run starts: follow ``report``'s plan on the screen."""
        self._started_at = self._clock()
        if report.plan is None or self.mode is Mode.QUIET:
            return
        estimate = report.estimate
        self._progress = Progress(
            report.plan,
            now=self._clock(),
            concurrency=limits.concurrency,
            rate_limit=limits.rate_limit,
            rate_window=limits.rate_window,
            expected_runtime=limits.expected_runtime,
            budget=budget_usd,
            spent=ZERO if estimate is None else usd(estimate.spent) or ZERO,
            reserved=ZERO if estimate is None else usd(estimate.in_flight) or ZERO,
        )
        if self.mode is Mode.LIVE:
            level = logging.DEBUG if self.settings.verbose else logging.WARNING
            self._screen = LiveScreen(self._err, log_level=level)
        else:
            self._screen = HeartbeatScreen(self.settings.heartbeat, log)
        self._screen.start(self._progress.snapshot(self._clock()))

    def finish(self, result: RunResult) -> None:
        """Stop the screen and print the end of the run: a table on a terminal, else text."""
        self._stop_screen()
        wall = None if self._started_at is None else self._clock() - self._started_at
        console = None
        if self.mode is Mode.LIVE and _is_terminal(self._out):
            console = Console(file=self._out)
        print_end(result.summary, result.text, wall, console, self._out)

    def _stop_screen(self) -> None:
        if self._screen is not None:
            self._flush_news()
            last = None if self._progress is None else self._progress.snapshot(self._clock())
            self._screen.stop(last)
            self._screen = None

    def _flush_news(self) -> None:
        if self._screen is not None:
            news, self._news = self._news, []
            for line in news:
                self._screen.news(line)

    async def _tick(self) -> None:
        with self._ticker:
            while True:
                await anyio.sleep(TICK)
                self._flush_news()
                if self._screen is not None and self._progress is not None:
                    self._screen.show(self._progress.snapshot(self._clock()))
