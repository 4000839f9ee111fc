"""The budget cap during a run: reservations and actual costs (pure, no I/O, no clock).

Before each create the scheduler ``reserve``s the item's estimated price; the create is sent
only if that succeeds. When the prediction ends, ``settle`` replaces the reservation by its
``metrics.cost`` (or keeps the estimate if the server reported none); a create that provably
created nothing (429, 4xx, never sent) ``release``s it. No create is thus ever sent that could
take ``spent + reserved`` over the budget.

The budget counts the batch, not just this run: ``spent_before`` is what the ledger already
records (``recorded_spend``), and predictions resumed in flight are counted with ``hold``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from runner.cost import EPSILON


class SpendLimit:
    """Spent and reserved USD against an optional budget (None: no cap, everything fits)."""

    def __init__(self, budget_usd: float | None, *, spent_before: float = 0.0) -> None:
        if budget_usd is not None and budget_usd < 0:
            raise ValueError("a budget cannot be negative")
        self.budget_usd = budget_usd
        self.spent = spent_before
        self._reserved: dict[str, float] = {}

    @property
    def reserved(self) -> float:
        """The estimates of predictions created (or about to be) and not yet settled."""
        return sum(self._reserved.values())

    def fits(self, estimate: float) -> bool:
        """Whether one more prediction of ``estimate`` stays within the budget."""
        if self.budget_usd is None:
            return True
        return self.spent + self.reserved + estimate <= self.budget_usd + EPSILON

    def reserve(self, key: str, estimate: float) -> bool:
        """Reserve ``estimate`` for the create of ``key``; False (nothing reserved) if over budget.

        Raises ValueError if ``key`` holds a reservation already: settle or release it first.
        """
        if key in self._reserved:
            raise ValueError(f"item {key} already holds a reservation")
        if not self.fits(estimate):
            return False
        self._reserved[key] = estimate
        return True

    def holds(self, key: str) -> bool:
        """Whether ``key`` holds a reservation now."""
        return key in self._reserved

    def hold(self, key: str, estimate: float) -> None:
        """Count a prediction that already exists (resumed in flight) whatever the budget."""
        self._reserved[key] = self._reserved.get(key, 0.0) + estimate

    def settle(self, key: str, cost: float | None) -> None:
        """The prediction of ``key`` ended: its actual ``cost`` replaces the reservation.

        ``cost`` None keeps the estimate as spent. A key without a reservation adds ``cost``.
        """
        estimate = self._reserved.pop(key, None)
        amount = cost if cost is not None else estimate
        self.spent += amount or 0.0

    def release(self, key: str) -> None:
        """The create of ``key`` created nothing: drop its reservation (if any)."""
        self._reserved.pop(key, None)


def recorded_spend(records: Iterable[Mapping[str, Any]]) -> float:
    """The batch's spend so far: the last cost recorded for each prediction in the ledger.

    A prediction may be recorded more than once (a re-poll for a fresh URL writes another
    ``succeeded``), so costs are counted per prediction id, never per record.
    """
    costs: dict[str, float] = {}
    for record in records:
        cost = record.get("cost")
        prediction = record.get("prediction_id")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and prediction:
            costs[str(prediction)] = float(cost)
    return sum(costs.values())
