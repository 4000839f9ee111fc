"""Whether a file is an MP4 video: a small ISO-BMFF box walker (pure).

An MP4 here: top-level boxes well formed and inside the file, the first an ``ftyp``, and a
``moov`` holding at least one ``trak`` whose ``mdia/hdlr`` handler type is ``vide``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: More top-level boxes than this is not a video of ours (a fragmented MP4 of a few seconds
#: has a few hundred), and would only make the walk slow.
MAX_BOXES = 100_000

Reader = Callable[[int, int], bytes]
"""``read(offset, size)``: up to ``size`` bytes of the file from ``offset``."""


@dataclass(frozen=True)
class Box:
    """One box: its four-letter type, where its payload starts and where it ends."""

    kind: bytes
    start: int
    payload: int
    end: int


class _Malformed(Exception):
    pass


def boxes(read: Reader, start: int, end: int) -> Iterator[Box]:
    """The boxes laid end to end in ``[start, end)``; _Malformed at the first that is not
    well formed (a header cut short, a size that is impossible or runs past ``end``, a type
    that is not four printable characters)."""
    offset = start
    count = 0
    while offset < end:
        count += 1
        if count > MAX_BOXES:
            raise _Malformed(f"more than {MAX_BOXES} boxes")
        header = read(offset, 8) if offset + 8 <= end else b""
        if len(header) < 8:
            raise _Malformed(f"the box header at byte {offset} is cut short")
        size, kind = struct.unpack(">I4s", header)
        if not all(0x20 <= byte <= 0x7E for byte in kind):
            raise _Malformed(f"the box at byte {offset} has no type ({kind!r})")
        head = 8
        if size == 1:  # a 64-bit size follows the type
            large = read(offset + 8, 8) if offset + 16 <= end else b""
            if len(large) < 8:
                raise _Malformed(f"the {_name(kind)} box at byte {offset} is cut short")
            (size,) = struct.unpack(">Q", large)
            head = 16
        elif size == 0:  # the box runs to the end
            size = end - offset
        if size < head:
            raise _Malformed(f"the {_name(kind)} box at byte {offset} has the size {size}")
        if offset + size > end:
            raise _Malformed(
                f"the {_name(kind)} box at byte {offset} runs past the end "
                f"({offset + size} > {end} bytes)"
            )
        yield Box(kind, offset, offset + head, offset + size)
        offset += size


def _name(kind: bytes) -> str:
    return kind.decode("latin-1")


def _children(read: Reader, parent: Box, kind: bytes) -> Iterator[Box]:
    return (box for box in boxes(read, parent.payload, parent.end) if box.kind == kind)


def mp4_problem(read: Reader, size: int) -> str | None:
    """Why a file of ``size`` bytes is not an MP4 video; None when it is one.

    An MP4 here: top-level boxes well formed and inside the file, the first an ``ftyp``, and a
    ``moov`` holding at least one ``trak`` whose ``mdia/hdlr`` handler type is ``vide``.
    """
    try:
        top = boxes(read, 0, size)
        first = next(top, None)
        if first is None or first.kind != b"ftyp":
            return "it does not start with an ftyp box"
        moovs = [box for box in top if box.kind == b"moov"]
        if not moovs:
            return "it has no moov box"
        for moov in moovs:
            for trak in _children(read, moov, b"trak"):
                for mdia in _children(read, trak, b"mdia"):
                    for hdlr in _children(read, mdia, b"hdlr"):
                        # FullBox: version and flags (4), pre_defined (4), handler_type (4)
                        if hdlr.end >= hdlr.payload + 12 and read(hdlr.payload + 8, 4) == b"vide":
                            return None
    except _Malformed as exc:
        return str(exc)
    return "it has no video track"


def mp4_bytes_problem(data: bytes) -> str | None:
    """``mp4_problem`` of bytes in memory."""
    return mp4_problem(lambda offset, size: data[offset : offset + size], len(data))
