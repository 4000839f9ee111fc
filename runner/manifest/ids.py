"""Item ids and batch names: names that become file and directory names.

A safe name is 1-100 of ``A-Za-z0-9._-``, starting with a letter or digit: no separator, no
leading dot. An item without an ``id`` gets one from its image's file name (``derive_id``),
made unique (``unique_id``) regardless of letter case, since output files on macOS and Windows
compare that way too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import PurePath, PurePosixPath
from urllib.parse import urlsplit

from yaml.nodes import Node

from runner.diagnostics import Place
from runner.manifest.imagesource import URL_SCHEME
from runner.manifest.yamlnodes import Reader, quote

#: Ids and batch names become file and directory names: no separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_NAME = 100


def safe_name(reader: Reader, node: Node, context: Place) -> str | None:
    """A string usable as a file name (an id or batch name), or None after reporting."""
    name = reader.string(node, context)
    if name is None:
        return None
    if SAFE_NAME.fullmatch(name):
        return name
    reader.error(
        node,
        context,
        f"{quote(name)} is not safe as a file name: use 1-{MAX_NAME} letters, digits, '.', '_'"
        " or '-', starting with a letter or digit",
    )
    return None


def slugify(text: str) -> str:
    """``text`` made into a safe name (ASCII, runs of other characters as '-'), or ""."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).lstrip("._-")[:MAX_NAME].rstrip("-")
    return slug if SAFE_NAME.fullmatch(slug) else ""


def derive_id(image: str, index: int) -> str:
    """An id from the image's file name stem, or ``item-<n>`` (1-based) if none is usable."""
    stem = (
        PurePosixPath(urlsplit(image).path).stem
        if URL_SCHEME.match(image)
        else PurePath(image).stem
    )
    return slugify(stem) or f"item-{index + 1}"


def unique_id(base: str, index: int, taken: Mapping[str, object]) -> str:
    """``base``, or ``base-<position>`` (then ``-2``, ``-3``...) if it is already taken
    (``taken`` holds names casefolded)."""
    candidate, extra = base, 1
    while candidate.casefold() in taken:
        suffix = f"-{index + 1}" + (f"-{extra}" if extra > 1 else "")
        candidate, extra = base[: MAX_NAME - len(suffix)] + suffix, extra + 1
    return candidate
