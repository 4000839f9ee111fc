"""The live view on a terminal (rich): a bar of the items done, the time elapsed and the ETA,
the items by stage, in flight against the cap, the request window against its limit, and the
spend against ``--budget``; 429s, pauses and the log's warnings print above it as they happen.

Rich's own refresh thread draws it at most ``REFRESH_PER_SECOND`` times a second; ``show``
only hands it the newest snapshot's renderable, so the scheduler never waits for the terminal.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from runner.display import text
from runner.display.logs import through_console
from runner.display.progress import Snapshot, Stage

#: Redraws a second, at most: the counts change every few seconds, a redraw costs a write.
REFRESH_PER_SECOND = 4
#: The bar's width in columns.
BAR_WIDTH = 40

_STYLES = {
    Stage.PENDING: "dim",
    Stage.UPLOADING: "cyan",
    Stage.SUBMITTED: "cyan",
    Stage.RUNNING: "blue",
    Stage.DOWNLOADING: "magenta",
    Stage.DONE: "green",
    Stage.FAILED: "red",
}


def renderable(snapshot: Snapshot) -> RenderableType:
    """The view of one snapshot: three lines (pure)."""
    top = Table.grid(padding=(0, 1))
    top.add_row(
        ProgressBar(total=max(snapshot.total, 1), completed=snapshot.done, width=BAR_WIDTH),
        Text(text.done_text(snapshot), style="bold"),
        Text(text.time_text(snapshot)),
    )
    stages = Text()
    for stage in Stage:
        if stages:
            stages.append(" · ", style="dim")
        stages.append(f"{stage.value} {snapshot.counts[stage]}", style=_STYLES[stage])
    limits = Text(
        f"{text.flight_text(snapshot)} · {text.window_text(snapshot)} · {text.spend_text(snapshot)}"
    )
    return Group(top, stages, limits)


class LiveScreen:
    """The live view on ``stream`` (a terminal), with the log printed above it."""

    def __init__(self, stream: TextIO, *, log_level: int = logging.WARNING) -> None:
        self.console = Console(file=stream)
        self._stream = stream
        self._log_level = log_level
        self._live: Live | None = None
        self._routed = contextlib.ExitStack()

    def start(self, snapshot: Snapshot) -> None:
        """Start drawing; from now on log lines of ``log_level`` and above print above the
        view (those below it, the per-item INFO lines, are what the view shows as counts)."""
        self._routed.enter_context(
            through_console(self.console, self._stream, level=self._log_level)
        )
        self._live = Live(
            renderable(snapshot),
            console=self.console,
            refresh_per_second=REFRESH_PER_SECOND,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def show(self, snapshot: Snapshot) -> None:
        """Hand the view its newest state; rich's thread draws it at its next refresh."""
        if self._live is not None:
            self._live.update(renderable(snapshot))

    def news(self, line: str) -> None:
        """A line above the view (a 429, a pause)."""
        self.console.print(Text(line, style="yellow"), soft_wrap=True)

    def stop(self, snapshot: Snapshot | None) -> None:
        """Draw the last state and stop; the log goes to the terminal directly again."""
        if self._live is not None:
            if snapshot is not None:
                self._live.update(renderable(snapshot), refresh=True)
            self._live.stop()
            self._live = None
        self._routed.close()
