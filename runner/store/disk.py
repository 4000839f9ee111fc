"""The one boundary between local files and the exception tree: an ``OSError`` of any file the
runner reads or writes (the output directory, its lock, the ledger, a video, the summary, an
image to upload) becomes a ``StorageError`` (or the subclass the caller names) that says what
could not be done to which path and why: ``cannot write out/summary.json: No space left on
device``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import StorageError, os_cause


@contextmanager
def storage(
    path: Path, doing: str, *, error: type[StorageError] = StorageError, then: str = ""
) -> Iterator[None]:
    """An OSError inside becomes ``error("cannot <doing> <path>: <cause><then>")``."""
    try:
        yield
    except IsADirectoryError:
        raise error(f"cannot {doing} {path}: a directory is in the way{then}") from None
    except OSError as exc:
        raise error(f"cannot {doing} {path}: {os_cause(exc)}{then}") from None
