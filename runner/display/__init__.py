"""What a run shows as it goes, for the CLI: the live view on a terminal (``live``), heartbeat
lines without one (``heartbeat``), both from one pure model of the run's progress fed by its
events (``progress``, in words: ``text``); ISO-stamped log lines (``logs``); every event as a
JSON line with ``--log-file`` (``logfile``); the end of the run (``endtable``). ``view`` puts
them together behind one handle, ``RunView``.
"""

from runner.config import DEFAULT_HEARTBEAT
from runner.display.logs import IsoFormatter, log_handler
from runner.display.progress import Progress, Snapshot, Stage
from runner.display.view import Mode, RunView, ViewSettings, choose_mode

__all__ = [
    "DEFAULT_HEARTBEAT",
    "IsoFormatter",
    "Mode",
    "Progress",
    "RunView",
    "Snapshot",
    "Stage",
    "ViewSettings",
    "choose_mode",
    "log_handler",
]
