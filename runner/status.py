"""What an output directory says of its batch (``i2v-runner status``), read from its ledger,
its lock file and its ``summary.json`` alone: no manifest, no request, nothing written and
the lock never taken, so it is safe while a run is going.

``read_status`` reads the directory; ``describe`` and ``as_json`` are pure. Items are told
apart by id: the ledger's replay gives one state per item key, and an id recorded under
several keys (its prompt or image was edited) counts by the key of its latest record. Items
the last ``summary.json`` lists that the ledger never recorded count as pending (a duplicate
as the item it copies); ids only the ledger knows (items since taken out of the manifest)
count too: their spend was real.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import gcpause
from runner.checks.schema import CACHE_NAME
from runner.config import read_regular_file
from runner.errors import ConfigError
from runner.jobs import JobState, summary_status
from runner.money import json_number
from runner.report import SUMMARY_NAME
from runner.store import ledger
from runner.store.ledger import KeyState, seconds_since
from runner.store.outdir import LOCK_NAME, LockState, read_lock
from runner.store.plan import picks_up
from runner.store.resume import Replay

#: The largest summary.json read (2,000 items take well under 1 MB).
MAX_SUMMARY_BYTES = 64 * 1024 * 1024
#: The files a run (or ``validate``) leaves in an output directory: one of them and no
#: ledger means nothing was submitted yet, none of them means a directory of something else.
RUNNER_FILES = (LOCK_NAME, SUMMARY_NAME, CACHE_NAME)
RETRY_FLAG = "--retry-failed"


@dataclass(frozen=True)
class FailureGroup:
    """Failed items that share a reason; ``resumed``: a plain run takes them up by itself
    (a paid video to download again, a prediction given up on to ask about again)."""

    error_code: str | None
    error: str
    resumed: bool
    items: tuple[str, ...]


@dataclass(frozen=True)
class BatchStatus:
    """One reading of an output directory. ``states`` holds one state per item id, sorted."""

    directory: Path
    batch: str | None
    states: Mapping[str, KeyState]
    spent: Decimal
    lock: LockState
    last_event: str | None  # the ts of the ledger's last record
    warnings: tuple[str, ...]
    #: The last summary's ``night``: what stopped that run for the night (None: nothing did).
    night: Mapping[str, Any] | None = None

    @property
    def ran(self) -> bool:
        """Whether anything was ever recorded or listed here."""
        return bool(self.states)

    def count(self, state: JobState) -> int:
        return sum(1 for s in self.states.values() if s.state is state)

    @property
    def counts(self) -> dict[str, int]:
        """``summary.json``'s words: total, done, failed, pending, running."""
        words = [summary_status(s.state) for s in self.states.values()]
        counts = {word: words.count(word) for word in ("done", "failed", "pending", "running")}
        return {"total": len(words), **counts}

    @property
    def failures(self) -> list[FailureGroup]:
        """Failed items grouped by (error code, error, whether a plain run takes them up),
        the largest group first."""
        groups: dict[tuple[str | None, str, bool], list[str]] = {}
        for item_id, state in self.states.items():
            if state.state is JobState.FAILED:
                reason = (state.error_code, state.error or "no reason recorded", picks_up(state))
                groups.setdefault(reason, []).append(item_id)
        ordered = sorted(groups.items(), key=lambda pair: (-len(pair[1]), pair[0][1]))
        return [
            FailureGroup(code, error, resumed, tuple(ids))
            for (code, error, resumed), ids in ordered
        ]

    @property
    def ambiguous(self) -> list[str]:
        """Items whose last create was sent but its answer never recorded."""
        return [i for i, s in self.states.items() if s.state is JobState.SUBMITTING]

    @property
    def in_flight(self) -> list[KeyState]:
        """Items with a prediction the ledger last saw running on the server."""
        return [s for s in self.states.values() if s.state is JobState.SUBMITTED]

    @property
    def last_command(self) -> str | None:
        """The command of the last run, as the lock file names it (None: it names none)."""
        owner = self.lock.owner
        return owner.resume if owner is not None and owner.resume else None

    @property
    def resume_command(self) -> str | None:
        """The command to run to take the batch on, when a plain run has work left."""
        stuck = sum(len(g.items) for g in self.failures if not g.resumed)
        counts = self.counts
        left = counts["total"] - counts["done"] - stuck
        return self.last_command if left > 0 else None

    @property
    def retry_command(self) -> str | None:
        """The command that submits the failed items again, when some need it."""
        command = self.last_command
        if command is None or all(g.resumed for g in self.failures):
            return None
        return command if RETRY_FLAG in shlex.split(command) else f"{command} {RETRY_FLAG}"


@dataclass
class LedgerView:
    """What ``status`` reads off a ledger in one streamed pass (no record is kept): each key's
    state (``Replay``), the position of each key's latest record, and the last record's time."""

    replay: Replay
    latest: dict[str, int]
    last_ts: str | None = None


def fold_ledger(records: Iterable[Mapping[str, Any]]) -> LedgerView:
    """One pass over ``records`` (a list, or the ledger as it streams)."""
    view = LedgerView(Replay(), {})

    def watched() -> Iterator[Mapping[str, Any]]:
        for index, record in enumerate(records):
            if record["event"] not in (ledger.EVENT_UPLOADED, ledger.EVENT_UPLOAD_GONE):
                view.latest[record["key"]] = index
            if isinstance(ts := record.get("ts"), str):
                view.last_ts = ts
            yield record

    view.replay.fold(watched())
    return view


def item_states(view: LedgerView, listed: Sequence[Mapping[str, Any]] = ()) -> dict[str, KeyState]:
    """One state per item id, sorted by id: the ledger's replay ``view`` (an id under several keys:
    the key of its latest record), then the ids ``listed`` in a summary that the ledger never
    recorded: pending, or a duplicate's source's state."""
    by_key = view.replay.states
    states: dict[str, KeyState] = {}
    for key in sorted(by_key, key=view.latest.__getitem__):
        states[by_key[key].item] = by_key[key]
    for row in listed:
        item_id = row.get("id")
        if not isinstance(item_id, str) or item_id in states:
            continue
        source = states.get(str(row.get("duplicate_of")))
        states[item_id] = source or KeyState(key="", item=item_id)
    return dict(sorted(states.items()))


def describe(
    directory: Path,
    records: Iterable[Mapping[str, Any]],
    warnings: Sequence[str],
    summary: Mapping[str, Any] | None,
    lock: LockState,
) -> BatchStatus:
    """The status of ``directory`` from its ledger's ``records`` (read once, as they stream;
    their read ``warnings`` may grow meanwhile), its last summary (None: none) and its lock."""
    view = fold_ledger(records)
    listed = summary.get("items") if summary is not None else None
    rows = [row for row in listed if isinstance(row, dict)] if isinstance(listed, list) else []
    batch = summary.get("batch") if summary is not None else None
    return BatchStatus(
        directory=directory,
        batch=batch if isinstance(batch, str) else None,
        states=item_states(view, rows),
        spent=view.replay.spent,
        lock=lock,
        last_event=view.last_ts,
        warnings=tuple(warnings),
        night=_night(summary),
    )


def _night(summary: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    night = summary.get("night") if summary is not None else None
    return night if isinstance(night, dict) and isinstance(night.get("stopped_by"), str) else None


def read_status(directory: Path) -> BatchStatus:
    """Read ``directory``'s ledger, summary and lock without writing or locking anything.

    Raises ConfigError for a path that is not a directory, or a directory that holds neither a
    ledger nor any file a run leaves (not an output directory); LedgerError for a ledger that
    cannot be read; StorageError for a lock file that cannot be.
    """
    if not directory.exists():
        raise ConfigError(f"{directory} does not exist")
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    path = directory / ledger.LEDGER_NAME
    if not path.exists() and not path.is_symlink() and _foreign(directory):
        raise ConfigError(
            f"{directory} holds no {ledger.LEDGER_NAME}: it is not an output directory of "
            "i2v-runner"
        )
    warnings: list[str] = []
    summary = _read_summary(directory / SUMMARY_NAME, warnings)
    with gcpause.paused(), ledger.streamed(path, warnings) as records:
        return describe(directory, records, warnings, summary, read_lock(directory))


def _foreign(directory: Path) -> bool:
    """Whether ``directory`` holds files, none of them one a run leaves."""
    names = {entry.name for entry in directory.iterdir()}
    return bool(names) and not names.intersection(RUNNER_FILES)


def _read_summary(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """The last summary.json, or None (absent; unreadable: said in ``warnings``)."""
    try:
        summary = json.loads(read_regular_file(path, MAX_SUMMARY_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not JSON"
        warnings.append(f"{path} cannot be read ({reason}): items never submitted are not counted")
        return None
    return summary if isinstance(summary, dict) else None


def as_json(status: BatchStatus, now: datetime) -> dict[str, Any]:
    """``status --json``: one object (its keys are documented in the README)."""
    owner = status.lock.owner
    return {
        "directory": str(status.directory),
        "batch": status.batch,
        "ran": status.ran,
        "counts": status.counts,
        "states": {state.value: status.count(state) for state in JobState},
        "spent_usd": json_number(status.spent),
        "in_flight": [
            {"item": s.item, "prediction_id": s.prediction_id, "submitted": s.submitted_ts}
            for s in status.in_flight
        ],
        "ambiguous": status.ambiguous,
        "failures": [
            {
                "error_code": group.error_code,
                "error": group.error,
                "count": len(group.items),
                "next_run_resumes": group.resumed,
                "items": list(group.items),
            }
            for group in status.failures
        ],
        "lock": {
            "held": status.lock.held,
            "owner": None
            if owner is None
            else {
                "pid": owner.pid,
                "host": owner.host,
                "started": owner.started,
                "command": owner.command,
            },
        },
        "last_event": None
        if status.last_event is None
        else {"ts": status.last_event, "seconds_ago": seconds_since(status.last_event, now)},
        "last_command": status.last_command,
        "resume_command": status.resume_command,
        "retry_command": status.retry_command,
        "night": None if status.night is None else dict(status.night),
        "warnings": list(status.warnings),
    }
