"""``i2v-runner``: arguments → frozen config → one coroutine → exit code. The only sys.exit.

``run``, ``validate`` and ``run --dry-run`` all go through ``runner.batch.check_and_run``. The
parser and the config its options make are in ``options`` (argument types and the shared API
options in ``values``); the other commands each have their module: ``status``, ``cancel``,
``report``, ``simulate``. ``main`` runs a command and turns errors into exit codes, and a run's
``--on-finish`` command is run by ``notify``.
"""

from runner.cli.main import command, execute, main
from runner.cli.options import build_parser

__all__ = ["build_parser", "command", "execute", "main"]
