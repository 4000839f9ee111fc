"""API keys as they may be named: a short fingerprint, never the key.

A batch may run on several keys (several accounts); the ledger records which key created each
prediction, so that it is polled, cancelled and reconciled with that key. What it records is
``fingerprint(key)``: eight hex digits of the key's SHA-256, enough to tell a user's few keys
apart and nothing to call the API with. The simulator names its accounts the same way.
"""

from __future__ import annotations

import hashlib

#: Hex digits of the SHA-256 a fingerprint keeps.
FINGERPRINT_DIGITS = 8


def fingerprint(key: str) -> str:
    """The name ``key`` may be shown and stored under (``"k-"`` and eight hex digits)."""
    return "k-" + hashlib.sha256(key.encode()).hexdigest()[:FINGERPRINT_DIGITS]
