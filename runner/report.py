"""What a run ended with: ``summary.json``, the exit code and the one-screen summary (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from runner.jobs import JobState, summary_status
from runner.money import json_number, total, usd
from runner.store.ledger import KeyState
from runner.store.plan import WORK, Action, Plan, picks_up
from runner.walltime import duration

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_ACCOUNT = 3
EXIT_LOCKED = 4
EXIT_STORAGE = 5
EXIT_API_UNAVAILABLE = 6
EXIT_API_BROKEN = 7
#: A bug in the runner (sysexits' EX_SOFTWARE): one line, summary.json, a consistent ledger.
EXIT_INTERNAL = 70
#: Not finished yet (sysexits' EX_TEMPFAIL): the run stopped for the night (its deadline,
#: --max-items, --max-spend) with work left for the next run; nothing broke.
EXIT_NOT_FINISHED = 75
EXIT_INTERRUPTED = 130

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class RunResult:
    summary: dict[str, Any]
    exit_code: int
    text: str


def item_row(item_id: str, state: KeyState, duplicate_of: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": item_id,
        "status": summary_status(state.state),
        "prediction_id": state.prediction_id,
        "path": state.path if state.state is JobState.DOWNLOADED else None,
        "sha256": state.sha256 if state.state is JobState.DOWNLOADED else None,
        "cost": json_number(usd(state.cost)),
        "error": state.error if state.state is JobState.FAILED else None,
    }
    if state.state is JobState.FAILED and state.error_code:
        row["error_code"] = state.error_code
    if picks_up(state):
        row["next_run_resumes"] = True  # downloaded again or asked about again: no new create
    if state.state is JobState.SUBMITTING:
        row["error"] = "ambiguous: a create was sent but its answer was not recorded"
    if duplicate_of is not None:
        row["duplicate_of"] = duplicate_of
    return row


def build_summary(
    batch: str,
    plan: Plan,
    final: dict[str, KeyState],
    *,
    interrupted: bool,
    account_error: str | None,
    budget_reached: bool = False,
    stopped: dict[str, str] | None = None,
    night: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``: counts and one row per manifest item, in manifest order. ``night``:
    what ended submitting for the night (``stopped_by``: deadline, max_items, max_spend) and
    the ``deadline``, when one did."""
    rows = []
    by_id = {step.item.id: step for step in plan.steps}
    for step in plan.steps:
        source = step.duplicate_of if step.action is Action.DUPLICATE else step.item.id
        assert source is not None
        state = final.get(source) or by_id[source].state
        rows.append(item_row(step.item.id, state, step.duplicate_of))
        if step.action is Action.LEFT:
            rows[-1]["left_out"] = True  # --only/--limit: not worked on in this run
    counts = Counter(row["status"] for row in rows)
    picked = [row for step, row in zip(plan.steps, rows, strict=True) if step.action in WORK]
    spent = total(
        (final.get(step.item.id) or step.state).cost
        for step in plan.steps
        if step.action is not Action.DUPLICATE
    )
    return {
        "batch": batch,
        "counts": {
            "total": len(rows),
            **{name: counts.get(name, 0) for name in ("done", "failed", "pending", "running")},
        },
        "cost_usd": json_number(spent),
        "interrupted": interrupted,
        "account_error": account_error,
        "budget_reached": budget_reached,
        "stopped": stopped,
        "night": night,
        # --only/--limit: the items this run worked on, and how many of them are done
        "selection": {
            "items": len(picked),
            "done": sum(1 for row in picked if row["status"] == "done"),
            "left_out": plan.count(Action.LEFT),
        }
        if plan.selected
        else None,
        "items": rows,
    }


#: Why a run stopped early (``summary["stopped"]["kind"]``) → its exit code.
STOP_CODES = {
    "storage": EXIT_STORAGE,
    "api_unavailable": EXIT_API_UNAVAILABLE,
    "api_broken": EXIT_API_BROKEN,
    "internal": EXIT_INTERNAL,
}
#: Stops whose exit code stands even when every item ended done: something may have gone
#: unrecorded (storage) or unexplained (internal).
_ALWAYS = frozenset({"storage", "internal"})


def exit_code(summary: dict[str, Any]) -> int:
    """The documented exit code of a run. A run the API stopped (6, 7) after every item was
    done anyway is simply done (0); a storage stop is always 5: something went unrecorded.
    A run on part of the batch (--only/--limit) is complete when its part is done."""
    stopped = summary.get("stopped")
    part = summary.get("selection")  # --only/--limit: the part this run worked on
    complete = (
        part["done"] == part["items"]
        if part
        else summary["counts"]["done"] == summary["counts"]["total"]
    )
    if stopped and (stopped["kind"] in _ALWAYS or not complete):
        return STOP_CODES[stopped["kind"]]
    if summary["account_error"]:
        return EXIT_ACCOUNT
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    if summary.get("night") and left_for_next_run(summary):
        return EXIT_NOT_FINISHED
    return EXIT_OK if complete else EXIT_FAILED


def left_for_next_run(summary: dict[str, Any]) -> int:
    """Items a plain next run takes up: pending, running, or failed in a way it resumes."""
    counts = summary["counts"]
    resumed = sum(1 for row in summary["items"] if row.get("next_run_resumes"))
    return int(counts["pending"] + counts["running"] + resumed)


_STOP_ADVICE = {
    "storage": "free space or fix the output directory, then run the same command again",
    "api_unavailable": "the API could not be reached or asked to wait too long; unfinished "
    "items are pending: run the same command again later",
    "api_broken": "the API kept answering creates with nonsense; submitting stopped so it "
    "cannot cost per item: check --api-base and the service status before running again",
    "internal": "this is a bug in the runner; the ledger is consistent, so the same command "
    "resumes: please report it with the traceback that -v shows",
}


def headline(summary: dict[str, Any], wall_seconds: float | None = None) -> str:
    """The summary's first line: the counts and the spend (and how long the run took)."""
    counts = summary["counts"]
    line = (
        f"batch {summary['batch']}: {counts['done']}/{counts['total']} done, "
        f"{counts['failed']} failed, {counts['running']} running, {counts['pending']} pending; "
        f"spent ${summary['cost_usd']:.2f}"
    )
    return line if wall_seconds is None else f"{line}; wall time {duration(wall_seconds)}"


#: The reason of a failure recorded without an error code.
NO_CODE = "no error code"
#: How the line of the failures grouped by reason starts.
REASONS_LINE = "failed by reason: "


def failure_reasons(summary: dict[str, Any]) -> list[tuple[str, int]]:
    """The failed items grouped by reason (their error code): (reason, count), the most
    frequent first, then by name."""
    reasons = Counter(
        row.get("error_code") or NO_CODE for row in summary["items"] if row["status"] == "failed"
    )
    return sorted(reasons.items(), key=lambda pair: (-pair[1], pair[0]))


def render(
    summary: dict[str, Any],
    output_dir: str,
    resume_command: str,
    *,
    max_failures: int = 10,
    wall_seconds: float | None = None,
) -> str:
    """The one-screen summary printed at the end of a run. Its first line is ``headline``
    (a terminal shows it as a table instead: ``runner.display.endtable``)."""
    counts = summary["counts"]
    lines = [headline(summary, wall_seconds), f"videos, ledger and summary.json in {output_dir}"]
    failed = [row for row in summary["items"] if row["status"] == "failed"]
    if failed:
        reasons = failure_reasons(summary)
        lines.append(REASONS_LINE + ", ".join(f"{why} {n}" for why, n in reasons))
    for row in failed[:max_failures]:
        code = f" [{row['error_code']}]" if row.get("error_code") else ""
        lines.append(f"  failed {row['id']}{code}: {row['error']}")
    if len(failed) > max_failures:
        lines.append(f"  ... and {len(failed) - max_failures} more failed (see summary.json)")
    if summary["account_error"]:
        lines.append(f"the API refused the account, submitting stopped: {summary['account_error']}")
    stopped = summary.get("stopped")
    if stopped:
        lines.append(f"stopped early: {stopped['message']}")
        lines.append(_STOP_ADVICE[stopped["kind"]])
    if summary["interrupted"]:
        lines.append("interrupted: predictions already in flight keep running on the server")
    night = summary.get("night")
    if night:
        why = {
            "deadline": f"its deadline ({night['deadline']})",
            "max_items": "--max-items",
            "max_spend": "--max-spend",
        }.get(night["stopped_by"], night["stopped_by"])
        lines.append(
            f"stopped for the night at {why}: {counts['pending']} items wait, "
            f"{counts['running']} still running on the server are picked up by the next run"
        )
        if left_for_next_run(summary):
            lines.append(f"next night: {resume_command}")
    if summary.get("budget_reached"):
        lines.append("the budget is reached: the remaining items stay pending (raise --budget)")
    picked = summary.get("selection")
    if picked:
        lines.append(
            f"this run worked on {picked['items']} item{'s' if picked['items'] != 1 else ''} "
            f"(--only/--limit), {picked['done']} done; {picked['left_out']} left for a run "
            "without them"
        )
    if counts["done"] < counts["total"]:
        # A failed download or a prediction given up on is taken up by a plain run; only the
        # others need --retry-failed, which creates (and pays) again.
        stuck = [row for row in failed if not row.get("next_run_resumes")]
        if len(stuck) < counts["total"] - counts["done"] and not night:
            lines.append(f"to resume: {resume_command}")
        if stuck:
            lines.append(f"to submit the failed items again: {resume_command} --retry-failed")
    elif counts["total"]:
        lines.append("all items are done")
    return "\n".join(lines)
