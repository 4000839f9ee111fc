"""The ledger writer: a record is whole on disk before ``append`` returns, or it raises."""

from __future__ import annotations

import errno
import os
from pathlib import Path

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
