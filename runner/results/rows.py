"""One result row per item, from the snapshot of the batch's items and the ledger's states
(pure).

The status, video path, sha256, prediction id, cost and error of a row are those of the item's
row in ``summary.json`` (``runner.report.item_row``), so the two files never disagree; the row
adds what the summary leaves out: the prompt, the image, the model, the run time
(``predict_time`` of the prediction) and the item's ``meta``, passed through untouched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.money import json_number, total, usd
from runner.report import item_row
from runner.results.snapshot import SnapItem
from runner.store.ledger import KeyState
from runner.store.plan import Action, Plan

#: The statuses of ``summary.json``, in the order the results show them.
STATUSES = ("done", "failed", "pending", "running")


@dataclass(frozen=True)
class Row:
    """What the results say of one item."""

    item: SnapItem
    status: str  # one of STATUSES
    video: str | None  # the video's file name in the output directory, once done
    sha256: str | None
    prediction_id: str | None
    predict_time: float | None  # seconds, as the API's ``metrics.predict_time`` said
    cost: Decimal | None
    error: str | None
    error_code: str | None
    duplicate_of: str | None  # the earlier item with the same key, which rendered the video


@dataclass(frozen=True)
class Totals:
    """The counts by status and the spend, as ``summary.json`` counts them."""

    counts: Mapping[str, int]  # "total" and each of STATUSES
    cost_usd: Decimal


def build_rows(items: Sequence[SnapItem], states: Mapping[str, KeyState]) -> list[Row]:
    """One row per item, in the snapshot's order. ``states`` maps an item key to what the
    ledger knows of it (a key it does not hold is pending); an item whose key an earlier item
    has shares that item's state, as a duplicate of it."""
    first: dict[str, str] = {}
    rows = []
    for item in items:
        source = first.setdefault(item.key, item.id)
        duplicate_of = None if source == item.id else source
        state = states.get(item.key) or KeyState(key=item.key, item=source)
        summary = item_row(item.id, state, duplicate_of)
        time = state.predict_time
        rows.append(
            Row(
                item=item,
                status=summary["status"],
                video=summary["path"],
                sha256=summary["sha256"],
                prediction_id=summary["prediction_id"],
                predict_time=float(time) if isinstance(time, int | float) else None,
                cost=usd(summary["cost"]),
                error=summary["error"],
                error_code=summary.get("error_code"),
                duplicate_of=duplicate_of,
            )
        )
    return rows


def totals(rows: Sequence[Row]) -> Totals:
    """The counts of ``rows`` by status and what they cost, each video once (a duplicate's
    cost is its source's)."""
    counts = Counter(row.status for row in rows)
    spent = total(row.cost for row in rows if row.duplicate_of is None)
    return Totals({"total": len(rows), **{s: counts.get(s, 0) for s in STATUSES}}, spent)


def states_of(plan: Plan, final: Mapping[str, KeyState]) -> dict[str, KeyState]:
    """Item key → state at the end of a run: the run's own (``final``, by item id) or the
    plan's reading of the ledger, as ``runner.report.build_summary`` takes them."""
    return {
        step.item.key: final.get(step.item.id) or step.state
        for step in plan.steps
        if step.action is not Action.DUPLICATE
    }


def as_json(row: Row) -> dict[str, Any]:
    """A row of ``results.jsonl``: money as a JSON number (as in ``summary.json``), ``meta``
    as the object the manifest gave (null if none)."""
    item = row.item
    return {
        "id": item.id,
        "status": row.status,
        "video": row.video,
        "sha256": row.sha256,
        "prompt": item.prompt,
        "image": item.image,
        "model": item.model,
        "prediction_id": row.prediction_id,
        "predict_time": row.predict_time,
        "cost": json_number(row.cost),
        "error": row.error,
        "error_code": row.error_code,
        "duplicate_of": row.duplicate_of,
        "meta": None if item.meta is None else dict(item.meta),
    }
