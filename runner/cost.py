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
from decimal import Decimal

from runner import models
from runner.money import ZERO
from runner.money import usd as to_usd

#: The estimate for a model the table does not know (the Hailuo I2V price).
DEFAULT_PRICE_USD = models.HAILUO_I2V_PRICE_USD

#: A manifest's ``price_usd``: nothing, one price for every model, or a price per model.
PriceOverride = float | Mapping[str, float] | None

Amount = Decimal | float | int


def _amount(value: Amount) -> Decimal:
    amount = to_usd(value)
    if amount is None:
        raise ValueError(f"not an amount of money: {value!r}")
    return amount


def price_of(model: str, override: PriceOverride = None) -> tuple[Decimal, bool]:
    """(price per run of ``model``, whether it is known): the manifest's, else the table's.

    Unknown (False) means neither names the model and DEFAULT_PRICE_USD stands in.
    """
    if isinstance(override, int | float):
        return _amount(override), True
    if override is not None and model in override:
        return _amount(override[model]), True
    info = models.MODELS.get(model)
    if info is not None:
        return _amount(info.price_usd), True
    return _amount(DEFAULT_PRICE_USD), False


@dataclass(frozen=True)
class Estimate:
    """What a batch has cost and will cost, in USD (Decimal; floats given are converted).

    ``to_submit`` is (item id, price) of each item to create, in manifest order; ``in_flight``
    the estimated price of predictions created earlier that have not ended (resumed, not
    created again); ``spent`` what the ledger records as charged so far.
    """

    to_submit: tuple[tuple[str, Amount], ...] = ()
    in_flight: Amount = ZERO
    spent: Amount = ZERO

    def __post_init__(self) -> None:
        prices = tuple((item, _amount(price)) for item, price in self.to_submit)
        object.__setattr__(self, "to_submit", prices)
        object.__setattr__(self, "in_flight", _amount(self.in_flight))
        object.__setattr__(self, "spent", _amount(self.spent))

    @property
    def new(self) -> Decimal:
        """The estimated price of the creates this run would send."""
        return sum((_amount(price) for _, price in self.to_submit), ZERO)

    @property
    def committed(self) -> Decimal:
        """Spent plus what predictions already running will cost: beyond any budget's reach."""
        return _amount(self.spent) + _amount(self.in_flight)

    @property
    def total(self) -> Decimal:
        """The batch's estimated spend once this run is done."""
        return self.committed + self.new


def fitting(estimate: Estimate, budget: Amount) -> int:
    """How many of ``estimate.to_submit`` fit in ``budget`` together with what is committed.

    Items are taken in manifest order and counting stops at the first that does not fit, as
    the scheduler stops submitting there (the rest stay pending for a later run).
    """
    limit = _amount(budget)
    total = estimate.committed
    count = 0
    for _, price in estimate.to_submit:
        if total + _amount(price) > limit:
            break
        total += _amount(price)
        count += 1
    return count


_CENTS = Decimal("0.01")
#: Prices have at most four decimals (``$0.4312``); beyond that is a float's binary noise.
_FINEST = Decimal("0.0001")


def usd(amount: Amount) -> str:
    """``$2.58``, ``$43,000.00``: dollars with cents and thousands separated, with up to four
    decimals only when an amount has them (``$0.4312``).

    Rounded to four decimals first, so a float's noise never shows: ``0.43 * 100000`` (which
    is 42999.999999999996) prints ``$43,000.00``.
    """
    value = _amount(amount).quantize(_FINEST)
    cents = value.quantize(_CENTS)
    if cents == value:
        return f"${cents:,.2f}"
    return f"${value:,f}".rstrip("0")  # a digit past the cents is not 0: the dot stays
