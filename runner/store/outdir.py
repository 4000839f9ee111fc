"""The output directory itself: made when a run needs it, locked while a runner works in it
(flock: a crash never leaves a stale lock), and files replaced whole, never written through a
planted link.

The lock file says who holds it: the runner that takes the lock writes its pid, host, start
time and command line there (``LockOwner``), and leaves them when it ends, so ``status`` can
name a live holder and give the last command that resumes the batch. ``read_lock`` tells,
without taking the lock for good, whether it is held right now.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from runner.errors import LockedError, StorageError
from runner.store.disk import storage, write_if_changed

LOCK_NAME = ".lock"
#: The most of the lock file read for its owner: a few hundred bytes, a long command line
#: included; anything longer is not ours.
MAX_OWNER_BYTES = 64 * 1024
#: Tries (and the pause between them, in seconds) to take a lock that is busy before calling
#: it held: a ``status`` peeking at the lock holds it for a few microseconds, which must not
#: turn a run away.
LOCK_TRIES = 5
LOCK_RETRY_PAUSE = 0.002


@dataclass(frozen=True)
class LockOwner:
    """Who took the lock: ``pid`` on ``host`` at ``started`` (ISO 8601 with the local offset),
    running ``command``; ``resume`` is the command that resumes the batch (the last run's: a
    ``cancel`` holding the lock keeps the run's). Commands are redacted (``config.redact_url``)
    and never hold the key."""

    pid: int
    host: str
    started: str
    command: str
    resume: str


@dataclass(frozen=True)
class LockState:
    """Whether a process holds the lock right now, and who the lock file says took it last
    (None: no lock file, or one that names nobody)."""

    held: bool
    owner: LockOwner | None


def parse_owner(text: str) -> LockOwner | None:
    """The owner the lock file's ``text`` names; None for an empty file, a lock file of an
    older runner, or anything that is not the owner's JSON (a write caught half way)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
        return None
    host, started, command, resume = (
        data.get(name) for name in ("host", "started", "command", "resume")
    )
    if not (
        isinstance(host, str)
        and isinstance(started, str)
        and isinstance(command, str)
        and isinstance(resume, str)
    ):
        return None
    return LockOwner(pid, host, started, command, resume)


def _owner_here(command: str, resume: str) -> LockOwner:
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    return LockOwner(os.getpid(), socket.gethostname(), started, command, resume)


@contextmanager
def output_lock(
    output_dir: Path, *, command: str = "", keep_resume: bool = False
) -> Iterator[None]:
    """Hold an exclusive flock on the output directory; LockedError if another runner has it.

    flock is released by the kernel when its process dies, so a crash never leaves a stale lock.
    A read-only directory is locked through its existing lock file opened read-only (flock
    needs no write access), or not at all if it has none: nothing can write there anyway.

    Once the lock is taken, the lock file is rewritten to name its owner: this process and
    ``command``, its command line, which is also the command that resumes the batch unless
    ``keep_resume`` keeps the one the file names already (a ``cancel`` is no run to resume).
    The owner is information for ``status`` and ``cancel``; a disk that refuses those few
    bytes leaves it unsaid, and the lock held.
    """
    path = output_dir / LOCK_NAME
    writable = True
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
        writable = False
    try:
        _lock(fd, output_dir)
        if writable:
            _write_owner(fd, command, keep_resume=keep_resume)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, output_dir: Path) -> None:
    """Take the exclusive flock on ``fd`` without waiting (but for a peek's few microseconds);
    LockedError if another runner has it."""
    for attempt in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt < LOCK_TRIES - 1:
                time.sleep(LOCK_RETRY_PAUSE)
        else:
            return
    raise LockedError(
        f"another runner is already working in {output_dir}; wait for it to finish or stop it first"
    )


def _write_owner(fd: int, command: str, *, keep_resume: bool) -> None:
    """Replace the lock file's text by this process's owner record, through the locked ``fd``
    (truncate, write, fsync). Errors are swallowed: see ``output_lock``."""
    with contextlib.suppress(OSError):
        resume = command
        if keep_resume:
            before = parse_owner(os.pread(fd, MAX_OWNER_BYTES, 0).decode("utf-8", "replace"))
            resume = before.resume if before is not None else ""
        data = (json.dumps(asdict(_owner_here(command, resume))) + "\n").encode()
        os.ftruncate(fd, 0)
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.fsync(fd)


def read_lock(output_dir: Path) -> LockState:
    """Whether the lock of ``output_dir`` is held right now, and the owner its file names.

    Never takes the lock for good: a shared flock is tried on a descriptor of its own and
    released at once (refused: an exclusive holder exists). Opens the file read-only and writes
    nothing. Raises StorageError for a lock file that cannot be opened or is not a file.
    """
    path = output_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockState(held=False, owner=None)
    except OSError:
        with storage(path, "open the lock file"):
            raise
    try:
        with storage(path, "read the lock file"):
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(f"cannot read the lock file {path}: not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                held = False
            text = os.pread(fd, MAX_OWNER_BYTES, 0).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return LockState(held, parse_owner(text))


def holds_open(pid: int, path: Path) -> bool | None:
    """Whether process ``pid`` has the file at ``path`` open (Linux's ``/proc/PID/fd``): the
    check that a pid read from a lock file is still its holder before it is signalled. None
    where ``/proc`` cannot tell (another system, another user's process); False for a process
    that is gone or has no such file open."""
    if not Path("/proc/self/fd").is_dir():
        return None
    try:
        target = os.stat(path)
        names = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return None  # another user's process: signalling it will say so
    except OSError:
        return False
    for name in names:
        try:
            opened = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (opened.st_dev, opened.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


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
