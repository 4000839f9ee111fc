"""The ledger writer: a record is whole on disk before ``append`` returns, or it raises; appends
that arrive together share one write and one fsync."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from runner.errors import LedgerError
from runner.store import writer as ledger_writer
from runner.store.ledger import parse
from runner.store.writer import LedgerWriter


class ShortThenFull:
    """``os.write`` as a disk that takes ``room`` more bytes, in pieces, then is full."""

    def __init__(self, room: int, piece: int = 7) -> None:
        self.room = room
        self.piece = piece
        self.real = os.write

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        take = min(len(data), self.piece, self.room)
        self.room -= take
        return self.real(fd, bytes(data[:take]))


async def test_short_writes_are_continued_until_the_record_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setattr(ledger_writer.os, "write", ShortThenFull(room=10_000, piece=5))
    async with LedgerWriter(path) as writer:
        await writer.append("a", "k1", "submitting", attempt=1)
        await writer.append("a", "k1", "submitted", prediction_id="p-1")
    records, warnings = parse(path.read_text())
    assert warnings == []
    assert [r["event"] for r in records] == ["submitting", "submitted"]


async def test_a_full_disk_mid_record_raises_and_refuses_every_later_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a short write was ignored and ``append`` returned as if the record were there."""
    path = tmp_path / "ledger.jsonl"
    async with LedgerWriter(path) as writer:
        await writer.append("a", "k1", "submitting", attempt=1)
        monkeypatch.setattr(ledger_writer.os, "write", ShortThenFull(room=20))
        with pytest.raises(LedgerError, match="No space left on device"):
            await writer.append("b", "k2", "submitting", attempt=1)
        monkeypatch.undo()  # space again: still nothing is glued to the torn line
        with pytest.raises(LedgerError):
            await writer.append("c", "k3", "submitting", attempt=1)
    records, warnings = parse(path.read_text())
    assert [r["item"] for r in records] == ["a"]
    assert len(warnings) == 1 and "torn last line" in warnings[0]


async def test_a_reopened_ledger_never_glues_a_record_to_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text(
        '{"ts":"2026-11-23T06:00:00.000Z","item":"a","key":"k","event":"submitting",'
        '"attempt":1}\n{"ts":"2026-11-23T06:00:01.0'
    )
    async with LedgerWriter(path) as writer:
        await writer.append("b", "k2", "submitting", attempt=1)
    records, warnings = parse(path.read_text())
    assert [r["item"] for r in records] == ["a", "b"]
    assert len(warnings) == 1 and "corrupt record skipped" in warnings[0]


async def test_a_link_planted_at_the_ledger_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    output = tmp_path / "out"
    output.mkdir()
    (output / "ledger.jsonl").symlink_to(outside)
    async with LedgerWriter(output / "ledger.jsonl") as writer:
        with pytest.raises(LedgerError, match="cannot open the ledger"):
            await writer.append("a", "k", "submitting", attempt=1)
    assert outside.read_text() == "keep\n"


async def test_a_writer_that_never_appends_never_opens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "ledger.jsonl"  # cannot be created
    async with LedgerWriter(path):
        pass
    assert not path.exists()
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        async with LedgerWriter(path) as writer:
            await writer.open()


# -- group commit: appends that arrive together share one trip to the disk ----------------------


class CountedFsync:
    """``os.fsync`` that counts its calls and remembers how many bytes of the file each one
    made durable."""

    def __init__(self) -> None:
        self.real = os.fsync
        self.calls = 0
        self.durable = 0

    def __call__(self, fd: int) -> None:
        self.real(fd)
        self.calls += 1
        self.durable = os.fstat(fd).st_size


async def burst(writer: LedgerWriter, count: int, each: Callable[[int], Awaitable[None]]) -> None:
    """``count`` appends started in the same tick, as when many polls answer at once."""

    async def one(n: int) -> None:
        await writer.append(f"i{n}", f"k{n}", "succeeded", prediction_id=f"p-{n}")
        await each(n)

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, n)


async def test_a_burst_of_appends_takes_two_trips_to_the_disk_not_one_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 50 appends made 50 trips to a worker thread and 50 fsyncs."""
    path = tmp_path / "ledger.jsonl"
    fsync = CountedFsync()
    monkeypatch.setattr(ledger_writer.os, "fsync", fsync)
    trips = 0
    run_sync = anyio.to_thread.run_sync

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    async with LedgerWriter(path) as writer:
        await writer.open()
        trips = fsync.calls = 0

        async def nothing(n: int) -> None:
            pass

        await burst(writer, 50, nothing)
        assert trips <= 2 and fsync.calls <= 2
        assert writer.writes == trips
    records, warnings = parse(path.read_text())
    assert warnings == []
    assert [r["item"] for r in records] == [f"i{n}" for n in range(50)]  # in call order


async def test_each_append_of_a_burst_returns_only_once_its_record_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller acts on its record (sends a create, say) only after ``append`` returned: by
    then an fsync has covered it, whichever append of its batch did the writing."""
    path = tmp_path / "ledger.jsonl"
    fsync = CountedFsync()
    monkeypatch.setattr(ledger_writer.os, "fsync", fsync)
    unsafe: list[int] = []

    async def check(n: int) -> None:
        if f'"item":"i{n}"'.encode() not in path.read_bytes()[: fsync.durable]:
            unsafe.append(n)

    async with LedgerWriter(path) as writer:
        for _ in range(3):  # bursts that meet a write under way, and follow each other
            await burst(writer, 20, check)
    assert unsafe == []
    assert len(parse(path.read_text())[0]) == 60


async def test_a_failed_batch_write_fails_every_append_in_it_and_every_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.jsonl"
    failed: list[int] = []
    returned: list[int] = []

    async def one(writer: LedgerWriter, n: int) -> None:
        try:
            await writer.append(f"i{n}", f"k{n}", "submitting", attempt=1)
        except LedgerError:
            failed.append(n)
        else:
            returned.append(n)

    async with LedgerWriter(path) as writer:
        await writer.append("a", "k", "submitting", attempt=1)
        monkeypatch.setattr(ledger_writer.os, "write", ShortThenFull(room=30))
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(one, writer, n)
        monkeypatch.undo()
        with pytest.raises(LedgerError):
            await writer.append("b", "k", "submitting", attempt=1)
    assert returned == [] and sorted(failed) == list(range(10))
    records, warnings = parse(path.read_text())
    assert [r["item"] for r in records] == ["a"]
    assert len(warnings) == 1 and "torn last line" in warnings[0]


async def test_a_cancelled_append_is_seen_through_so_disk_and_caller_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record queued behind a write under way is written by whichever append of its batch
    gets the turn, so a cancel cannot call it back: each append, once called, returns its
    record when it is on disk and the cancel lands after. (Cancelled while queued, its record
    must not reach the disk behind its caller's back.)"""
    path = tmp_path / "ledger.jsonl"
    inside, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        inside.set()
        release.wait(10)
        real_fsync(fd)

    given: list[str] = []

    async def one(writer: LedgerWriter, n: int) -> None:
        record = await writer.append(f"i{n}", f"k{n}", "submitting", attempt=1)
        given.append(record["item"])
        await anyio.sleep(3600)

    async with LedgerWriter(path) as writer:
        await writer.open()
        monkeypatch.setattr(ledger_writer.os, "fsync", held_fsync)
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(one, writer, n)
            await anyio.to_thread.run_sync(inside.wait, 10)  # the first batch is being written
            for n in range(20, 40):
                tg.start_soon(one, writer, n)  # the next batch queues behind it
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
            release.set()
    on_disk = [r["item"] for r in parse(path.read_text())[0]]
    assert sorted(given) == sorted(on_disk) == sorted(f"i{n}" for n in range(40))
