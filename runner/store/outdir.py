"""The output directory itself: made when a run needs it, locked while a runner works in it
(flock: a crash never leaves a stale lock), and files replaced whole, never written through a
planted link."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import LockedError, StorageError
from runner.store.disk import storage, write_if_changed

LOCK_NAME = ".lock"


@contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on the output directory; LockedError if another runner has it.

    flock is released by the kernel when its process dies, so a crash never leaves a stale lock.
    A read-only directory is locked through its existing lock file opened read-only (flock
    needs no write access), or not at all if it has none: nothing can write there anyway.
    """
    path = output_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            with storage(path, "create the lock file"):
                raise
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            yield  # no lock file in a directory nobody can write to: nothing to guard
            return
        except OSError:
            with storage(path, "open the lock file"):
                raise
    try:
        _lock(fd, output_dir)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, output_dir: Path) -> None:
    """Take the exclusive flock on ``fd`` without waiting; LockedError if another runner has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockedError(
            f"another runner is already working in {output_dir}; "
            "wait for it to finish or stop it first"
        ) from None


def prepare_output_dir(output_dir: Path) -> None:
    """Create the output directory if needed; StorageError if it is a file or cannot be made."""
    if output_dir.is_dir():
        return
    if output_dir.exists() or output_dir.is_symlink():
        raise StorageError(f"the output directory {output_dir} is not a directory")
    with storage(output_dir, "create the output directory"):
        output_dir.mkdir(parents=True, exist_ok=True)


def write_json_atomically(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` whole (``disk.write_if_changed``); StorageError
    naming the path and the cause if it cannot be written. Blocking."""
    write_if_changed(path, (json.dumps(data, indent=2) + "\n").encode())
