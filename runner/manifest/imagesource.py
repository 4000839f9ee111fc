"""An item's image as the manifest names it: an http(s) URL, or a local file to hash.

A value that starts with a URL scheme must be an http(s) URL with a host. Anything else is a
path relative to the manifest's directory, which must be a non-empty regular file; it is hashed
(sha256) so that the item's key follows the image's content, not its name. Only the file name
suffix is looked at here: ``runner.checks.images`` checks the content, in the preflight.
"""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

from yaml.nodes import Node

from runner.config import open_regular_file
from runner.diagnostics import Code, Place
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
    context = scope.at("image")
    scheme = URL_SCHEME.match(image)
    if scheme:
        parts = urlsplit(image)
        if parts.scheme.lower() not in ("http", "https"):
            reader.error(
                node,
                context,
                f"unsupported URL scheme {quote(parts.scheme)}: use an http(s) URL,"
                " or write a local path starting with ./",
            )
        elif not parts.hostname:
            reader.error(node, context, f"the URL {quote(image)} has no host")
        return None, image, None
    try:
        path = (base_dir / image).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        reader.error(node, context, f"cannot resolve the path {quote(image)}: {exc}")
        return None, None, None
    return path, None, _hash_image(reader, node, context, image, path)


def _hash_image(reader: Reader, node: Node, context: Place, image: str, path: Path) -> str | None:
    """The sha256 of a local image file; None after reporting why it cannot be read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        reader.error(node, context, f"image file {quote(image)} not found (looked for {path})")
        return None
    except OSError as exc:
        reader.error(
            node, context, f"cannot read image file {quote(image)} ({path}): {exc.strerror}"
        )
        return None
    if stat.S_ISDIR(info.st_mode):
        reader.error(node, context, f"{quote(image)} is a directory, not an image file ({path})")
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        what = "is empty" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        reader.error(node, context, f"image file {quote(image)} {what} ({path})")
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        reader.warn(node, context, f"{quote(image)}: {SUFFIX_WARNING}", code=Code.SUFFIX_GUESS)
    try:
        with open_regular_file(path) as handle:  # refuses a FIFO swapped in since the stat
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        reader.error(
            node, context, f"cannot read image file {quote(image)} ({path}): {exc.strerror}"
        )
        return None
