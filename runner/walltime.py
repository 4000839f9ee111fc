"""How long a batch takes (pure): the plan's expected wall time and a run's ETA.

Two limits bound a batch's pace. The in-flight cap: ``concurrency`` predictions at once, each
taking about one run time, so the items go through in waves. The request window: every item
needs a few API requests (a create and at least one poll that sees it end; a local image's
presign), at most ``rate_limit`` per ``rate_window``. The wall time is the longer of the two.
The plan (``runner.checks.render``) asks before a run, with the configured expected run time;
the live view (``runner.display``) asks as the run goes, with the run times it has learned.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The fewest API requests an item to submit needs: its create, and one poll that sees it end.
REQUESTS_PER_ITEM = 2
#: The fewest a prediction already in flight needs: one poll that sees it end.
REQUESTS_PER_RESUMED = 1


def requests_needed(*, to_submit: int, in_flight: int = 0, uploads: int = 0) -> int:
    """The fewest API requests the rest of a batch needs: per item to submit its create and
    one poll, per prediction in flight one poll, per image to upload its presign (the upload
    itself goes to another host and does not count). A lower bound: a run polls more."""
    return REQUESTS_PER_ITEM * to_submit + REQUESTS_PER_RESUMED * in_flight + uploads


def wall_time(
    *,
    waiting: int,
    running: Sequence[float] = (),
    concurrency: int,
    runtime: float,
    requests: int = 0,
    rate_limit: int,
    rate_window: float,
) -> float:
    """Seconds until the last of ``waiting`` items not yet created and the predictions
    ``running`` now (each the seconds it still needs) have ended.

    The in-flight cap: ``concurrency`` slots, each free once its running prediction ends
    (remaining times clamped to 0..``runtime``); the waiting items fill the slots as they free
    up, ``runtime`` seconds each, so they go in waves (6 items, 10 at a time: one wave, not 0.6
    of one). The request window: at least ``requests`` requests at ``rate_limit`` per
    ``rate_window`` seconds. The result is the longer of the two.

    Raises ValueError for a concurrency, rate limit or window below 1 request or second.
    """
    if concurrency < 1 or rate_limit < 1 or rate_window <= 0:
        raise ValueError("concurrency and rate limit must be at least 1, the window positive")
    left = sorted(min(max(seconds, 0.0), runtime) for seconds in running)
    # When each slot takes its next item: free now, or when a running prediction ends. More
    # running than slots (resumed ones are counted whatever the cap): the last ``concurrency``
    # ends are when slots free up for new creates.
    free_at = sorted([0.0] * max(concurrency - len(left), 0) + left)[-concurrency:]
    ends = max(left, default=0.0)
    if waiting:
        waves, rest = divmod(waiting, concurrency)
        if waves:
            ends = max(ends, free_at[-1] + waves * runtime)
        if rest:
            ends = max(ends, free_at[rest - 1] + (waves + 1) * runtime)
    return max(ends, requests * rate_window / rate_limit)


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``13 h 20 min``, ``3 d 4 h``: rounded to what a reader of a
    plan or a progress line cares about (seconds only under ten minutes)."""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs and minutes < 10 else f"{minutes} min"
    if whole < 48 * 3600:
        hours, minutes = divmod(round(whole / 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(round(whole / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
