"""``i2v-runner status DIR [--json]``: its parser, and the batch's state told on one screen
(or as one JSON object) from the output directory alone (``runner.status``)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio

from runner.errors import RunnerError
from runner.jobs import JobState
from runner.report import EXIT_CONFIG, EXIT_OK
from runner.store.ledger import seconds_since

if TYPE_CHECKING:
    from runner.status import BatchStatus

#: Item ids shown on one line of the screen before "and N more" (``--json`` lists them all).
MAX_IDS_SHOWN = 10

#: What each state means on the screen, in the order an item passes them.
_MEANINGS = (
    (JobState.PENDING, "not submitted yet"),
    (JobState.SUBMITTING, "ambiguous: a create was sent, its answer not recorded"),
    (JobState.SUBMITTED, "running on the server"),
    (JobState.SUCCEEDED, "succeeded, the video not downloaded yet"),
    (JobState.DOWNLOADED, "done: the video is on disk"),
    (JobState.FAILED, "failed"),
)


def add_status_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``status`` subcommand."""
    status = sub.add_parser(
        "status",
        allow_abbrev=False,
        help="show a batch's state from its output directory (no manifest, no API request)",
        description="Show what the output directory DIR says of its batch: items by state, "
        "spend, failures with their reasons, ambiguous creates, whether a runner holds the "
        "directory now and how long ago it last recorded anything, and the command to resume "
        "or retry. Reads the ledger, the lock file and summary.json only: no manifest, no "
        "API request, nothing written, safe while a run is going. Exit 0, or 2 if DIR is "
        "not an output directory or its ledger cannot be read.",
    )
    status.add_argument("directory", type=Path, metavar="DIR", help="the batch's output directory")
    status.add_argument(
        "--json", action="store_true", help="print one JSON object (keys: see the README)"
    )


async def status_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the status of ``args.directory``; the exit code (2: it cannot be read)."""
    from runner.status import as_json, read_status  # loaded when the command runs

    try:
        status = await anyio.to_thread.run_sync(read_status, args.directory)
    except RunnerError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_CONFIG
    now = datetime.now(UTC)
    if args.json:
        print(json.dumps(as_json(status, now), indent=2), file=out)
    else:
        print(render(status, now), file=out)
    return EXIT_OK


def render(status: BatchStatus, now: datetime) -> str:
    """The status on one screen."""
    where = f"batch {status.batch} in {status.directory}" if status.batch else str(status.directory)
    if not status.ran:
        return "\n".join([f"{where}: nothing has run here yet", *_lock_lines(status, now)])
    counts = status.counts
    lines = [
        f"{where}: {counts['total']} items: {counts['done']} done, {counts['failed']} failed, "
        f"{counts['running']} running, {counts['pending']} pending; spent ${status.spent:.2f}",
    ]
    lines += [f"  {s.value:<11} {status.count(s):>5}   {meaning}" for s, meaning in _MEANINGS]
    lines += _lock_lines(status, now)
    ago = seconds_since(status.last_event, now)
    if ago is not None:
        lines.append(f"last ledger event: {duration(ago)} ago ({status.last_event})")
    if status.failures:
        lines.append("failed:")
    for group in status.failures:
        code = f"[{group.error_code}] " if group.error_code else ""
        then = " (the next run takes them up again)" if group.resumed else ""
        lines.append(f"  {len(group.items)} × {code}{group.error}{then}: {_ids(group.items)}")
    if status.ambiguous:
        wait = " (the runner may still be awaiting the answer)" if status.lock.held else ""
        lines.append(
            f"ambiguous{wait}; the next run looks their creates up before anything else: "
            f"{_ids(status.ambiguous)}"
        )
    night = status.night
    if night is not None and (counts["pending"] or counts["running"]):
        until = f" ({night['deadline']})" if night.get("deadline") else ""
        lines.append(
            f"the last run stopped for the night ({night['stopped_by']}{until}): the next run "
            "takes up the pending items and polls the running ones, creating none twice"
        )
    lines += _next_lines(status)
    lines += [f"warning: {warning}" for warning in status.warnings]
    return "\n".join(lines)


def _lock_lines(status: BatchStatus, now: datetime) -> list[str]:
    owner = status.lock.owner
    if status.lock.held:
        if owner is None:
            return ["a runner holds the lock now (its lock file does not say which)"]
        since = seconds_since(owner.started, now)
        took = f" ({duration(since)})" if since is not None else ""
        return [
            f"a runner holds the lock now: pid {owner.pid} on {owner.host}, "
            f"since {owner.started}{took}",
            f"  its command: {owner.command or '(not recorded)'}",
        ]
    if owner is None:
        return ["no runner holds the lock"]
    last = f"pid {owner.pid} on {owner.host}, {owner.started}"
    return [f"no runner holds the lock (the last to hold it: {last})"]


def _next_lines(status: BatchStatus) -> list[str]:
    lines = []
    if status.resume_command:
        lines.append(f"to resume: {status.resume_command}")
    if status.retry_command:
        lines.append(f"to submit the failed items again: {status.retry_command}")
    counts = status.counts
    if counts["total"] and counts["done"] == counts["total"]:
        lines.append("all items are done")
    elif status.last_command is None:
        lines.append(
            "to resume: run the batch's `run` command again (with --retry-failed to submit "
            "failed items again); the lock file names no command"
        )
    return lines


def _ids(ids: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(ids[:MAX_IDS_SHOWN])
    more = len(ids) - MAX_IDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``4 s``, ``3 min 12 s``, ``2 h 5 min``, ``3 d 4 h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
