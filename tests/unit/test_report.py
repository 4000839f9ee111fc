"""Exit codes and the final screen from a summary (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from runner.report import exit_code, render


def summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "batch": "b",
        "counts": {"total": 3, "done": 1, "failed": 0, "pending": 2, "running": 0},
        "cost_usd": 0.43,
        "interrupted": False,
        "account_error": None,
        "budget_reached": False,
        "stopped": None,
        "items": [],
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, 1),
        ({"counts": {"total": 1, "done": 1, "failed": 0, "pending": 0, "running": 0}}, 0),
        ({"interrupted": True}, 130),
        ({"account_error": "HTTP 401"}, 3),
        ({"stopped": {"kind": "storage", "message": "disk full"}}, 5),
        ({"stopped": {"kind": "api_unavailable", "message": "gone"}}, 6),
        ({"stopped": {"kind": "api_broken", "message": "nonsense"}}, 7),
        # A stop says more than the signal that may have come with it.
        ({"stopped": {"kind": "storage", "message": "x"}, "interrupted": True}, 5),
        # The API stopped the run, but every item was done anyway: done.
        (
            {
                "stopped": {"kind": "api_broken", "message": "x"},
                "counts": {"total": 2, "done": 2, "failed": 0, "pending": 0, "running": 0},
            },
            0,
        ),
        # Something went unrecorded: a storage stop is 5 even with every item done.
        (
            {
                "stopped": {"kind": "storage", "message": "x"},
                "counts": {"total": 2, "done": 2, "failed": 0, "pending": 0, "running": 0},
            },
            5,
        ),
    ],
)
def test_exit_code_per_outcome(changes: dict[str, Any], code: int) -> None:
    assert exit_code(summary(**changes)) == code


@pytest.mark.parametrize(
    ("kind", "advice"),
    [
        ("storage", "free space"),
        ("api_unavailable", "run the same command again later"),
        ("api_broken", "check --api-base"),
    ],
)
def test_a_stopped_run_says_why_and_what_to_do(kind: str, advice: str) -> None:
    text = render(
        summary(stopped={"kind": kind, "message": "the cause"}), "out", "i2v-runner run m"
    )
    assert "stopped early: the cause" in text
    assert advice in text
    assert "to resume: i2v-runner run m" in text


def _failed(item_id: str, code: str, **state: Any) -> dict[str, Any]:
    from runner.jobs import JobState
    from runner.report import item_row
    from runner.store.ledger import KeyState

    key_state = KeyState(
        key="k", item=item_id, state=JobState.FAILED, error="e", error_code=code, **state
    )
    return item_row(item_id, key_state)


@pytest.mark.parametrize(
    ("rows", "resume", "retry"),
    [
        # A paid video whose download failed: a plain run downloads it, never creates again.
        ([_failed("a", "DOWNLOAD_FAILED", prediction_id="p", output_url="https://c/v.mp4")],
         True, False),
        # Given up on while it may exist: a plain run asks the server first.
        ([_failed("a", "timeout", prediction_id="p")], True, False),
        # A failure of the model: only --retry-failed creates it again.
        ([_failed("a", "PROVIDER_FAILED", prediction_id="p")], False, True),
        ([_failed("a", "PROVIDER_FAILED", prediction_id="p"),
          _failed("b", "LOST", prediction_id="q")], True, True),
    ],
)  # fmt: skip
def test_the_next_command_is_the_one_that_takes_up_each_failure(
    rows: list[dict[str, Any]], resume: bool, retry: bool
) -> None:
    counts = {"total": 3, "done": 3 - len(rows), "failed": len(rows), "pending": 0, "running": 0}
    text = render(summary(counts=counts, items=rows), "out", "i2v-runner run m")
    assert ("to resume: i2v-runner run m\n" in text + "\n") == resume
    assert ("i2v-runner run m --retry-failed" in text) == retry
