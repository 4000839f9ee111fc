"""``i2v-runner``: arguments → frozen config → one coroutine → exit code. The only sys.exit.

``run``, ``validate`` and ``run --dry-run`` all go through ``runner.batch.check_and_run``. The
parser and the config its options make are in ``options`` (argument types in ``values``, the
``simulate`` command in ``simulate``); ``main`` runs a command and turns errors into exit codes.
"""

from runner.cli.main import command, execute, main
from runner.cli.options import build_parser

__all__ = ["build_parser", "command", "execute", "main"]
