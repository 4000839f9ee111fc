"""The run's progress from a scripted sequence of events, and the wall time of a plan (pure)."""

from __future__ import annotations

import itertools
import logging
import math
from decimal import Decimal

import pytest

from runner import walltime
from runner.display.progress import Progress, Stage
from runner.events import (
    ItemChanged,
    Paused,
    RequestRefused,
    RequestSent,
    Said,
    SpendChanged,
    Uploading,
)
from runner.jobs import JobState
from runner.manifest import Item
from runner.store.ledger import KeyState
from runner.store.plan import Action, Plan, Step

# -- the wall time ------------------------------------------------------------------------------


def waves(items: int, concurrency: int) -> int:
    return math.ceil(items / concurrency)


@pytest.mark.parametrize(
    ("waiting", "running", "concurrency", "runtime", "requests", "rate", "expected"),
    [
        # The issue's batch: 2,000 items, 10 at a time, 4 min each.
        (2000, [], 10, 240.0, 0, (60, 60.0), 2000 / 10 * 240.0),
        # Fewer items than slots: one wave, not 0.6 of one.
        (6, [], 10, 200.0, 0, (60, 60.0), waves(6, 10) * 200.0),
        (11, [], 10, 100.0, 0, (60, 60.0), waves(11, 10) * 100.0),
        # Only predictions in flight: the last to end.
        (0, [50.0, 10.0], 10, 100.0, 0, (60, 60.0), 50.0),
        # Every slot busy for 30 s more: the one waiting item starts then.
        (1, [30.0] * 10, 10, 100.0, 0, (60, 60.0), 30.0 + 100.0),
        # Slots free up at 10, 20, ... 100: 12 items take 10 at once, the 2 others the first
        # two slots to free up, a run later.
        (12, [10.0 * n for n in range(1, 11)], 10, 100.0, 0, (60, 60.0), 20.0 + 2 * 100.0),
        # More resumed in flight (12) than slots (10): the first new create waits for the
        # third to end (12 - 10 + 1).
        (1, [10.0 * n for n in range(1, 13)], 10, 100.0, 0, (60, 60.0), 30.0 + 100.0),
        # What a prediction still needs is clamped to 0..runtime.
        (0, [-5.0, 500.0], 10, 100.0, 0, (60, 60.0), 100.0),
        # The request window bounds it from below: 4,000 requests at 2 a minute.
        (2000, [], 10, 240.0, 4000, (2, 60.0), max(4000 * 60.0 / 2, 2000 / 10 * 240.0)),
        # ... and not when the slots are the slower limit.
        (2000, [], 10, 240.0, 4000, (60, 60.0), 2000 / 10 * 240.0),
        (0, [], 10, 100.0, 0, (60, 60.0), 0.0),
    ],
)
def test_wall_time_from_the_cap_the_run_time_and_the_request_window(
    waiting: int,
    running: list[float],
    concurrency: int,
    runtime: float,
    requests: int,
    rate: tuple[int, float],
    expected: float,
) -> None:
    seconds = walltime.wall_time(
        waiting=waiting,
        running=running,
        concurrency=concurrency,
        runtime=runtime,
        requests=requests,
        rate_limit=rate[0],
        rate_window=rate[1],
    )
    assert seconds == pytest.approx(expected)


def test_requests_needed_counts_a_create_and_a_poll_per_item_a_poll_per_resumed_and_uploads() -> (
    None
):
    assert walltime.requests_needed(to_submit=7, in_flight=3, uploads=2) == 7 * 2 + 3 * 1 + 2


def test_wall_time_refuses_a_concurrency_or_a_rate_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        walltime.wall_time(waiting=1, concurrency=0, runtime=1.0, rate_limit=1, rate_window=1.0)
    with pytest.raises(ValueError, match="at least 1"):
        walltime.wall_time(waiting=1, concurrency=1, runtime=1.0, rate_limit=0, rate_window=1.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (44.6, "45 s"),
        (200, "3 min 20 s"),
        (600, "10 min"),
        (13 * 3600 + 20 * 60, "13 h 20 min"),
        (3600, "1 h"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (-3, "0 s"),
    ],
)
def test_duration_reads_as_a_person_would_say_it(seconds: float, text: str) -> None:
    assert walltime.duration(seconds) == text


# -- the progress model -------------------------------------------------------------------------


def item(item_id: str) -> Item:
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
        input={"prompt": item_id},
        key=f"key-{item_id}",
    )


def step(item_id: str, action: Action, duplicate_of: str | None = None) -> Step:
    return Step(item(item_id), action, KeyState(key=f"key-{item_id}", item=item_id), duplicate_of)


def plan() -> Plan:
    """a, b, c to submit; d done before; e a duplicate of a; f resumed in flight."""
    return Plan(
        (
            step("a", Action.SUBMIT),
            step("b", Action.SUBMIT),
            step("c", Action.SUBMIT),
            step("d", Action.DONE),
            step("e", Action.DUPLICATE, duplicate_of="a"),
            step("f", Action.POLL),
        )
    )


def progress(**changes: object) -> Progress:
    settings: dict[str, object] = {
        "now": 0.0,
        "concurrency": 2,
        "rate_limit": 10,
        "rate_window": 60.0,
        "expected_runtime": 100.0,
    }
    settings.update(changes)
    return Progress(plan(), **settings)  # type: ignore[arg-type]


def counts(model: Progress, now: float = 0.0) -> dict[str, int]:
    return {stage.value: n for stage, n in model.snapshot(now).counts.items() if n}


def test_the_plan_sets_where_each_item_starts_and_a_duplicate_follows_its_first() -> None:
    model = progress()
    assert counts(model) == {"pending": 4, "running": 1, "done": 1}
    assert model.snapshot(0.0).total == 6
    assert model.snapshot(0.0).in_flight == 1  # f, resumed


def test_an_item_moves_through_the_stages_as_its_records_are_written() -> None:
    model = progress()
    model.apply(Uploading("a"), 1.0)
    assert counts(model)["uploading"] == 2  # a and its duplicate e
    model.apply(Uploading("a", done=True), 2.0)
    assert counts(model)["pending"] == 4
    model.apply(ItemChanged("a", JobState.SUBMITTING, {}), 3.0)
    assert counts(model)["submitted"] == 2
    model.apply(ItemChanged("a", JobState.SUBMITTED, {}), 3.5)
    assert counts(model)["running"] == 3  # a, e and f
    assert model.snapshot(4.0).in_flight == 2  # predictions: e shares a's
    model.apply(ItemChanged("a", JobState.SUCCEEDED, {"predict_time": 80.0}), 90.0)
    assert counts(model)["downloading"] == 2
    model.apply(ItemChanged("a", JobState.DOWNLOADED, {}), 91.0)
    model.apply(ItemChanged("b", JobState.SUBMITTING, {}), 92.0)
    model.apply(ItemChanged("b", JobState.FAILED, {"error": "x"}), 93.0)
    assert counts(model) == {"pending": 1, "running": 1, "done": 3, "failed": 1}
    assert model.snapshot(93.0).in_flight == 1
    assert model.runtime() == 80.0  # learned from a's predict_time


def test_a_create_that_made_nothing_puts_the_item_back_to_pending() -> None:
    model = progress()
    model.apply(ItemChanged("b", JobState.SUBMITTING, {}), 1.0)
    model.apply(ItemChanged("b", JobState.PENDING, {"reason": "refused: HTTP 429"}), 2.0)
    assert counts(model)["pending"] == 4
    assert model.snapshot(2.0).in_flight == 1


def test_events_about_items_outside_the_plan_change_nothing() -> None:
    model = progress()
    before = counts(model)
    model.apply(ItemChanged("zz", JobState.SUBMITTED, {}), 1.0)
    model.apply(Uploading("zz"), 1.0)
    assert counts(model) == before


def test_the_window_counts_the_requests_sent_in_the_last_window_length() -> None:
    model = progress(rate_window=60.0, rate_limit=10)
    for at in (0.0, 10.0, 50.0):
        model.apply(RequestSent("GET /v1/prediction/p", at), at)
    assert model.snapshot(55.0).window_used == 3
    assert model.snapshot(65.0).window_used == 2  # the one at 0 is out of the window
    assert model.snapshot(111.0).window_used == 0
    assert model.snapshot(111.0).rate_limit == 10


def test_a_429_and_a_new_pause_are_lines_for_the_user_a_repeated_pause_is_not() -> None:
    model = progress()
    line = model.apply(RequestRefused("POST /v1/prediction/", 1.0), 1.0)
    assert line is not None and "429" in line and "POST /v1/prediction/" in line
    assert model.snapshot(1.0).refused == 1
    first = model.apply(Paused(10.0, 5.0, "Retry-After on 429"), 5.0)
    assert first is not None and "Retry-After on 429" in first and "10 s" in first
    assert model.apply(Paused(10.0, 6.0, "Retry-After on 429"), 6.0) is None  # still on
    snapshot = model.snapshot(8.0)
    assert snapshot.paused_for == pytest.approx(6.0 + 10.0 - 8.0)
    assert snapshot.pause_why == "Retry-After on 429"
    assert model.apply(Paused(3.0, 20.0, "Retry-After on 429"), 20.0) is not None  # a new one
    assert model.apply(Paused(3.0, 21.0, "the API cannot be reached"), 21.0) is not None
    assert model.snapshot(30.0).paused_for == 0.0


def test_spend_follows_the_last_spend_event_from_what_the_plan_recorded() -> None:
    model = progress(budget=5, spent=Decimal("0.86"), reserved=Decimal("0.43"))
    snapshot = model.snapshot(0.0)
    assert (snapshot.spent, snapshot.reserved, snapshot.budget) == (
        Decimal("0.86"),
        Decimal("0.43"),
        Decimal(5),
    )
    model.apply(SpendChanged(Decimal("1.29"), Decimal("0.86")), 1.0)
    snapshot = model.snapshot(1.0)
    assert (snapshot.spent, snapshot.reserved) == (Decimal("1.29"), Decimal("0.86"))
    assert model.apply(Said(logging.WARNING, "a line"), 1.0) is None


def test_the_eta_is_the_wall_time_of_what_is_left_at_the_learned_run_time() -> None:
    model = progress(concurrency=2, expected_runtime=100.0, rate_limit=1000, rate_window=1.0)
    model.apply(ItemChanged("a", JobState.SUBMITTING, {}), 10.0)
    model.apply(ItemChanged("a", JobState.SUBMITTED, {}), 11.0)
    # Pending: b, c. In flight: f since 0, a since 10. Nothing learned: 100 s each.
    expected = walltime.wall_time(
        waiting=2,
        running=[100.0 - 30.0, 100.0 - 20.0],
        concurrency=2,
        runtime=100.0,
        requests=walltime.requests_needed(to_submit=2, in_flight=2),
        rate_limit=1000,
        rate_window=1.0,
    )
    assert model.snapshot(30.0).eta == pytest.approx(expected)
    model.apply(ItemChanged("f", JobState.SUCCEEDED, {"predict_time": 40.0}), 40.0)
    learned = model.snapshot(40.0)
    assert learned.runtime == 40.0 and learned.learned == 1
    expected = walltime.wall_time(
        waiting=2,
        running=[40.0 - 30.0],
        concurrency=2,
        runtime=40.0,
        requests=walltime.requests_needed(to_submit=2, in_flight=1),
        rate_limit=1000,
        rate_window=1.0,
    )
    assert learned.eta == pytest.approx(expected)


def test_the_eta_never_grows_while_time_passes_and_work_gets_done() -> None:
    model = progress(concurrency=2, expected_runtime=100.0)
    etas = [model.snapshot(0.0).eta]
    for now, event in [
        (5.0, ItemChanged("a", JobState.SUBMITTING, {})),
        (6.0, ItemChanged("a", JobState.SUBMITTED, {})),
        (50.0, ItemChanged("f", JobState.SUCCEEDED, {"predict_time": 100.0})),
        (51.0, ItemChanged("f", JobState.DOWNLOADED, {})),
        (52.0, ItemChanged("b", JobState.SUBMITTING, {})),
        (106.0, ItemChanged("a", JobState.SUCCEEDED, {"predict_time": 100.0})),
    ]:
        etas.append(model.snapshot(now).eta)
        model.apply(event, now)
        etas.append(model.snapshot(now).eta)
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(etas))


def test_a_finished_run_has_nothing_left() -> None:
    model = progress()
    for item_id in ("a", "b", "c", "f"):
        model.apply(ItemChanged(item_id, JobState.DOWNLOADED, {}), 1.0)
    snapshot = model.snapshot(2.0)
    assert snapshot.finished and snapshot.eta == 0.0
    assert snapshot.counts[Stage.DONE] == 6
