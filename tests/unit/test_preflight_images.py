"""Image checks by content: format and dimensions from the first bytes, size, sides, aspect."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from runner.checks.images import (
    HEAD_BYTES,
    check,
    describe_other,
    dimensions,
    sniff_content_type,
    unreachable_host,
)
from runner.diagnostics import Severity, warning

MB = 1024 * 1024
LIMIT = 20 * MB


def encode(size: tuple[int, int], fmt: str, mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (10, 120, 200) if mode == "RGB" else (10, 120, 200, 128)).save(
        out, fmt, **options
    )
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """Just the signature and IHDR of a PNG: enough for the checks, tiny at any size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def jpeg_with_metadata(size: tuple[int, int], app_bytes: int) -> bytes:
    """A JPEG with APP segments of ``app_bytes`` in all before its frame header."""
    data = encode(size, "JPEG")
    segments = b""
    while app_bytes > 0:
        chunk = min(app_bytes, 65000)
        segments += b"\xff\xe2" + struct.pack(">H", chunk + 2) + b"\0" * chunk
        app_bytes -= chunk
    return data[:2] + segments + data[2:]


@pytest.mark.parametrize(
    ("data", "content_type", "sides"),
    [
        (encode((96, 64), "PNG"), "image/png", (96, 64)),
        (encode((640, 480), "JPEG"), "image/jpeg", (640, 480)),
        (encode((300, 200), "JPEG", progressive=True), "image/jpeg", (300, 200)),
        (encode((120, 90), "GIF"), "image/gif", (120, 90)),
        (encode((200, 100), "WEBP"), "image/webp", (200, 100)),  # VP8 (lossy)
        (encode((201, 99), "WEBP", lossless=True), "image/webp", (201, 99)),  # VP8L
        (encode((150, 70), "WEBP", mode="RGBA"), "image/webp", (150, 70)),  # VP8X + alpha
        (jpeg_with_metadata((80, 80), 30_000), "image/jpeg", (80, 80)),
    ],
)
def test_format_and_dimensions_come_from_the_content(
    data: bytes, content_type: str, sides: tuple[int, int]
) -> None:
    assert sniff_content_type(data[:16]) == content_type
    assert dimensions(data[:HEAD_BYTES]) == sides
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == sides  # the header parser agrees with Pillow


def test_a_jpeg_whose_metadata_outgrows_the_head_needs_the_whole_file() -> None:
    data = jpeg_with_metadata((80, 80), 150_000)
    assert dimensions(data[:HEAD_BYTES]) is None
    assert dimensions(data) == (80, 80)
    (finding,) = check(data[:HEAD_BYTES], None, max_bytes=LIMIT, complete=False)
    assert finding == warning("its width and height are not in its first 65536 bytes")
    assert check(data, len(data), max_bytes=LIMIT, complete=True) == []


@pytest.mark.parametrize(
    ("data", "size", "expected"),
    [
        (encode((96, 96), "PNG"), None, []),
        (png_header(64, 64), 10, []),
        (png_header(8192, 8192), 10, []),
        (png_header(32, 48), 10, [(Severity.ERROR, "is 32x48 px; each side must be 64-8192 px")]),
        (
            png_header(9000, 9000),
            10,
            [(Severity.ERROR, "is 9000x9000 px; each side must be 64-8192 px")],
        ),
        (png_header(100, 63), 10, [(Severity.ERROR, "is 100x63 px; each side must be 64-8192 px")]),
        (
            png_header(1000, 200),
            10,
            [
                (
                    Severity.WARNING,
                    "is 1000x200 px, an aspect ratio of 5.00:1, outside 2:5-5:2: the model "
                    "crops or pads it to a video frame",
                )
            ],
        ),
        (png_header(200, 500), 10, []),  # exactly 2:5
        (
            png_header(199, 500),
            10,
            [(Severity.WARNING, "is 199x500 px, an aspect ratio of 1:2.51")],
        ),
        (
            png_header(96, 96),
            21 * MB,
            [(Severity.ERROR, "is 21 MB; images may be at most 20 MB")],
        ),
        (png_header(96, 96), LIMIT, []),
        (
            b"hello, this is not an image\n",
            28,
            [
                (
                    Severity.ERROR,
                    "is not a PNG, JPEG, WebP or GIF image by its content: it looks like text",
                )
            ],
        ),
        (
            b"BM6\x00\x00\x00",
            6,
            [
                (
                    Severity.ERROR,
                    "is not a PNG, JPEG, WebP or GIF image by its content: it is a BMP image",
                )
            ],
        ),
        (
            b"<!DOCTYPE html><html><body>Not found</body></html>",
            50,
            [
                (
                    Severity.ERROR,
                    "is not a PNG, JPEG, WebP or GIF image by its content: it is an HTML page",
                )
            ],
        ),
        (
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0",
            18,
            [
                (
                    Severity.ERROR,
                    "cannot read its width and height: the file is truncated or corrupt",
                )
            ],
        ),
    ],
)
def test_check_from_a_table(
    data: bytes, size: int | None, expected: list[tuple[Severity, str]]
) -> None:
    found = check(data, size, max_bytes=LIMIT, complete=True)
    assert len(found) == len(expected), found
    for finding, (severity, start) in zip(found, expected, strict=True):
        assert finding.severity == severity
        assert finding.message.startswith(start), finding.message


def test_the_size_limit_is_configurable() -> None:
    (finding,) = check(png_header(96, 96), 3 * MB, max_bytes=2 * MB, complete=True)
    assert finding.message == "is 3 MB; images may be at most 2 MB"


@pytest.mark.parametrize(
    ("head", "description"),
    [
        (b"", "it is empty"),
        (b"%PDF-1.7", "it is a PDF document"),
        (b"\0\0\0\x18ftypheic", "it is a HEIC image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "it is SVG or other XML"),
        (
            b"\x00\x01\x02\x03\xfe\xff\x10\x11\x12",
            "it is binary data of a format this check does not know",
        ),
        ("caf\u00e9 menu\n".encode(), "it looks like text"),
    ],
)
def test_what_a_file_that_is_not_an_image_seems_to_be(head: bytes, description: str) -> None:
    assert describe_other(head) == description


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8750/storage/a.png", "a loopback address (127.0.0.1)"),
        ("http://[::1]/a.png", "a loopback address (::1)"),
        ("http://localhost/a.png", "a name of this machine or network (localhost)"),
        ("http://nas.local/a.png", "a name of this machine or network (nas.local)"),
        ("https://10.0.0.7/a.png", "a private network address (10.0.0.7)"),
        ("https://192.168.1.20/a.png", "a private network address (192.168.1.20)"),
        ("https://[fd12::1]/a.png", "a private network address (fd12::1)"),
        ("http://169.254.169.254/latest", "a link-local address (169.254.169.254)"),
        ("http://0.0.0.0/a.png", "an unspecified address (0.0.0.0)"),
        ("http://127.1/a.png", "a loopback address (127.1)"),  # as resolvers read it
        ("http://[::ffff:10.0.0.1]/a.png", "a private network address (::ffff:10.0.0.1)"),
        ("https://100.64.0.1/a.png", None),  # carrier-grade NAT: not a private range
        ("https://cdn.example.org/a.png", None),
        ("https://93.184.215.14/a.png", None),
    ],
)
def test_image_urls_the_service_cannot_reach_are_named(url: str, reason: str | None) -> None:
    assert unreachable_host(url) == reason
