"""The budget cap during a run: reservations and actual costs (pure, no I/O, no clock).

Before each create the scheduler ``reserve``s the item's estimated price; the create is sent
only if that succeeds. When the prediction ends, ``settle`` replaces the reservation by its
``metrics.cost`` (or keeps the estimate if the server reported none); a create that provably
created nothing (429, 4xx, never sent) ``release``s it. No create is thus ever sent that could
take ``spent + reserved`` over the budget.

The budget counts the batch, not just this run: ``spent_before`` is what the ledger already
records (``recorded_spend``), and predictions resumed in flight are counted with ``hold``.
``run_cap`` (``--max-spend``) counts this run alone: what its own creates reserved and spent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from runner.money import ZERO, usd

Amount = Decimal | float | int


def _amount(value: Amount) -> Decimal:
    amount = usd(value)
    if amount is None or amount < 0:
        raise ValueError(f"not an amount of money: {value!r}")
    return amount


class Budget:
    """Spent and reserved USD against an optional budget (None: no cap, everything fits).

    Amounts are Decimal inside; callers may pass floats from configuration, read through their
    shortest repr.
    """

    def __init__(
        self,
        budget_usd: Amount | None,
        *,
        spent_before: Amount = ZERO,
        run_cap: Amount | None = None,
    ) -> None:
        self.budget_usd = None if budget_usd is None else _amount(budget_usd)
        self.spent = _amount(spent_before)
        self._reserved: dict[str, Decimal] = {}
        #: This run's own allowance (--max-spend): what its creates reserved and spent.
        self.run_cap = None if run_cap is None else _amount(run_cap)
        self.run_spent = ZERO
        self._run_reserved: dict[str, Decimal] = {}
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` after every change of what is spent or reserved."""
        self._watchers.append(changed)

    def _changed(self) -> None:
        for changed in self._watchers:
            changed()

    @property
    def reserved(self) -> Decimal:
        """The estimates of predictions created (or about to be) and not yet settled."""
        return sum(self._reserved.values(), ZERO)

    def fits(self, estimate: Amount) -> bool:
        """Whether one more prediction of ``estimate`` stays within the budget (and within
        this run's cap)."""
        if not self.fits_run(estimate):
            return False
        if self.budget_usd is None:
            return True
        return self.spent + self.reserved + _amount(estimate) <= self.budget_usd

    def fits_run(self, estimate: Amount) -> bool:
        """Whether one more create of ``estimate`` stays within this run's cap."""
        if self.run_cap is None:
            return True
        held = sum(self._run_reserved.values(), ZERO)
        return self.run_spent + held + _amount(estimate) <= self.run_cap

    def reserve(self, key: str, estimate: Amount) -> bool:
        """Reserve ``estimate`` for the create of ``key``; False (nothing reserved) if over budget.

        Raises ValueError if ``key`` holds a reservation already: settle or release it first.
        """
        if key in self._reserved:
            raise ValueError(f"item {key} already holds a reservation")
        if not self.fits(estimate):
            return False
        self._reserved[key] = _amount(estimate)
        if self.run_cap is not None:
            self._run_reserved[key] = _amount(estimate)
        self._changed()
        return True

    def holds(self, key: str) -> bool:
        """Whether ``key`` holds a reservation now."""
        return key in self._reserved

    def hold(self, key: str, estimate: Amount) -> None:
        """Count a prediction that already exists (resumed in flight) whatever the budget."""
        self._reserved[key] = self._reserved.get(key, ZERO) + _amount(estimate)
        self._changed()

    def settle(self, key: str, cost: Amount | None) -> None:
        """The prediction of ``key`` ended: its actual ``cost`` replaces the reservation.

        ``cost`` None (unknown) keeps the estimate as spent. A key without a reservation adds
        ``cost``.
        """
        estimate = self._reserved.pop(key, None)
        amount = _amount(cost) if cost is not None else estimate
        self.spent += amount or ZERO
        if self._run_reserved.pop(key, None) is not None:
            self.run_spent += amount or ZERO
        self._changed()

    def release(self, key: str) -> None:
        """The create of ``key`` created nothing: drop its reservation (if any)."""
        self._run_reserved.pop(key, None)
        if self._reserved.pop(key, None) is not None:
            self._changed()


def recorded_spend(records: Iterable[Mapping[str, Any]]) -> Decimal:
    """The batch's spend so far: the last cost recorded for each prediction in the ledger.

    A prediction may be recorded more than once (a re-poll for a fresh URL writes another
    ``succeeded``), so costs are counted per prediction id, never per record.
    """
    costs: dict[str, Decimal] = {}
    for record in records:
        fold_cost(costs, record)
    return sum(costs.values(), ZERO)


def fold_cost(costs: dict[str, Decimal], record: Mapping[str, Any]) -> None:
    """One step of ``recorded_spend``: the record's cost, if it has one, as the last known cost
    of its prediction (prediction id → USD)."""
    cost = usd(record.get("cost"))
    prediction = record.get("prediction_id")
    if cost is not None and cost >= 0 and prediction:
        costs[str(prediction)] = cost
