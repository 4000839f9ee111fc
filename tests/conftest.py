"""Fixtures and hooks shared by every test.

Time in tests: retries (stamina) keep their number of attempts but never wait for real, in
every test. Pure-async logic (the request window, the burst stage) runs on looptime's virtual
clock where a test module is marked ``pytest.mark.looptime``; the integration tests are not
marked, since they talk to a real server over real loopback sockets on the real clock.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import stamina

#: No retry in the code under test makes this many attempts; as a cap it changes none of them.
_ATTEMPTS_CAP = 1000


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark the main thread as having no current event loop before any test runs.

    looptime's plugin asks the policy for the current loop before every test, synchronous ones
    included. Until something has set one, Python's policy answers by making a new loop that
    nobody closes: an unclosed-socket ResourceWarning, an error under ``filterwarnings``. With
    the loop explicitly unset the policy raises instead, which looptime expects ("not ours").
    pytest-asyncio and ``asyncio.run`` make and set their own loops and are not affected.
    """
    asyncio.set_event_loop(None)


@pytest.fixture(autouse=True, scope="session")
def _no_retry_waits() -> Iterator[None]:
    """stamina's testing mode for the whole session: no back-off waits, attempts unchanged.

    ``cap=True`` caps each retry's own ``attempts`` at ``_ATTEMPTS_CAP`` instead of replacing
    it, so a download still makes DOWNLOAD_ATTEMPTS attempts (tests count them); only the
    jittered waits between them vanish. Restored when the session ends.
    """
    with stamina.set_testing(True, attempts=_ATTEMPTS_CAP, cap=True):
        yield


@pytest.fixture(autouse=True)
def _scrub_eachlabs_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's real key or API base."""
    for name in list(os.environ):
        if name.startswith("EACHLABS_"):
            monkeypatch.delenv(name)
    yield
