"""The resume plan: manifest minus ledger, from tables."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runner.jobs import JobState
from runner.manifest import Item
from runner.store.ledger import KeyState
from runner.store.plan import DOWNLOAD_FAILED, Action, make_plan, select, unmatched


def item(item_id: str, key: str) -> Item:
    return Item(
        id=item_id,
        index=0,
        line=1,
        model="minimax-i2v-01",
        prompt="p",
        image="https://example.org/x.png",
        image_path=None,
        image_url="https://example.org/x.png",
        image_sha256=None,
        input={"prompt": "p"},
        key=key,
    )


BASE = KeyState(key="k", item="a")


@pytest.mark.parametrize(
    ("state", "file_ok", "retry_failed", "action"),
    [
        (None, False, False, Action.SUBMIT),
        (replace(BASE, state=JobState.PENDING), False, False, Action.SUBMIT),
        (replace(BASE, state=JobState.SUBMITTING), False, False, Action.RECONCILE),
        (replace(BASE, state=JobState.SUBMITTED, prediction_id="p"), False, False, Action.POLL),
        (replace(BASE, state=JobState.SUCCEEDED, output_url="u"), False, False, Action.DOWNLOAD),
        (replace(BASE, state=JobState.DOWNLOADED, path="a.mp4"), True, False, Action.DONE),
        (replace(BASE, state=JobState.DOWNLOADED, path="a.mp4"), False, False, Action.DOWNLOAD),
        (replace(BASE, state=JobState.FAILED, error="x"), False, False, Action.FAILED),
        (replace(BASE, state=JobState.FAILED, error="x"), False, True, Action.SUBMIT),
        (
            replace(BASE, state=JobState.FAILED, error_code=DOWNLOAD_FAILED, output_url="u"),
            False,
            False,
            Action.DOWNLOAD,
        ),
        # Given up on while the prediction may still exist: ask the server before anything.
        *[
            (
                replace(BASE, state=JobState.FAILED, error_code=code, prediction_id="p"),
                False,
                retry,
                Action.RECHECK,
            )
            for code in ("timeout", "LOST", "POLL_ERROR", "NOT_FOUND")
            for retry in (False, True)
        ],
        # A failure the server itself reported is final: only --retry-failed submits again.
        (
            replace(BASE, state=JobState.FAILED, error_code="PROVIDER_FAILED", prediction_id="p"),
            False,
            True,
            Action.SUBMIT,
        ),
        # No prediction id: nothing to ask about.
        (replace(BASE, state=JobState.FAILED, error_code="timeout"), False, False, Action.FAILED),
    ],
)
def test_action_per_ledger_state(
    state: KeyState | None, file_ok: bool, retry_failed: bool, action: Action
) -> None:
    states = {} if state is None else {"k": state}
    plan = make_plan([item("a", "k")], states, file_ok={"k": file_ok}, retry_failed=retry_failed)
    assert [step.action for step in plan.steps] == [action]


def test_identity_is_the_key_so_reordering_and_renaming_change_nothing() -> None:
    states = {"k1": replace(BASE, key="k1", state=JobState.SUBMITTED, prediction_id="p1")}
    plan = make_plan([item("second", "k2"), item("renamed", "k1")], states, file_ok={})
    assert [(s.item.id, s.action) for s in plan.steps] == [
        ("second", Action.SUBMIT),
        ("renamed", Action.POLL),
    ]


def test_same_key_twice_is_rendered_once() -> None:
    plan = make_plan([item("a", "k"), item("b", "k")], {}, file_ok={})
    assert [(s.action, s.duplicate_of) for s in plan.steps] == [
        (Action.SUBMIT, None),
        (Action.DUPLICATE, "a"),
    ]
    assert plan.count(Action.SUBMIT) == 1


def test_retry_failed_with_codes_picks_the_failures_with_those_codes_in_any_case() -> None:
    items = [item("a", "ka"), item("b", "kb"), item("c", "kc")]
    states = {
        "ka": KeyState(key="ka", item="a", state=JobState.FAILED, error_code="PROVIDER_FAILED"),
        "kb": KeyState(key="kb", item="b", state=JobState.FAILED, error_code="CONTENT_POLICY"),
        "kc": KeyState(key="kc", item="c", state=JobState.FAILED, error_code=None),
    }
    codes = frozenset({"provider_failed"})
    plan = make_plan(items, states, file_ok={}, retry_failed=codes)
    assert [s.action for s in plan.steps] == [Action.SUBMIT, Action.FAILED, Action.FAILED]
    every = make_plan(items, states, file_ok={}, retry_failed=True)
    assert [s.action for s in every.steps] == [Action.SUBMIT] * 3


@pytest.mark.parametrize(
    ("only", "limit", "worked_on"),
    [
        ((), None, ["a1", "a2", "b1", "b2"]),
        (("a*",), None, ["a1", "a2"]),
        (("b2", "a1"), None, ["a1", "b2"]),  # manifest order, not the order given
        ((), 3, ["a1", "a2", "b1"]),
        (("b*",), 1, ["b1"]),
        (("*2",), 5, ["a2", "b2"]),
    ],
)
def test_only_and_limit_pick_the_items_with_work_and_leave_the_rest(
    only: tuple[str, ...], limit: int | None, worked_on: list[str]
) -> None:
    names = ["a1", "done", "a2", "b1", "b2"]
    items = [item(name, f"k{name}") for name in names]
    done = KeyState(key="kdone", item="done", state=JobState.DOWNLOADED, path="done.mp4")
    plan = select(make_plan(items, {"kdone": done}, file_ok={"kdone": True}), only, limit)
    actions = {s.item.id: s.action for s in plan.steps}
    assert actions.pop("done") is Action.DONE  # no work: untouched by the selection
    assert sorted(i for i, a in actions.items() if a is Action.SUBMIT) == worked_on
    assert all(a is Action.LEFT for i, a in actions.items() if i not in worked_on)
    assert plan.selected == (len(worked_on) < 4)


def test_the_patterns_that_match_nothing_are_named() -> None:
    assert unmatched(["a1", "b1"], ["a*", "c*", "b1", "b2"]) == ["c*", "b2"]
