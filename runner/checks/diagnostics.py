"""What one pure check found: a severity and a message, placed later by the caller.

The checks of images, prompts and model inputs know nothing of manifests; the preflight puts
each finding at its item and field (``file:line:col: item 3 (id "deer"), field "prompt"``).
"""

from __future__ import annotations

from typing import NamedTuple

ERROR = "error"
WARNING = "warning"


class Finding(NamedTuple):
    severity: str  # ERROR or WARNING
    message: str


def error(message: str) -> Finding:
    return Finding(ERROR, message)


def warning(message: str) -> Finding:
    return Finding(WARNING, message)
