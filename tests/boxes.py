"""ISO-BMFF (MP4) bytes built box by box, for tests of the MP4 check."""

from __future__ import annotations

import struct


def box(kind: bytes, *children: bytes, payload: bytes = b"") -> bytes:
    """One box: a 32-bit size, the four-letter type, then ``payload`` and ``children``."""
    body = payload + b"".join(children)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def large_box(kind: bytes, payload: bytes) -> bytes:
    """A box with the 64-bit size form (size field 1, the real size after the type)."""
    return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload


def hdlr(handler: bytes) -> bytes:
    """A handler box: version/flags, pre_defined, the handler type, reserved, an empty name."""
    return box(b"hdlr", payload=b"\0" * 4 + b"\0" * 4 + handler + b"\0" * 12 + b"\0")


def ftyp() -> bytes:
    return box(b"ftyp", payload=b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")


def track(handler: bytes = b"vide") -> bytes:
    return box(b"trak", box(b"tkhd", payload=b"\0" * 84), box(b"mdia", hdlr(handler)))


def mp4(*, handler: bytes = b"vide", media: bytes = b"\x00" * 64) -> bytes:
    """A minimal well-formed MP4: ftyp, mdat, then a moov with one track of ``handler``."""
    return ftyp() + box(b"mdat", payload=media) + box(b"moov", track(handler))
