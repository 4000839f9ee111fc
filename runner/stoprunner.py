"""Taking an output directory's lock away from the runner that holds it: for ``cancel``, which
writes the ledger and so must hold the lock, and may be told to stop a runner first.

The runner is asked to stop as a person would ask it: SIGTERM, which it treats as Ctrl-C (it
stops submitting, records every create already on the wire, writes its summary and lets go).
Only a process on this host, that has the lock file open right now, and that is not this very
process is signalled: a pid read from a file is never trusted alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import anyio

from runner.config import STOP_WAIT
from runner.errors import LockedError
from runner.store.outdir import LOCK_NAME, LockOwner, holds_open, output_lock, read_lock

#: How often the lock is tried while the runner stops.
STOP_POLL = 0.1


async def take_lock(
    stack: contextlib.ExitStack, directory: Path, command: str, *, stop: bool
) -> LockOwner | None:
    """Take ``directory``'s lock into ``stack`` for ``command`` (keeping the lock file's resume
    command). If a runner holds it: LockedError naming it, or with ``stop`` send it SIGTERM and
    wait up to ``STOP_WAIT`` for the lock; returns the runner stopped (None: none was).

    Raises LockedError when the holder is not stopped (not asked, on another host, unknown,
    not ours to signal) or does not let go in time: nothing was sent to the API then.
    """
    try:
        stack.enter_context(output_lock(directory, command=command, keep_resume=True))
        return None
    except LockedError:
        pass
    owner = (await anyio.to_thread.run_sync(read_lock, directory)).owner
    who = _who(owner)
    if not stop:
        raise LockedError(
            f"a runner is working in {directory}{who}; wait for it to end, or stop it with "
            "--stop-runner: nothing was cancelled"
        )
    _signal(owner, directory)
    assert owner is not None
    deadline = anyio.current_time() + STOP_WAIT
    while True:
        await anyio.sleep(STOP_POLL)
        try:
            stack.enter_context(output_lock(directory, command=command, keep_resume=True))
            return owner
        except LockedError:
            if anyio.current_time() >= deadline:
                raise LockedError(
                    f"the runner{who} was sent SIGTERM but still holds {directory} after "
                    f"{STOP_WAIT:g} s: nothing was cancelled"
                ) from None


def _who(owner: LockOwner | None) -> str:
    if owner is None:
        return ""
    return f" (pid {owner.pid} on {owner.host}, since {owner.started})"


def _signal(owner: LockOwner | None, directory: Path) -> None:
    """Send SIGTERM to the holder ``owner`` names, after checking it is the holder and ours to
    stop; LockedError saying why not otherwise."""
    if owner is None:
        raise LockedError(
            f"a runner holds {directory} but its lock file does not say which: stop it "
            "yourself, then cancel again; nothing was cancelled"
        )
    if owner.host != socket.gethostname():
        raise LockedError(
            f"the runner working in {directory}{_who(owner)} runs on another host; stop it "
            "there, then cancel again: nothing was cancelled"
        )
    if owner.pid == os.getpid():
        raise LockedError(f"this process itself holds {directory}: nothing was cancelled")
    if holds_open(owner.pid, directory / LOCK_NAME) is False:
        raise LockedError(
            f"pid {owner.pid} named by {directory / LOCK_NAME} does not hold it any more, and "
            "the holder is unknown: stop it yourself, then cancel again; nothing was cancelled"
        )
    try:
        os.kill(owner.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended meanwhile: the lock is free, or about to be
    except PermissionError:
        raise LockedError(
            f"not allowed to stop pid {owner.pid} working in {directory}: stop it yourself, "
            "then cancel again; nothing was cancelled"
        ) from None
