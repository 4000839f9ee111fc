"""Pure parts of the download module: the MP4 box walker, verify, and the path guard."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from runner.store.mp4 import mp4_bytes_problem
from runner.store.videos import partial_path, verify, video_path
from tests.boxes import box, ftyp, hdlr, large_box, mp4, track


@pytest.mark.parametrize("item_id", ["../x", "..", "/etc/passwd", "a/b", ".hidden", "", "a\\b"])
def test_an_id_can_never_name_a_path_outside_the_output(tmp_path: Path, item_id: str) -> None:
    with pytest.raises(ValueError):
        video_path(tmp_path, item_id)


def test_a_safe_id_names_a_file_directly_in_the_output(tmp_path: Path) -> None:
    path = video_path(tmp_path, "deer-01")
    assert path == tmp_path / "deer-01.mp4"
    assert partial_path(path) == tmp_path / "deer-01.mp4.part"


GOOD = mp4()


@pytest.mark.parametrize(
    "data",
    [
        GOOD,
        ftyp() + box(b"moov", track()) + box(b"mdat", payload=b"\1" * 32),  # moov first
        ftyp() + box(b"free") + box(b"mdat", payload=b"x") + box(b"moov", track(b"soun"), track()),
        ftyp() + large_box(b"mdat", b"\0" * 40) + box(b"moov", track()),
        ftyp() + box(b"moov", track()) + struct.pack(">I4s", 0, b"mdat") + b"\0" * 50,  # to end
        ftyp() + box(b"moov", box(b"mvhd", payload=b"\0" * 100), box(b"udta"), track()),
    ],
    ids=["minimal", "moov-first", "audio-then-video", "64-bit-size", "size-0-last", "extras"],
)
def test_a_well_formed_mp4_with_a_video_track_passes(data: bytes) -> None:
    assert mp4_bytes_problem(data) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "it does not start with an ftyp box"),
        (ftyp() + b"\0" * 4000, "the box at byte 32 has no type"),
        (ftyp() + b"\0" * 3, "the box header at byte 32 is cut short"),
        (b"\x00\x00\x00\x18ftypmp42", "the ftyp box at byte 0 runs past the end (24 > 12 bytes)"),
        (box(b"moov", track()) + ftyp(), "it does not start with an ftyp box"),
        (ftyp() + box(b"mdat", payload=b"x" * 10), "it has no moov box"),
        (ftyp() + box(b"moov", track(b"soun")), "it has no video track"),
        (ftyp() + box(b"moov", box(b"trak")), "it has no video track"),
        (ftyp() + box(b"moov", box(b"trak", box(b"mdia"))), "it has no video track"),
        (ftyp() + box(b"moov", track())[:-3], "the moov box at byte 32 runs past the end"),
        (GOOD + b"\0\0\0\x10junk", "runs past the end"),
        (ftyp() + struct.pack(">I4s", 4, b"mdat"), "the mdat box at byte 32 has the size 4"),
        (ftyp() + struct.pack(">I4sQ", 1, b"mdat", 9), "the mdat box at byte 32 has the size 9"),
        (ftyp() + struct.pack(">I4s", 1, b"mdat") + b"\0", "the mdat box at byte 32 is cut short"),
        (ftyp() + box(b"moov", box(b"trak", box(b"mdia", box(b"hdlr")))), "no video track"),
        (
            ftyp() + box(b"moov", box(b"trak", b"\0\0\0\x04mdia")),
            "mdia box at byte 48 has the size 4",
        ),
        (b"<html><body>Access denied</body></html>", "the l><b box at byte 0 runs past the end"),
    ],
    ids=[
        "empty",
        "ftyp-then-zeros",
        "ftyp-then-3-bytes",
        "signature-only",
        "ftyp-not-first",
        "no-moov",
        "audio-only",
        "empty-trak",
        "empty-mdia",
        "truncated-moov",
        "trailing-box-past-end",
        "size-below-header",
        "64-bit-size-below-header",
        "64-bit-size-cut-short",
        "empty-hdlr",
        "malformed-child",
        "html",
    ],
)
def test_anything_else_is_refused_with_the_reason(data: bytes, problem: str) -> None:
    found = mp4_bytes_problem(data)
    assert found is not None and problem in found


def test_the_handler_must_be_inside_its_box() -> None:
    short = box(b"hdlr", payload=b"\0" * 8)  # the handler type would be past its end
    data = ftyp() + box(b"moov", box(b"trak", box(b"mdia", short, hdlr(b"soun"))))
    assert mp4_bytes_problem(data) == "it has no video track"


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_verify_checks_the_boxes_the_size_and_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    digest = _write(path, GOOD)
    assert verify(path, len(GOOD), digest)
    assert verify(path, None, None)
    assert not verify(path, len(GOOD) + 1, digest)
    assert not verify(path, len(GOOD), "0" * 64)
    assert not verify(tmp_path / "missing.mp4", None, None)


def test_verify_refuses_a_signature_without_a_video(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    data = ftyp() + b"\0" * 1000
    digest = _write(path, data)
    assert not verify(path, len(data), digest)


def test_verify_never_reads_through_a_link_or_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.mp4"
    digest = _write(target, GOOD)
    link = tmp_path / "a.mp4"
    link.symlink_to(target)
    assert not verify(link, len(GOOD), digest)
    (tmp_path / "b.mp4").mkdir()
    assert not verify(tmp_path / "b.mp4", None, None)
    os.mkfifo(tmp_path / "c.mp4")
    assert not verify(tmp_path / "c.mp4", None, None)  # and does not block on a FIFO
