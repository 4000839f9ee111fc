"""Prices, estimates and what fits a budget; Budget's reservations; spend in the ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner.config import parse_usd
from runner.cost import DEFAULT_PRICE_USD, Estimate, fitting, price_of, usd
from runner.errors import ConfigError
from runner.store.budget import Budget, recorded_spend


@pytest.mark.parametrize(
    ("model", "override", "expected"),
    [
        ("minimax-i2v-01", None, (0.43, True)),
        ("minimax-i2v-01-director", None, (0.43, True)),
        ("minimax-hailuo-v2-pro-image-to-video", None, (0.43, True)),
        ("some-new-model", None, (DEFAULT_PRICE_USD, False)),
        ("some-new-model", 0.5, (0.5, True)),
        ("minimax-i2v-01", 0.5, (0.5, True)),
        ("minimax-i2v-01", {"minimax-i2v-01": 0.4}, (0.4, True)),
        ("minimax-i2v-01-live", {"minimax-i2v-01": 0.4}, (0.43, True)),
        ("some-new-model", {"minimax-i2v-01": 0.4}, (DEFAULT_PRICE_USD, False)),
        ("free-model", {"free-model": 0}, (0.0, True)),
    ],
)
def test_price_comes_from_the_manifest_then_the_table_then_the_default(
    model: str, override: float | dict[str, float] | None, expected: tuple[float, bool]
) -> None:
    price, known = expected
    assert price_of(model, override) == (Decimal(str(price)), known)


def test_an_estimate_adds_up_what_is_spent_in_flight_and_new() -> None:
    estimate = Estimate((("a", 0.43), ("b", 0.43), ("c", 0.5)), in_flight=0.86, spent=1.29)
    assert estimate.new == Decimal("1.36")
    assert estimate.committed == Decimal("2.15")
    assert estimate.total == Decimal("3.51")


@pytest.mark.parametrize(
    ("prices", "committed", "budget", "fits"),
    [
        ([0.43] * 6, 0.0, 2.58, 6),  # exactly the estimate: floating point must not cut one off
        ([0.43] * 6, 0.0, 2.57, 5),
        ([0.43] * 6, 0.0, 1.00, 2),
        ([0.43] * 6, 0.0, 0.42, 0),
        ([0.43] * 6, 1.72, 2.58, 2),  # spend already recorded counts
        ([0.43] * 6, 3.00, 2.58, 0),
        ([0.43, 1.00, 0.10], 0.0, 0.60, 1),  # stops at the first that does not fit, in order
        ([], 0.0, 0.0, 0),
    ],
)
def test_fitting_takes_items_in_order_while_they_fit(
    prices: list[float], committed: float, budget: float, fits: int
) -> None:
    estimate = Estimate(tuple((f"i{n}", p) for n, p in enumerate(prices)), spent=committed)
    assert fitting(estimate, budget) == fits


@pytest.mark.parametrize(
    ("amount", "text"), [(2.58, "$2.58"), (0, "$0.00"), (0.4312, "$0.4312"), (860, "$860.00")]
)
def test_usd(amount: float, text: str) -> None:
    assert usd(amount) == text


# --- Budget ----------------------------------------------------------------------------


def test_without_a_budget_everything_fits_and_is_still_counted() -> None:
    limit = Budget(None)
    assert all(limit.reserve(f"k{n}", 0.43) for n in range(100))
    assert limit.reserved == Decimal("43.0")
    limit.settle("k0", 0.5)
    assert limit.spent == Decimal("0.5")


def test_reserve_refuses_what_would_go_over_and_reserves_nothing_then() -> None:
    limit = Budget(1.0)
    assert limit.reserve("a", 0.43)
    assert limit.reserve("b", 0.43)
    assert not limit.reserve("c", 0.43)
    assert limit.reserved == Decimal("0.86") and limit.spent == 0


def test_settle_replaces_the_reservation_by_the_actual_cost() -> None:
    limit = Budget(1.0)
    assert limit.reserve("a", 0.43) and limit.reserve("b", 0.43)
    limit.settle("a", 0.10)  # cheaper than estimated: room for one more
    assert limit.spent == Decimal("0.10") and limit.reserved == Decimal("0.43")
    assert limit.reserve("c", 0.43)
    limit.settle("b", None)  # no cost reported: the estimate stands
    assert limit.spent == Decimal("0.53")
    assert not limit.reserve("d", 0.43)


def test_release_frees_a_reservation_whose_create_created_nothing() -> None:
    limit = Budget(0.43)
    assert limit.reserve("a", 0.43)
    assert not limit.reserve("b", 0.43)
    limit.release("a")
    assert limit.reserved == 0 and limit.spent == 0
    assert limit.reserve("b", 0.43)
    limit.release("never-reserved")  # harmless


def test_spent_before_counts_against_the_budget() -> None:
    limit = Budget(2.58, spent_before=2.15)
    assert limit.reserve("a", 0.43)
    assert not limit.reserve("b", 0.01)


def test_a_budget_exactly_reached_is_not_exceeded_by_float_noise() -> None:
    limit = Budget(0.43 * 3)
    assert [limit.reserve(k, 0.43) for k in "abcd"] == [True, True, True, False]


def test_hold_counts_a_prediction_already_running_whatever_the_budget() -> None:
    limit = Budget(0.5)
    limit.hold("resumed-1", 0.43)
    limit.hold("resumed-2", 0.43)  # over the budget already: it exists, so it counts
    assert limit.reserved == Decimal("0.86")
    assert not limit.reserve("new", 0.43)
    limit.settle("resumed-1", 0.43)
    assert limit.spent == Decimal("0.43") and limit.reserved == Decimal("0.43")


def test_a_second_reservation_for_the_same_key_is_a_bug() -> None:
    limit = Budget(None)
    assert limit.reserve("a", 0.43)
    with pytest.raises(ValueError, match="already holds a reservation"):
        limit.reserve("a", 0.43)
    limit.settle("a", 0.43)
    assert limit.reserve("a", 0.43)  # a retry after the first attempt ended


def test_settle_without_a_reservation_adds_the_cost() -> None:
    limit = Budget(None)
    limit.settle("unreserved", 0.43)
    limit.settle("unreserved-no-cost", None)
    assert limit.spent == Decimal("0.43")


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        Budget(-1.0)


def test_recorded_spend_counts_each_prediction_once() -> None:
    records = [
        {"event": "submitted", "prediction_id": "p1"},
        {"event": "succeeded", "prediction_id": "p1", "cost": 0.43},
        {"event": "succeeded", "prediction_id": "p1", "cost": 0.43},  # re-polled for a fresh URL
        {"event": "failed", "prediction_id": "p2", "cost": 0.43, "error": "x"},
        {"event": "succeeded", "prediction_id": "p3", "cost": 0.40},  # the retry of p2's item
        {"event": "failed", "error": "refused", "cost": None},
        {"event": "succeeded", "prediction_id": "p4", "cost": True},  # not a number
    ]
    assert recorded_spend(records) == Decimal("1.26")


def test_holds_says_whether_a_key_has_a_reservation() -> None:
    limit = Budget(1.0)
    assert not limit.holds("a")
    assert limit.reserve("a", 0.43) and limit.holds("a")
    limit.settle("a", 0.43)
    assert not limit.holds("a")


@pytest.mark.parametrize(("text", "value"), [("25", 25.0), ("2.50", 2.5), ("$3", 3.0), ("0", 0.0)])
def test_budget_amounts_parse(text: str, value: float) -> None:
    assert parse_usd(text, "--budget") == value


@pytest.mark.parametrize("text", ["ten", "-1", "nan", "inf", ""])
def test_a_budget_that_is_not_an_amount_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget must be"):
        parse_usd(text, "--budget")


def test_a_watcher_hears_every_change_of_spent_or_reserved_and_nothing_else() -> None:
    budget = Budget(1)
    seen: list[tuple[Decimal, Decimal]] = []
    budget.watch(lambda: seen.append((budget.spent, budget.reserved)))
    assert budget.reserve("a", 0.43)
    assert not budget.reserve("b", 0.6)  # over the budget: nothing reserved, nothing heard
    budget.hold("c", 0.1)
    budget.release("nobody")  # held nothing: nothing changes
    budget.release("c")
    budget.settle("a", 0.43)
    assert seen == [
        (Decimal(0), Decimal("0.43")),
        (Decimal(0), Decimal("0.53")),
        (Decimal(0), Decimal("0.43")),
        (Decimal("0.43"), Decimal(0)),
    ]
