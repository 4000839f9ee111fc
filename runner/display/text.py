"""A snapshot of the run in words (pure): the pieces the live view and the heartbeat share.

``heartbeat_line(snapshot)`` is the whole line a run without a terminal logs every
``--heartbeat`` seconds::

    progress: 37/50 done, 2 failed; pending 6, uploading 0, submitted 1, running 4,
    downloading 0; in flight 5/10; requests 42/60 in 1 min; spent $15.91 + $2.15 reserved
    of $30.00; elapsed 12 min, ETA about 4 min
"""

from __future__ import annotations

from runner.cost import usd
from runner.display.progress import Snapshot, Stage
from runner.walltime import duration

#: The stages listed after "done, failed" (which lead the line).
BUSY_STAGES = (Stage.PENDING, Stage.UPLOADING, Stage.SUBMITTED, Stage.RUNNING, Stage.DOWNLOADING)


def done_text(snapshot: Snapshot) -> str:
    """``37/50 done, 2 failed``."""
    return f"{snapshot.done}/{snapshot.total} done, {snapshot.failed} failed"


def stages_text(snapshot: Snapshot, separator: str = ", ") -> str:
    """``pending 6, uploading 0, submitted 1, running 4, downloading 0``."""
    return separator.join(f"{stage.value} {snapshot.counts[stage]}" for stage in BUSY_STAGES)


def flight_text(snapshot: Snapshot) -> str:
    """``in flight 5/10``: predictions in flight against the cap."""
    return f"in flight {snapshot.in_flight}/{snapshot.concurrency}"


def window_text(snapshot: Snapshot) -> str:
    """``requests 42/60 in 1 min`` (and the 429s, if any)."""
    text = (
        f"requests {snapshot.window_used}/{snapshot.rate_limit} in {duration(snapshot.rate_window)}"
    )
    return f"{text} ({snapshot.refused} refused with 429)" if snapshot.refused else text


def spend_text(snapshot: Snapshot) -> str:
    """``spent $15.91 + $2.15 reserved of $30.00`` (``, no budget`` without --budget)."""
    text = f"spent {usd(snapshot.spent)}"
    if snapshot.reserved:
        text += f" + {usd(snapshot.reserved)} reserved"
    return text + (", no budget" if snapshot.budget is None else f" of {usd(snapshot.budget)}")


def time_text(snapshot: Snapshot) -> str:
    """``elapsed 12 min, ETA about 4 min`` (and a pause of every request, while it lasts)."""
    text = f"elapsed {duration(snapshot.elapsed)}, "
    text += "ETA none: nothing left" if snapshot.finished else f"ETA about {duration(snapshot.eta)}"
    if snapshot.paused_for > 0:
        why = f" ({snapshot.pause_why})" if snapshot.pause_why else ""
        text += f"; every request paused {duration(snapshot.paused_for)} more{why}"
    return text


def heartbeat_line(snapshot: Snapshot) -> str:
    """The line a run without a terminal logs every ``--heartbeat`` seconds."""
    return (
        f"progress: {done_text(snapshot)}; {stages_text(snapshot)}; {flight_text(snapshot)}; "
        f"{window_text(snapshot)}; {spend_text(snapshot)}; {time_text(snapshot)}"
    )
