"""The view without a terminal (cron, CI, a pipe): no live display, a heartbeat line every
``--heartbeat`` seconds with the counts, the spend and the ETA (``text.heartbeat_line``), and
429s and pauses as warnings, all through the log (ISO-stamped, one line each).
"""

from __future__ import annotations

import logging

from runner.display.progress import Snapshot
from runner.display.text import heartbeat_line


class HeartbeatScreen:
    """Logs ``heartbeat_line`` every ``every`` seconds of the run (0: never) to ``logger``."""

    def __init__(self, every: float, logger: logging.Logger) -> None:
        self.every = every
        self._log = logger
        self._next = every

    def start(self, snapshot: Snapshot) -> None:
        self._next = snapshot.elapsed + self.every

    def show(self, snapshot: Snapshot) -> None:
        """A heartbeat line if one is due (one, however late: never a burst of them)."""
        if self.every > 0 and snapshot.elapsed >= self._next:
            self._log.info("%s", heartbeat_line(snapshot))
            self._next += self.every
            if self._next <= snapshot.elapsed:  # late (a busy loop): the next a period on
                self._next = snapshot.elapsed + self.every

    def news(self, line: str) -> None:
        self._log.warning("%s", line)

    def stop(self, snapshot: Snapshot | None) -> None:
        """Nothing to undo: every line is written already."""
