"""Prices, the estimate of a run and what fits in a budget (pure).

A price is per prediction, in USD. The built-in table (``models.MODELS``) has the vendor page's
fixed $0.43 for every Hailuo I2V model. A manifest may override it with a top-level
``price_usd``: one number for every model of the batch, or a mapping of model slug to price
(models it leaves out keep the table's price). A model in neither is estimated at
``DEFAULT_PRICE_USD`` with a warning. The real charge is each prediction's ``metrics.cost``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runner import models

#: The estimate for a model the table does not know (the Hailuo I2V price).
DEFAULT_PRICE_USD = models.HAILUO_I2V_PRICE_USD
#: Sums of prices in floating point are compared with this much slack (far below a cent).
EPSILON = 1e-9

#: A manifest's ``price_usd``: nothing, one price for every model, or a price per model.
PriceOverride = float | Mapping[str, float] | None


def price_of(model: str, override: PriceOverride = None) -> tuple[float, bool]:
    """(price per run of ``model``, whether it is known): the manifest's, else the table's.

    Unknown (False) means neither names the model and DEFAULT_PRICE_USD stands in.
    """
    if isinstance(override, int | float):
        return float(override), True
    if override is not None and model in override:
        return float(override[model]), True
    info = models.MODELS.get(model)
    if info is not None:
        return info.price_usd, True
    return DEFAULT_PRICE_USD, False


@dataclass(frozen=True)
class Estimate:
    """What a batch has cost and will cost, in USD.

    ``to_submit`` is (item id, price) of each item to create, in manifest order; ``in_flight``
    the estimated price of predictions created earlier that have not ended (resumed, not
    created again); ``spent`` what the ledger records as charged so far.
    """

    to_submit: tuple[tuple[str, float], ...] = ()
    in_flight: float = 0.0
    spent: float = 0.0

    @property
    def new(self) -> float:
        """The estimated price of the creates this run would send."""
        return sum(price for _, price in self.to_submit)

    @property
    def committed(self) -> float:
        """Spent plus what predictions already running will cost: beyond any budget's reach."""
        return self.spent + self.in_flight

    @property
    def total(self) -> float:
        """The batch's estimated spend once this run is done."""
        return self.committed + self.new


def fitting(estimate: Estimate, budget: float) -> int:
    """How many of ``estimate.to_submit`` fit in ``budget`` together with what is committed.

    Items are taken in manifest order and counting stops at the first that does not fit, as
    the scheduler stops submitting there (the rest stay pending for a later run).
    """
    total = estimate.committed
    count = 0
    for _, price in estimate.to_submit:
        if total + price > budget + EPSILON:
            break
        total += price
        count += 1
    return count


def usd(amount: float) -> str:
    """``$2.58``: dollars with cents (and more digits only when a price has them)."""
    text = f"{amount:.2f}"
    if abs(float(text) - amount) > EPSILON:
        text = f"{amount:.4f}".rstrip("0")
    return f"${text}"
