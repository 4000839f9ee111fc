"""The ledger's writer: each record appended whole and fsynced before the caller acts on it.

Records appended while a write is under way are written together next: one trip to a worker
thread, one write and one fsync for all of them (a group commit). At a thousand in flight many
polls answer in the same tick, and a trip costs about as much CPU as an API request.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import anyio

from runner.errors import LedgerError
from runner.store.disk import storage
from runner.store.ledger import encode, now_iso


class _Batch:
    """The records appended while the write before them was under way: written in one go."""

    __slots__ = ("failure", "lines", "written")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.written = False  # whole on disk and fsynced
        self.failure = "the record was not written"


class LedgerWriter:
    """Appends records and fsyncs each one before ``append`` returns.

    A record is on disk whole, or ``append`` raises LedgerError: a short write (a full disk,
    a file size limit) is continued until every byte is written or the system refuses, and a
    writer that failed once refuses every later append, so no record is ever glued to the torn
    remains of one that failed. The caller acts on a record (sends a create, say) only after
    ``append`` returned. The file is opened lazily, on the first append, so a run that has
    nothing to record never needs a writable directory.

    Writes run in a worker thread so the event loop never blocks on the disk. Appends that
    arrive while one is being written wait for it, then go together: the first of them to get
    the writer's turn writes all of them (in the order ``append`` was called) with one fsync,
    and each returns once that fsync did, or raises the LedgerError it met. So a burst of
    appends costs two trips to the disk, not one each.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = anyio.Lock()
        self._broken: str | None = None
        self._queued = _Batch()  # appended, not yet taken by a write
        self.writes = 0  # trips to the disk for appends (each one write and one fsync)

    async def __aenter__(self) -> LedgerWriter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def open(self) -> None:
        """Open the ledger for appending now; LedgerError if that is impossible."""
        async with self._lock:
            await anyio.to_thread.run_sync(self._ensure_open)

    def _ensure_open(self) -> None:
        if self._broken is not None:
            raise LedgerError(self._broken)
        if self._fd is not None:
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        with storage(self.path, "open the ledger", error=LedgerError):
            fd = os.open(self.path, flags, 0o644)
        try:
            with storage(self.path, "open the ledger", error=LedgerError):
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise LedgerError(f"cannot open the ledger {self.path}: not a regular file")
                size = os.fstat(fd).st_size
                if size and _last_byte(self.path, size) != b"\n":
                    self._write_all(fd, b"\n")  # a torn last line: never glue a record to it
        except LedgerError:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, "the write made no progress")
            view = view[written:]
        os.fsync(fd)

    def _write(self, data: bytes) -> None:
        self._ensure_open()
        assert self._fd is not None
        try:
            with storage(
                self.path,
                "append to the ledger",
                error=LedgerError,
                then="; nothing more is recorded or sent in this run",
            ):
                self._write_all(self._fd, data)
        except LedgerError as exc:
            self._broken = str(exc)
            raise

    async def append(self, item: str, key: str, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record and return it once it is whole on disk; LedgerError if it is not.

        A cancel does not call an append back: once called, the record is written with its
        batch (which another append may be writing already) and the append returns as usual;
        the cancel takes effect at the caller's next await. So what the caller holds in memory
        never differs from what is on disk.
        """
        record: dict[str, Any] = {"ts": now_iso(), "item": item, "key": key, "event": event}
        record.update({name: value for name, value in fields.items() if value is not None})
        batch = self._queued
        batch.lines.append(encode(record))
        with anyio.CancelScope(shield=True):
            async with self._lock:  # first come, first served: batches go in order
                if batch is self._queued:  # the first of its batch to get the turn writes it
                    self._queued = _Batch()  # all; appends from now on make the next batch
                    self.writes += 1
                    try:
                        await anyio.to_thread.run_sync(self._write, b"".join(batch.lines))
                    except LedgerError as exc:
                        batch.failure = str(exc)
                        raise
                    batch.written = True
        if not batch.written:  # the write that took it failed
            raise LedgerError(batch.failure)
        return record


def _last_byte(path: Path, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.pread(fd, 1, size - 1)
    finally:
        os.close(fd)
