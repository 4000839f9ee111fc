"""Fixtures shared by every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _scrub_eachlabs_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's real key or API base."""
    for name in list(os.environ):
        if name.startswith("EACHLABS_"):
            monkeypatch.delenv(name)
    yield
