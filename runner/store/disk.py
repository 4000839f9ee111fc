"""The one boundary between local files and the exception tree: an ``OSError`` of any file the
runner reads or writes (the output directory, its lock, the ledger, a video, the summary, an
image to upload) becomes a ``StorageError`` (or the subclass the caller names) that says what
could not be done to which path and why: ``cannot write out/summary.json: No space left on
device``.

And the one way a whole file is written (``write_if_changed``: the summary, the results, the
contact sheet and its pictures): through a temporary file of its own and a rename, never
through a planted link, and not at all when it already holds the same bytes (a finished batch
in a read-only directory is left alone). The temporary file has a random name (created with
``O_EXCL``), so two writers at the same moment (a run finishing, ``i2v-runner report DIR``)
never write into each other's file: the last rename wins and each file is always whole.
Blocking: call these in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
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


#: The largest existing file compared before writing; a bigger one is simply replaced.
_MAX_COMPARE = 64 * 1024 * 1024


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data`` atomically (a temporary file, fsync, rename), unless it
    already is a regular file holding exactly ``data``. Whether it wrote. Raises StorageError
    naming the path and the cause. Blocking."""
    if _holds(path, data):
        return False
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    with storage(path, "write"):
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    return True


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a regular file (not a link) holding exactly ``data``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        size = info.st_size
        if not stat.S_ISREG(info.st_mode) or size != len(data) or size > _MAX_COMPARE:
            return False
        chunks, offset = [], 0
        while offset < size and (chunk := os.pread(fd, size - offset, offset)):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def ensure_folder(folder: Path) -> None:
    """Make ``folder`` (its parent must exist) if needed. StorageError if something other than
    a real directory is there: a link planted at ``report/`` would lead every poster outside
    the output directory."""
    with storage(folder, "create the folder"):
        folder.mkdir(exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode):
            raise StorageError(f"cannot use {folder}: it is not a directory")
