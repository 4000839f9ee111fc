"""What a run starts from: one reading of the ledger, read once and shared by the checks (the
plan a dry run prints) and the run (the plan it carries out), so the two cannot differ.

The ledger is read line by line and folded as it goes into what the run needs: one state per
item key, the uploads it may reuse, the spend so far and the prediction ids it knows. No
record is kept, so a million-event ledger costs the states of its keys, not its records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import gcpause
from runner.jobs import JobState
from runner.money import ZERO
from runner.store import ledger
from runner.store.budget import fold_cost
from runner.store.videos import verify

_UPLOAD_EVENTS = (ledger.EVENT_UPLOADED, ledger.EVENT_UPLOAD_GONE)


@dataclass
class Replay:
    """A ledger folded record by record (``add``): what ``ledger.replay``, ``ledger.uploads``
    and ``budget.recorded_spend`` would make of the same records, in one pass."""

    records: int = 0  # how many were folded
    states: dict[str, ledger.KeyState] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)  # image sha256 → public URL
    costs: dict[str, Decimal] = field(default_factory=dict)  # prediction id → last cost
    known_ids: set[str] = field(default_factory=set)  # every prediction id attached to an item

    @property
    def spent(self) -> Decimal:
        """The batch's spend so far: the last cost recorded for each prediction."""
        return sum(self.costs.values(), ZERO)

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one record in."""
        self.fold((record,))

    def fold(self, records: Iterable[Mapping[str, Any]]) -> Replay:
        """Fold records in, each by the very steps of those three (one loop for them all:
        a million records pay for no call but the steps').

        A fold that starts on no state keeps its states as drafts while it runs, changed in
        place (``ledger.advance``), and seals them when it ends: no one sees them before.
        One that starts on states it may have handed out puts new ones in their place
        (``ledger.fold``)."""
        states, uploads, costs, known_ids = self.states, self.uploads, self.costs, self.known_ids
        fresh = not states
        fold_state = ledger.advance if fresh else ledger.fold
        fold_upload = ledger.fold_upload
        count = 0
        try:
            for record in records:
                count += 1
                prediction = record.get("prediction_id")
                if prediction:
                    known_ids.add(str(prediction))
                    if record.get("cost") is not None:  # without one, fold_cost changes nothing
                        fold_cost(costs, record)
                if record["event"] in _UPLOAD_EVENTS:
                    fold_upload(uploads, record)
                else:
                    fold_state(states, record)
        finally:
            if fresh:
                ledger.seal(states)
        self.records += count
        return self


@dataclass(frozen=True)
class Resume:
    """What the ledger says (its ``replay``), the warnings its reading gave, and for each
    downloaded key of the batch whether its video is still on disk and matches its sha256."""

    replay: Replay = field(default_factory=Replay)
    warnings: list[str] = field(default_factory=list)
    file_ok: dict[str, bool] = field(default_factory=dict)

    @property
    def states(self) -> dict[str, ledger.KeyState]:
        return self.replay.states

    @property
    def known_ids(self) -> set[str]:
        """Every prediction id the ledger has attached to an item: never attach another."""
        return self.replay.known_ids

    @property
    def empty(self) -> bool:
        """Whether the ledger holds no record (none, or nothing readable)."""
        return self.replay.records == 0


def read_resume(output_dir: Path, keys: Collection[str]) -> Resume:
    """Read ``output_dir``'s ledger (none: an empty Resume) and verify the videos of ``keys``
    it says were downloaded. Blocking: run it in a worker thread. Raises LedgerError."""
    replay, warnings = read_replay(output_dir / ledger.LEDGER_NAME)
    file_ok = {
        key: state.path is not None and verify(output_dir / state.path, state.bytes, state.sha256)
        for key, state in replay.states.items()
        if key in keys and state.state is JobState.DOWNLOADED
    }
    return Resume(replay, warnings, file_ok)


def read_replay(path: Path) -> tuple[Replay, list[str]]:
    """The ledger at ``path`` (none: nothing) replayed as it streams, no record kept, and its
    read warnings. Blocking. Raises LedgerError."""
    warnings: list[str] = []
    # the states of every key stay alive as they are made: the collector's passes over them
    # would find nothing (``runner.gcpause``)
    with gcpause.paused(), ledger.streamed(path, warnings) as records:
        return Replay().fold(records), warnings
