"""The output directory's videos on disk: where an item's video goes, and the blocking file
operations a download is written through (run them in a worker thread; ``close`` alone is quick
enough to run inline).

Nothing is written through a planted link: the ``.part`` is opened with ``O_NOFOLLOW`` (a link
there is removed, which never touches its target, and the file created afresh with
``O_EXCL``), and the final rename replaces whatever entry has the final name rather than
writing through it. Every OSError becomes a StorageError naming the path and the cause
(``store.disk.storage``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from contextlib import suppress
from pathlib import Path

from runner.errors import StorageError
from runner.store.disk import storage
from runner.store.mp4 import Reader, mp4_problem

CHUNK = 256 * 1024


def video_path(output_dir: Path, item_id: str) -> Path:
    """Where an item's video goes: ``OUTPUT/<id>.mp4``, never anywhere else.

    The manifest already refuses unsafe ids; this is the last guard before a write. Raises
    ValueError for an id that is empty, hidden, or would name a path outside ``output_dir``.
    """
    if not item_id or item_id.startswith(".") or "/" in item_id or "\\" in item_id:
        raise ValueError(f"unsafe item id {item_id!r}")
    path = output_dir / f"{item_id}.mp4"
    if path.resolve().parent != output_dir.resolve():
        raise ValueError(f"item id {item_id!r} leaves the output directory")
    return path


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def fd_reader(fd: int) -> Reader:
    return lambda offset, size: os.pread(fd, size, offset)


def verify(path: Path, size: int | None, sha256: str | None) -> bool:
    """Whether ``path`` is a regular file (not a link) holding an MP4 video that matches the
    recorded size and hash. Blocking: run it in a worker thread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (size is not None and info.st_size != size):
            return False
        if mp4_problem(fd_reader(fd), info.st_size) is not None:
            return False
        digest = hashlib.sha256()
        feed(digest, fd)
        return sha256 is None or digest.hexdigest() == sha256
    except OSError:
        return False
    finally:
        os.close(fd)


def check_destination(dest: Path) -> None:
    """StorageError if the final name is taken by a directory (nothing would be saved)."""
    with storage(dest, "save the video to"):
        try:
            if stat.S_ISDIR(os.lstat(dest).st_mode):
                raise IsADirectoryError
        except FileNotFoundError:
            pass


def partial_size(part: Path) -> int:
    """Bytes of an earlier attempt to resume from. Anything at ``part`` that is not a regular
    file (a link, a FIFO) is removed: unlinking a link never touches its target."""
    with storage(part, "use the partial download"):
        try:
            info = os.lstat(part)
        except FileNotFoundError:
            return 0
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if stat.S_ISREG(info.st_mode):
            return info.st_size
        os.unlink(part)
        return 0


def open_part(part: Path, resume: bool) -> int:
    """A descriptor to write ``part`` through, never through a link: appending to the regular
    file there (``resume``), or to a file created afresh after removing whatever was there."""
    with storage(part, "write"):
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        if resume:
            fd = os.open(part, flags | os.O_APPEND | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise StorageError(f"cannot write {part}: it is not a regular file")
            return fd
        with suppress(FileNotFoundError):
            os.unlink(part)
        return os.open(part, flags | os.O_CREAT | os.O_EXCL, 0o644)


def write(fd: int, data: bytes, part: Path) -> None:
    with storage(part, "write"):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]


def seal(fd: int, part: Path) -> str | None:
    """fsync the finished part and check it is an MP4; the problem, or None."""
    with storage(part, "write"):
        os.fsync(fd)
        return mp4_problem(fd_reader(fd), os.fstat(fd).st_size)


def install(part: Path, dest: Path) -> None:
    """Rename ``part`` onto ``dest`` (replacing a link there, never writing through it) and
    make the rename durable."""
    with storage(dest, "save the video to"):
        os.replace(part, dest)
        folder = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def digest_of(fd: int, part: Path) -> hashlib._Hash:
    """The sha256 of what ``part`` holds so far: a resumed download goes on from it."""
    with storage(part, "read"):
        digest = hashlib.sha256()
        feed(digest, fd)
        return digest


def close(fd: int, part: Path) -> None:
    """Close the descriptor ``part`` was written through."""
    with storage(part, "write"):
        os.close(fd)


def discard(part: Path) -> None:
    with storage(part, "remove"):
        part.unlink(missing_ok=True)


def feed(digest: hashlib._Hash, fd: int) -> None:
    """Hash everything ``fd`` holds; raises OSError (``verify`` counts it as a mismatch)."""
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
