"""Images the API takes, recognised by their content, not their name (pure).

The contract's generic limits: JPEG, PNG, WebP or GIF, at most 20 MB, 64-8192 px a side. The
format and the dimensions are read from the first bytes of the file (the PNG ``IHDR``, the GIF
screen descriptor, the WebP ``VP8``/``VP8L``/``VP8X`` header, the JPEG ``SOF`` segment), so a
check never decodes an image and works on the head of a URL as well as on a local file.
"""

from __future__ import annotations

import ipaddress
import socket
import string
from urllib.parse import urlsplit

from runner.diagnostics import Diagnostic, error, warning

#: The contract's bounds on each side, in pixels.
MIN_SIDE = 64
MAX_SIDE = 8192
#: Width:height ratios outside 2:5 .. 5:2 are far from any video frame: the model crops or
#: pads them, so the subject may be cut. A warning, not an error: the API accepts them.
MIN_ASPECT = 2 / 5
MAX_ASPECT = 5 / 2
#: Bytes read to tell the format and size. A JPEG whose metadata (EXIF, ICC) is longer than this
#: is read further when the whole file is at hand.
HEAD_BYTES = 64 * 1024

SUPPORTED = "PNG, JPEG, WebP or GIF"

#: Formats people send by mistake, by their first bytes: named in the message.
_OTHER_FORMATS: tuple[tuple[bytes, int, str], ...] = (
    (b"BM", 0, "a BMP image"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"%PDF", 0, "a PDF document"),
    (b"ftypheic", 4, "a HEIC image"),
    (b"ftypheix", 4, "a HEIC image"),
    (b"ftypmif1", 4, "a HEIF image"),
    (b"ftypavif", 4, "an AVIF image"),
    (b"ftyp", 4, "a video or other ISO media file"),
    (b"RIFF", 0, "a RIFF file that is not WebP"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
    (b"\x00\x00\x01\x00", 0, "an ICO icon"),
)
_PRINTABLE = frozenset(string.printable.encode())


def sniff_content_type(head: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, WebP or GIF from its first bytes; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def dimensions(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a supported image; None if they do not say.

    None means the head is too short (a long JPEG header) or the header is corrupt.
    """
    kind = sniff_content_type(head)
    if kind == "image/png":
        if head[12:16] != b"IHDR" or len(head) < 24:
            return None
        return _be(head[16:20]), _be(head[20:24])
    if kind == "image/gif":
        return (_le(head[6:8]), _le(head[8:10])) if len(head) >= 10 else None
    if kind == "image/webp":
        return _webp_size(head)
    if kind == "image/jpeg":
        return _jpeg_size(head)
    return None


def describe_other(head: bytes) -> str:
    """What a file that is not a supported image seems to be, for messages.

    It names a kind (a PDF document, text, an HTML page), never the content: the file may be
    a secret named as an image by mistake (or by someone hoping its first line gets printed).
    """
    if not head:
        return "it is empty"
    for magic, offset, name in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return f"it is {name}"
    text = head[:512].lstrip()
    lowered = text[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page"
    if lowered.startswith((b"<svg", b"<?xml")):
        return "it is SVG or other XML"
    sample = head[:256]
    if all(b in _PRINTABLE for b in sample) or _is_utf8_text(sample):
        return "it looks like text"
    return "it is binary data of a format this check does not know"


def check(head: bytes, size: int | None, *, max_bytes: int, complete: bool) -> list[Diagnostic]:
    """What is wrong with an image, from its first bytes and its size in bytes (None: unknown).

    ``complete`` says ``head`` is the whole file, so dimensions that cannot be read mean a
    corrupt header rather than a head cut short. Errors: not a supported format by content,
    larger than ``max_bytes``, a side outside 64-8192 px, unreadable dimensions of a complete
    file. Warnings: an aspect ratio outside 2:5-5:2, dimensions not in the head of a URL.
    """
    found: list[Diagnostic] = []
    if size is not None and size > max_bytes:
        found.append(error(f"is {_size(size)}; images may be at most {_size(max_bytes)}"))
    if sniff_content_type(head) is None:
        found.append(error(f"is not a {SUPPORTED} image by its content: {describe_other(head)}"))
        return found
    sides = dimensions(head)
    if sides is None:
        if complete:
            found.append(
                error("cannot read its width and height: the file is truncated or corrupt")
            )
        else:
            found.append(warning(f"its width and height are not in its first {len(head)} bytes"))
        return found
    width, height = sides
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        found.append(error(f"is {width}x{height} px; each side must be {MIN_SIDE}-{MAX_SIDE} px"))
    elif not MIN_ASPECT <= width / height <= MAX_ASPECT:
        found.append(
            warning(
                f"is {width}x{height} px, an aspect ratio of {_ratio(width, height)}, outside "
                "2:5-5:2: the model crops or pads it to a video frame"
            )
        )
    return found


# --- header parsing ----------------------------------------------------------------------


def _be(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        return _le(head[26:28]) & 0x3FFF, _le(head[28:30]) & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = _le(head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return _le(head[24:27]) + 1, _le(head[27:30]) + 1
    return None


#: Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field.
_JPEG_BARE = frozenset({0x01, *range(0xD0, 0xD9)})


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first start-of-frame; None if cut short or corrupt."""
    i = 2
    while i < len(head):
        if head[i] != 0xFF:
            return None
        while i < len(head) and head[i] == 0xFF:  # fill bytes
            i += 1
        if i >= len(head):
            return None
        marker = head[i]
        i += 1
        if marker in _JPEG_BARE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        if i + 2 > len(head):
            return None
        if marker in _JPEG_SOF:
            if i + 7 > len(head):
                return None
            return _be(head[i + 5 : i + 7]), _be(head[i + 3 : i + 5])
        i += _be(head[i : i + 2])
    return None


def _is_utf8_text(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 text (a character cut at the end of a head is allowed)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:
            return False
        text = data[: exc.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\n\r\t" for ch in text)


def _size(size: int) -> str:
    """``21 MB``, ``1.5 MB``, ``1.1 KB``: one decimal, none if it is 0."""
    value, unit = (size / 1_048_576, "MB") if size >= 1_048_576 else (size / 1024, "KB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _ratio(width: int, height: int) -> str:
    return f"{width / height:.2f}:1" if width >= height else f"1:{height / width:.2f}"


#: The networks the API's servers cannot reach an image on: RFC 1918 and RFC 4193 private
#: ranges (loopback, link-local and unspecified addresses are found by ``ipaddress`` itself).
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def private_host(host: str | None) -> str | None:
    """What ``host`` (a URL's host) is, if a remote service could not reach it: ``"a loopback
    address"``, or None if it may well be public. One rule for the runner's warning and the
    simulator's refusal.

    ``localhost`` and ``*.localhost``/``*.local`` names, and loopback, RFC 1918 / RFC 4193
    private, link-local and unspecified addresses, in any spelling a resolver takes
    (IPv4-mapped IPv6, ``127.1``, ``2130706433``, a zone such as ``%eth0``). No DNS lookup: any
    other name counts as public; so does an empty host (the fetch fails on its own).
    """
    if not host:
        return None
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith((".localhost", ".local")):
        return "a name of this machine or network"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        try:  # the forms inet_aton takes: 127.1, 0x7f000001, 2130706433
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if any(address in network for network in PRIVATE_NETWORKS):
        return "a private network address"
    return None


def unreachable_host(url: str) -> str | None:
    """Why a remote service could not fetch ``url`` (``"a loopback address (127.0.0.1)"``), or
    None if its host may well be public (``private_host``)."""
    host = urlsplit(url).hostname
    kind = private_host(host)
    return None if kind is None else f"{kind} ({host})"
