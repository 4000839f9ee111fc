"""The cyclic garbage collector held off while a large input is read (``paused``).

Reading a 100,000-item manifest builds a few million small objects that all stay alive until
the items are made, and replaying a million-event ledger builds a few hundred thousand states
that all stay alive. The collector looks for cycles among every tracked object each time enough
new ones have piled up: while millions are alive and none is garbage, each of its full passes
walks them all for nothing (half the time of reading a 100,000-item manifest went to them).
Neither reading makes cycles, so nothing is lost by holding the collector off while it runs;
anything cyclic it did leave is found by the next collection after it. Reference counting,
which frees nearly everything, is not affected.

The pause is counted: nested or concurrent readings (worker threads) keep the collector off
until the last one ends, and it is switched back on only if it was on when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # readings under way
_was_enabled = False  # the collector's state when the first of them began


@contextmanager
def paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector for the ``with`` block (see the module)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
