"""What a check found: one ``Diagnostic`` type for the manifest reader, the checks and the
preflight.

A diagnostic has a ``Severity``, a message and a ``Place``; one that a later step must
recognise also has a ``Code``, and the ``subject`` it is about (the model slug of an
``UNKNOWN_MODEL``). A place is kept as its parts (file, line, column, item, field) and rendered
only for people::

    m.yaml:5:13: item 3 (id "deer"), field "prompt"

Code sorts and filters diagnostics by those parts and codes, never by the rendered text: a file
name may hold ``:5:13`` and a message may start like another. The pure checks (images, prompts,
model inputs) know nothing of manifests and return diagnostics without a place; the preflight
puts each at its item and field (``Diagnostic.at``).

This module sits below both the manifest reader and the checks, so that both use it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace


class Severity(enum.StrEnum):
    """An error stops a run before it spends anything; a warning does not (unless --strict)."""

    ERROR = "error"
    WARNING = "warning"


class Code(enum.StrEnum):
    """The kinds of diagnostic a later step recognises; most diagnostics need none."""

    #: The manifest's guess at an image's type from its file name suffix; moot once the
    #: preflight has read the content.
    SUFFIX_GUESS = "suffix-guess"
    #: A model slug the runner's table does not know (the server decides); ``subject`` is the
    #: slug. Moot once the API has answered for it.
    UNKNOWN_MODEL = "unknown-model"


@dataclass(frozen=True)
class Place:
    """Where a diagnostic is: every part optional, rendered as people read it (``str``).

    ``file`` is the path as the user gave it; ``line`` and ``column`` count from 1 (None: the
    file as a whole); ``item`` is the item's index, from 0 (shown from 1, with its ``item_id``
    if it has one); ``field`` is named as the manifest writes it (``"prompt"``,
    ``"defaults.input.seed"``); ``document`` marks the manifest's top-level value itself.
    """

    file: str | None = None
    line: int | None = None
    column: int | None = None
    item: int | None = None
    item_id: str | None = None
    field: str | None = None
    document: bool = False

    def __str__(self) -> str:
        position = self.file or ""
        if self.line is not None:
            position += f":{self.line}:{self.column}"
        names = ["the manifest"] if self.document else []
        if self.item is not None:
            names.append(item_label(self.item, self.item_id))
        if self.field is not None:
            names.append(f"field {_quote(self.field)}")
        context = ", ".join(names)
        return f"{position}: {context}" if position and context else position or context

    def sort_key(self) -> tuple[str, int, int, int]:
        """File, line, column, item: a file's file-wide places first, items in their order."""
        item = -1 if self.item is None else self.item
        return (self.file or "", self.line or 0, self.column or 0, item)


#: The place of a diagnostic that has none yet (a pure check's), or none at all.
NOWHERE = Place()


@dataclass(frozen=True)
class Diagnostic:
    """One thing a check found: how bad it is, what it is, and where."""

    severity: Severity
    message: str
    place: Place = NOWHERE
    code: Code | None = None
    subject: str | None = None  # what ``code`` is about (a model slug); a schema check's input key

    @property
    def where(self) -> str:
        """The place as people read it; for display only (sort and filter on ``place``)."""
        return str(self.place)

    def at(self, place: Place) -> Diagnostic:
        """This diagnostic at ``place`` (a pure check's finding placed by the preflight)."""
        return replace(self, place=place)

    def __str__(self) -> str:
        where = self.where
        return f"{where}: {self.message}" if where else self.message


def error(
    message: str, place: Place = NOWHERE, *, code: Code | None = None, subject: str | None = None
) -> Diagnostic:
    return Diagnostic(Severity.ERROR, message, place, code, subject)


def warning(
    message: str, place: Place = NOWHERE, *, code: Code | None = None, subject: str | None = None
) -> Diagnostic:
    return Diagnostic(Severity.WARNING, message, place, code, subject)


def ordered(diagnostics: Iterable[Diagnostic], first: str | None = None) -> list[Diagnostic]:
    """``diagnostics`` without repeats, sorted by place: the file ``first`` (the manifest)
    before any other, then by file, line, column and item (``Place.sort_key``); diagnostics at
    the same place keep their order."""

    def key(diagnostic: Diagnostic) -> tuple[bool, tuple[str, int, int, int]]:
        place = diagnostic.place
        return (first is not None and place.file != first, place.sort_key())

    return sorted(dict.fromkeys(diagnostics), key=key)


def item_label(index: int, item_id: str | None = None) -> str:
    """How diagnostics name an item: ``item 3 (id "deer")``, counting from 1."""
    return f"item {index + 1}" + (f" (id {_quote(item_id)})" if item_id else "")


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def of_severity(diagnostics: Iterable[Diagnostic], severity: Severity) -> list[Diagnostic]:
    """The diagnostics of one severity, in their order."""
    return [d for d in diagnostics if d.severity is severity]
