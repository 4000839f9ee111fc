"""Where an item's fields are written, kept small: ``Places``, the ``Item.places`` of a reading.

An item keeps the place of each of its fields so that every later check reports at the right
``file:line:col``, but a place is read only where a problem is reported. A dict of ``Place``
objects per item cost about a kilobyte, the largest part of a 100,000-item manifest's items;
``Places`` keeps an item's own places as numbers in one ``bytes`` (line and column, from 1),
their field names as a tuple shared by every item with the same fields, and the places every
item shares (the top-level ``model``, ``defaults``) in one mapping under them, and makes a
``Place`` only when one is asked for.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator, Mapping

from runner.diagnostics import Place

#: The name of the item's own place (its mapping, or its catalog row): a place with no field.
ITEM = "item"
_PAIR = struct.Struct("=II")  # line, column (from 1): a 256 MB file has fewer of either


class Places(Mapping[str, Place]):
    """Field name → where it is written (``Place`` with the file, line, column and field): an
    item's own fields in ``file``, then the ``shared`` places every item falls back on.

    The field of an own place is its name (``"prompt"``, ``"input.seed"``), but ``ITEM``'s
    is None, as ``Reader.place`` makes them.
    """

    __slots__ = ("_file", "_names", "_shared", "_spots")

    def __init__(
        self, shared: Mapping[str, Place], file: str, names: tuple[str, ...], spots: bytes
    ) -> None:
        self._shared = shared
        self._file = file
        self._names = names
        self._spots = spots  # _PAIR of each of ``names``, in their order

    def __getitem__(self, name: str) -> Place:
        try:
            index = self._names.index(name)
        except ValueError:
            return self._shared[name]
        line, column = _PAIR.unpack_from(self._spots, index * _PAIR.size)
        return _place(name, self._file, line, column)

    def __iter__(self) -> Iterator[str]:
        yield from self._names
        yield from (name for name in self._shared if name not in self._names)

    def __len__(self) -> int:
        return len(self._names) + sum(1 for name in self._shared if name not in self._names)

    def __repr__(self) -> str:
        return f"Places({dict(self)!r})"


class PlacesMaker:
    """Makes the ``Places`` of each item of one reading over the same ``shared`` places,
    each tuple of field names kept once however many items have it."""

    def __init__(self, shared: Mapping[str, Place]) -> None:
        self.shared = shared
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}

    def make(self, own: Mapping[str, tuple[str, int, int]]) -> Mapping[str, Place]:
        """The places of an item whose own fields are at ``own`` (name → file, line, column
        from 1): a ``Places`` when they are all in one file, as they are."""
        numbers: list[int] = []
        file = None
        for where, line, column in own.values():
            if file is None:
                file = where
            elif where != file:  # never made so: the places as Place objects
                made = {name: _place(name, *spot) for name, spot in own.items()}
                return {**self.shared, **made}
            numbers += (line, column)
        names = tuple(own)
        names = self._names.setdefault(names, names)
        spots = _pack(len(numbers)).pack(*numbers)
        return Places(self.shared, file or "", names, spots)


@functools.cache
def _pack(count: int) -> struct.Struct:
    """The packing of ``count`` numbers (line and column pairs) in a row."""
    return struct.Struct(f"={count}I")


def _place(name: str, file: str, line: int, column: int) -> Place:
    return Place(file, line, column, field=None if name == ITEM else name)
