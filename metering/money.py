"""Money: `Decimal` CNY, rated at full precision, each bill line rounded to the fen with ROUND_HALF_UP."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext

from metering.errors import InvalidPricing

CURRENCY = "CNY"
FEN = Decimal("0.01")
ZERO = Decimal(0)
# Rating precision: wide enough that no product of a quantity and a unit price is ever rounded before the line.
RATING_PRECISION = 60
RATING = Context(prec=RATING_PRECISION, rounding=ROUND_HALF_UP)


def to_fen(amount: Decimal) -> Decimal:
    """Round an exactly rated amount to the fen (0.01 CNY), half up (away from zero on .5)."""
    with localcontext(RATING):
        out = amount.quantize(FEN, rounding=ROUND_HALF_UP)
    return out.copy_abs() if out == 0 else out  # never "-0.00"


def exact(value: Decimal) -> Decimal:
    """`value` unchanged, but checked to be finite (rating never sees NaN or infinity)."""
    if not value.is_finite():
        raise InvalidPricing(f"{value} is not a finite amount", code="invalid_amount")
    return value


def parse_price(value: object, *, field: str, allow_zero: bool = True) -> Decimal:
    """A price from JSON: a decimal string or an integer (never a float, which cannot hold 0.1 exactly)."""
    if isinstance(value, (bool, float)):
        raise InvalidPricing(f"{field}: give prices as decimal strings such as \"0.05\", not floats",
                             code="invalid_price", field=field)
    try:
        price = Decimal(str(value)) if isinstance(value, int | str | Decimal) else None
    except InvalidOperation:
        price = None
    if price is None or not price.is_finite():
        raise InvalidPricing(f"{field}: {value!r} is not a decimal amount", code="invalid_price", field=field)
    if price < 0 or (price == 0 and not allow_zero):
        raise InvalidPricing(f"{field}: a price must be {'at least' if allow_zero else 'above'} 0, got {price}",
                             code="invalid_price", field=field)
    if price.as_tuple().exponent < -8:  # type: ignore[operator]
        raise InvalidPricing(f"{field}: at most 8 decimal places, got {price}", code="invalid_price", field=field)
    return price


def text(value: Decimal) -> str:
    """Canonical text of a decimal: no exponent, no trailing zeros (amounts keep their two places)."""
    if value == 0:
        return "0"
    out = format(value.normalize(), "f")
    return out


def fen_text(amount: Decimal) -> str:
    """An amount in fen as text with exactly two decimal places."""
    return format(to_fen(amount), "f")


@dataclass(frozen=True)
class Vat:
    """Whether prices include VAT, and the rate, stated on every schedule, bill and export.

    Sluice keeps one convention everywhere: prices, caps, maximum allowed revenue and bill amounts are all
    either VAT-inclusive or all VAT-exclusive (SLUICE_PRICES_INCLUDE_VAT). `part` is the VAT in a total.
    """

    included: bool
    rate: Decimal

    def part(self, total: Decimal) -> Decimal:
        """The VAT contained in (inclusive) or due on top of (exclusive) `total`, to the fen."""
        with localcontext(RATING):
            if self.included:
                return to_fen(total * self.rate / (1 + self.rate))
            return to_fen(total * self.rate)

    def gross(self, total: Decimal) -> Decimal:
        """What the payer pays in all: `total` itself when prices include VAT, else total plus VAT."""
        return total if self.included else total + self.part(total)

    def label(self) -> str:
        """Human statement of the convention, e.g. `prices include VAT at 6%`."""
        pct = text(self.rate * 100)
        return f"prices include VAT at {pct}%" if self.included else f"prices exclude VAT; VAT at {pct}% is added"
