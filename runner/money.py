"""Money is Decimal: amounts in USD are parsed, summed and compared as ``decimal.Decimal``.

Floats appear only at the edges: JSON numbers read from the API, the ledger or a manifest are
turned into Decimal through their shortest repr (``0.43`` stays ``0.43``), and Decimal amounts
are written back to JSON as numbers the same way. Nothing here rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

ZERO = Decimal(0)


def usd(value: object) -> Decimal | None:
    """``value`` as a finite Decimal amount, or None if it is not a number (bools are not).

    Floats go through ``str`` so that ``0.43`` becomes ``Decimal("0.43")``, not the binary
    approximation's 50 digits.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float):
        amount = Decimal(str(value))
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return amount if amount.is_finite() else None


def total(values: Iterable[object]) -> Decimal:
    """The sum of the amounts in ``values``; values that are not amounts count as zero."""
    return sum((usd(v) or ZERO for v in values), ZERO)


def json_number(value: object) -> object:
    """A Decimal as a JSON-ready number (a float with the same shortest repr, so ``0.43`` is
    written ``0.43``); anything else unchanged."""
    return float(value) if isinstance(value, Decimal) else value
