"""An item's image as the manifest names it: an http(s) URL, or a local file to hash.

A value that starts with a URL scheme must be an http(s) URL with a host. Anything else is a
path relative to the manifest's directory, which must be a non-empty regular file; it is hashed
(sha256) so that the item's key follows the image's content, not its name. A catalog names
a few files from many items: each is resolved, looked at and hashed once per reading
(``ImageFiles``), and its problems reported at every item that names it. Only the file name
suffix is looked at here: ``runner.checks.images`` checks the content, in the preflight.
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from yaml.nodes import Node

from runner.config import open_regular_file
from runner.diagnostics import Code, Severity
from runner.manifest.yamlnodes import Reader, Scope, quote

#: Image formats the API documents (JPEG, PNG, WebP, GIF); other suffixes get a warning
#: (``Code.SUFFIX_GUESS``), which the preflight drops once it has read the content.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
SUFFIX_WARNING = "the API takes JPEG, PNG, WebP or GIF images"
#: An image that starts like ``scheme:`` is a URL; anything else is a local path.
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")


def read_image(
    reader: Reader, node: Node | None, scope: Scope, image: str, base_dir: Path
) -> tuple[Path | None, str | None, str | None]:
    """(local path, URL, sha256) of an image; local files are checked and hashed."""
    if not image or node is None:
        return None, None, None
    scheme = URL_SCHEME.match(image)
    if scheme:
        parts = urlsplit(image)
        if parts.scheme.lower() not in ("http", "https"):
            reader.error(
                node,
                scope.at("image"),
                f"unsupported URL scheme {quote(parts.scheme)}: use an http(s) URL,"
                " or write a local path starting with ./",
            )
        elif not parts.hostname:
            reader.error(node, scope.at("image"), f"the URL {quote(image)} has no host")
        return None, image, None
    files = reader.memo.get(_MEMO)
    if not isinstance(files, ImageFiles):
        files = reader.memo[_MEMO] = ImageFiles()
    found = files.look(image, base_dir)
    for severity, message, code in found.problems:
        context = scope.at("image")
        if severity is Severity.ERROR:
            reader.error(node, context, message, code=code)
        else:
            reader.warn(node, context, message, code=code)
    return found.path, None, found.sha256


_MEMO = "image files"

#: A problem of an image file, reported at every item that names it: severity, message, code.
Problem = tuple[Severity, str, Code | None]


@dataclass(frozen=True)
class Found:
    """What reading a local image gave: its resolved path (None if it cannot be resolved), its
    sha256 (None if it cannot be read) and the problems to report at every item naming it."""

    path: Path | None
    sha256: str | None
    problems: tuple[Problem, ...] = ()


class ImageFiles:
    """The local images of one reading, each resolved, looked at and hashed once.

    A catalog names a few images from many items: each distinct value is resolved and stat'ed
    once (``resolves`` counts it), and each distinct file (device, inode, size and modification
    time) is hashed once (``hashes`` counts it), however many items and spellings name it.
    """

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, Path], Found] = {}
        self._digests: dict[tuple[int, int, int, int], str] = {}  # file → sha256
        self.resolves = 0
        self.hashes = 0

    def look(self, image: str, base_dir: Path) -> Found:
        """The outcome of the local image ``image`` (relative to ``base_dir``)."""
        found = self._by_value.get((image, base_dir))
        if found is None:
            found = self._by_value[(image, base_dir)] = self._read(image, base_dir)
        return found

    def _read(self, image: str, base_dir: Path) -> Found:
        self.resolves += 1
        try:
            path = (base_dir / image).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            return Found(None, None, (_error(f"cannot resolve the path {quote(image)}: {exc}"),))
        try:
            info = path.stat()
        except FileNotFoundError:
            return _failed(path, f"image file {quote(image)} not found (looked for {path})")
        except OSError as exc:
            return _failed(path, f"cannot read image file {quote(image)} ({path}): {exc.strerror}")
        if stat.S_ISDIR(info.st_mode):
            return _failed(path, f"{quote(image)} is a directory, not an image file ({path})")
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            what = "is empty" if stat.S_ISREG(info.st_mode) else "is not a regular file"
            return _failed(path, f"image file {quote(image)} {what} ({path})")
        warnings: tuple[Problem, ...] = ()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            message = f"{quote(image)}: {SUFFIX_WARNING}"
            warnings = ((Severity.WARNING, message, Code.SUFFIX_GUESS),)
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        digest = self._digests.get(identity)
        if digest is None:
            self.hashes += 1
            try:
                with open_regular_file(path) as handle:  # refuses a FIFO swapped in since the stat
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError as exc:
                why = f"cannot read image file {quote(image)} ({path}): {exc.strerror}"
                return Found(path, None, (*warnings, _error(why)))
            self._digests[identity] = digest
        return Found(path, digest, warnings)


def _error(message: str) -> Problem:
    return (Severity.ERROR, message, None)


def _failed(path: Path, message: str) -> Found:
    return Found(path, None, (_error(message),))
