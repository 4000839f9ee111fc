"""The poll policy from tables: no clock, no sleeping, no network."""

from __future__ import annotations

import itertools
import math

import pytest

from runner.engine.policy import (
    GRID_OFFSET,
    PRIOR_SIGMA,
    RuntimeModel,
    finished_age,
    next_poll_at,
    poll_score,
)

GRID = GRID_OFFSET * 5.0  # how far after a 5 s status quantum boundary polls land


def learned(expected: float, runtimes: list[float]) -> RuntimeModel:
    model = RuntimeModel(expected)
    for runtime in runtimes:
        model.observe(runtime)
    return model


def schedule(model: RuntimeModel, *, poll_min: float, until: float) -> list[float]:
    """The ages at which one prediction is polled when nothing else competes for the budget."""
    ages: list[float] = []
    last = None
    now = 0.0
    while True:
        now = next_poll_at(
            now=now, submitted_at=0.0, last_poll_at=last, model=model, poll_min=poll_min
        )
        if now > until:
            return ages
        ages.append(now)
        last = now


def test_no_poll_before_poll_min_after_the_create_or_the_last_poll() -> None:
    model = RuntimeModel(expected=1.0)  # a prior that would poll at once
    first = next_poll_at(now=0.0, submitted_at=0.0, last_poll_at=None, model=model, poll_min=5.0)
    assert first == pytest.approx(5.0 + GRID)  # just after the first status quantum
    # a poll that went out late (the budget was busy): the next one waits poll_min, no more
    late = next_poll_at(now=7.0, submitted_at=0.0, last_poll_at=6.0, model=model, poll_min=5.0)
    assert late == 11.0
    # one that would land right on a quantum boundary waits until just after it
    edge = next_poll_at(now=7.0, submitted_at=0.0, last_poll_at=5.1, model=model, poll_min=5.0)
    assert edge == pytest.approx(10.0 + GRID)
    ages = schedule(model, poll_min=5.0, until=100.0)
    assert all(b - a >= 5.0 - 1e-9 for a, b in itertools.pairwise(ages))


def test_with_the_vendor_prior_early_polls_double_then_every_poll_min_in_the_window() -> None:
    model = RuntimeModel(expected=200.0)
    ages = schedule(model, poll_min=5.0, until=120.0)
    earliest = 200.0 * math.exp(-2.326 * PRIOR_SIGMA)
    assert ages[:5] == pytest.approx([5 + GRID, 10 + GRID, 20 + GRID, 40 + GRID, 80 + GRID])
    assert earliest <= ages[5] < earliest + 5.0  # the window opens, on the quantum grid
    assert all(b - a == pytest.approx(5.0) for a, b in itertools.pairwise(ages[5:]))


def test_a_learned_distribution_moves_the_window() -> None:
    model = learned(200.0, [150.0, 170.0, 180.0, 200.0, 240.0, 260.0])
    assert model.earliest() == pytest.approx(135.0)
    ages = schedule(model, poll_min=5.0, until=147.0)
    # trusted experience: two early looks (a quarter and half the earliest finish), then the window
    assert ages == pytest.approx([33.75, 67.5, 135 + GRID, 140 + GRID, 145 + GRID])


@pytest.mark.parametrize(("prior", "actual"), [(200.0, 2.0), (2.0, 200.0)])
def test_a_prior_wrong_by_100x_costs_polls_never_a_stall(prior: float, actual: float) -> None:
    """Before any completion is seen, the gap between polls never exceeds the age doubling."""
    model = RuntimeModel(expected=prior)
    ages = schedule(model, poll_min=0.5, until=actual * 3)
    assert ages, "the prediction was never polled"
    first_after = next(age for age in ages if age >= actual)
    assert first_after <= 2 * actual  # seen by twice its age at the latest
    # once run times are learned, the window sits where the runs finish
    model = learned(prior, [actual * f for f in (0.9, 1.0, 1.0, 1.1, 1.2)])
    assert model.earliest() == pytest.approx(0.9 * 0.9 * actual)


def test_poll_score_prefers_the_prediction_most_likely_to_have_finished() -> None:
    model = learned(200.0, [180.0, 190.0, 200.0, 210.0, 220.0])
    young = poll_score(model, age_now=60.0, age_last=50.0)
    due = poll_score(model, age_now=205.0, age_last=195.0)
    overdue = poll_score(model, age_now=400.0, age_last=395.0)
    assert young < 0.01 < due
    assert overdue > young
    long_unpolled = poll_score(model, age_now=205.0, age_last=150.0)
    assert long_unpolled > due  # more probability mass since its last look


def test_runtime_model_cdf_is_monotone_and_blends_prior_and_experience() -> None:
    model = learned(200.0, [100.0, 110.0, 120.0])
    values = [model.cdf(age) for age in range(0, 400, 10)]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] <= 1.0
    assert model.cdf(125.0) > RuntimeModel(200.0).cdf(125.0)  # experience says runs are short


def test_memory_is_bounded() -> None:
    model = learned(10.0, [float(n % 50 + 1) for n in range(1000)])
    assert len(model.observed) == 256
    assert model.observed == sorted(model.observed)


@pytest.mark.parametrize(
    ("submitted", "last_miss", "seen", "age"),
    [(0.0, 190.0, 200.0, 195.0), (10.0, None, 20.0, 5.0)],
)
def test_finished_age_is_between_the_last_miss_and_the_hit(
    submitted: float, last_miss: float | None, seen: float, age: float
) -> None:
    assert finished_age(submitted, last_miss, seen) == age


@pytest.mark.parametrize(("spare", "gap"), [(1.0, 5.0), (0.3, 5.0), (0.1, 10.0), (0.0, 10.0)])
def test_in_the_window_a_busy_budget_halves_the_poll_pace(spare: float, gap: float) -> None:
    model = learned(200.0, [150.0, 170.0, 180.0, 200.0, 240.0])
    last = 160.0 + GRID
    at = next_poll_at(
        now=last, submitted_at=0.0, last_poll_at=last, model=model, poll_min=5.0, spare=spare
    )
    assert at == pytest.approx(last + gap)


def test_request_window_reports_its_spare_share() -> None:
    from runner.api.ratelimit import RequestWindow

    window = RequestWindow(10, 60.0)
    assert window.spare(0.0) == 1.0
    for _ in range(6):
        window.begin(0.0)
        window.end(0.0)
    assert window.spare(1.0) == pytest.approx(0.4)
    assert window.spare(61.0) == 1.0  # they left the window
