"""What a run starts from: one reading of the ledger, read once and shared by the checks (the
plan a dry run prints) and the run (the plan it carries out), so the two cannot differ."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.jobs import JobState
from runner.store import ledger
from runner.store.videos import verify


@dataclass(frozen=True)
class Resume:
    """The ledger's records, the warnings its reading gave, each key's state, and for each
    downloaded key of the batch whether its video is still on disk and matches its sha256."""

    records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    states: dict[str, ledger.KeyState] = field(default_factory=dict)
    file_ok: dict[str, bool] = field(default_factory=dict)

    @property
    def known_ids(self) -> set[str]:
        """Every prediction id the ledger has attached to an item: never attach another."""
        return {str(r["prediction_id"]) for r in self.records if r.get("prediction_id")}


def read_resume(output_dir: Path, keys: Collection[str]) -> Resume:
    """Read ``output_dir``'s ledger (none: an empty Resume) and verify the videos of ``keys``
    it says were downloaded. Blocking: run it in a worker thread. Raises LedgerError."""
    records, warnings = ledger.read(output_dir / ledger.LEDGER_NAME)
    states = ledger.replay(records)
    file_ok = {
        key: state.path is not None and verify(output_dir / state.path, state.bytes, state.sha256)
        for key, state in states.items()
        if key in keys and state.state is JobState.DOWNLOADED
    }
    return Resume(records, warnings, states, file_ok)
