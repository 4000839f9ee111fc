"""The contact sheet's pictures: a poster frame taken from each video (PyAV) and a small copy
of each local input image (Pillow), both JPEGs of at most ``MAX_SIDE`` pixels.

Each picture is named by the sha256 of what it shows (``<sha256>.jpg``): a video or image
already pictured is never decoded again, so a report of thousands of items decodes only what
is new, and two items with the same video share one poster. Nothing read can fail the report:
a video or image that cannot be decoded gives no picture and the reason (the card says "no
preview"). PyAV and Pillow are imported only here, when a report is made, so the command line
starts without them. Blocking and CPU-bound: call these in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Collection
from pathlib import Path
from typing import Any

from runner.config import open_regular_file, read_regular_file
from runner.store.disk import write_if_changed

#: The longer side of a poster or an input picture, pixels: sharp on a card 320 px wide on a
#: high-density screen, about 20-40 KB as a JPEG.
MAX_SIDE = 480
JPEG_QUALITY = 82
#: The largest input image read for its picture. The checks refuse images over 20 MB by
#: default (``--max-image-mb``); this leaves room for a raised limit.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
#: The most pixels an input image may have for its picture (the checks refuse sides over
#: 8192 px); Pillow itself refuses twice its own limit as a decompression bomb.
MAX_IMAGE_PIXELS = 8192 * 8192

_PICTURE = re.compile(r"[0-9a-f]{64}\.jpg")


class NoPicture(Exception):
    """The video or image could not be made into a picture; the message says why."""


def picture_name(sha256: str | None) -> str | None:
    """The file name of the picture of content with this sha256, or None if it is not a
    sha256 (a value from the ledger or the snapshot is never trusted as a path)."""
    name = f"{sha256}.jpg"
    return name if sha256 and _PICTURE.fullmatch(name) else None


def picture_path(folder: Path, name: str) -> Path:
    """``folder/name`` for a picture name, never anywhere else; ValueError for any other name
    (the guard of ``runner.store.videos.video_path``)."""
    if not _PICTURE.fullmatch(name):
        raise ValueError(f"not a picture name: {name!r}")
    return folder / name


def regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link): a video on disk, a picture made."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def make_poster(video: Path, dest: Path) -> None:
    """Write the first frame of the MP4 at ``video`` to ``dest`` as a JPEG. Raises NoPicture
    saying why not (not a regular file, not a video PyAV can decode) and StorageError if
    ``dest`` cannot be written."""
    import av

    try:
        with open_regular_file(video) as handle, av.open(handle, mode="r") as container:
            if not container.streams.video:
                raise NoPicture("the file has no video track")
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise NoPicture("the video has no frame")
            picture = frame.to_image()  # type: ignore[no-untyped-call]
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError) as exc:
        raise NoPicture(f"cannot decode the video: {_reason(exc)}") from None
    write_if_changed(dest, _jpeg(picture))


def make_thumbnail(image: Path, sha256: str | None, dest: Path) -> None:
    """Write a small JPEG copy of the image file at ``image`` to ``dest``. With ``sha256``,
    only if the file still holds those bytes (the image the item was rendered from). Raises
    NoPicture saying why not, StorageError if ``dest`` cannot be written."""
    from PIL import Image

    try:
        data = read_regular_file(image, MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise NoPicture(f"cannot read the image: {_reason(exc)}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise NoPicture(f"the image is larger than {MAX_IMAGE_BYTES // 2**20} MB")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise NoPicture("the image file has changed since the batch was run")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise NoPicture(f"the image is {opened.width}x{opened.height} pixels")
            opened.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEGs decode at a reduced size
            picture = opened.convert("RGB")
    except (Image.DecompressionBombError, OSError, ValueError, EOFError) as exc:
        raise NoPicture(f"cannot decode the image: {_reason(exc)}") from None
    write_if_changed(dest, _jpeg(picture))


def prune(folder: Path, keep: Collection[str]) -> None:
    """Remove the pictures in ``folder`` that no card shows any more (an item edited or gone);
    anything not named like a picture is left alone. Errors are ignored: a stale picture
    costs only space."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if _PICTURE.fullmatch(entry.name) and entry.name not in keep:
            try:
                os.unlink(entry.path)  # a link is removed, never its target
            except OSError:
                continue


def _jpeg(picture: Any) -> bytes:
    """``picture`` (a PIL image) fitted within MAX_SIDE, as JPEG bytes."""
    from PIL import Image

    rgb = picture.convert("RGB")
    rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]
