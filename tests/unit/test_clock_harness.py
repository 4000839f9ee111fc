"""How tests keep time: pins the harness that tests/conftest.py and the looptime marker set up.

A test marked ``looptime`` runs its loop on a virtual clock that anyio reads and sleeps on
(pytest-asyncio in auto mode drives it); an unmarked one, such as every integration test
talking to the simulator over loopback, keeps the real clock. stamina's retries wait nothing
in any test but still make their real number of attempts.
"""

from __future__ import annotations

import time

import anyio
import pytest
import stamina


@pytest.mark.looptime
async def test_a_marked_test_sleeps_and_times_out_on_the_virtual_clock() -> None:
    real = time.monotonic()
    start = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - start == pytest.approx(3600)
    with pytest.raises(TimeoutError), anyio.fail_after(60):
        await anyio.Event().wait()
    assert anyio.current_time() - start == pytest.approx(3660)
    assert time.monotonic() - real < 1.0


async def test_an_unmarked_test_keeps_the_real_clock() -> None:
    """Integration tests are not marked: their loop reads the same clock as the server."""
    assert abs(anyio.current_time() - time.monotonic()) < 1.0
    real = time.monotonic()
    await anyio.sleep(0.02)
    assert time.monotonic() - real >= 0.015


def test_stamina_retries_wait_nothing_but_keep_their_attempts() -> None:
    assert stamina.is_testing()
    attempts = 0
    real = time.monotonic()
    with pytest.raises(OSError):
        for attempt in stamina.retry_context(on=OSError, attempts=4, wait_initial=30.0):
            with attempt:
                attempts += 1
                raise OSError("always")
    assert attempts == 4
    assert time.monotonic() - real < 1.0
