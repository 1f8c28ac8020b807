"""Maximum allowed revenue (最高准许收入): an operator's yearly revenue against its cap, excess carried forward.

An operator's revenue is what its customers are invoiced on final bills, by bill period. When a year's revenue
exceeds that year's effective maximum, the excess is recorded and the next year's maximum is reduced by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from metering.money import ZERO, fen_text


@dataclass(frozen=True)
class RevenuePosition:
    """One operator-year: revenue, the maximum set, the excess carried in, the effective maximum and excess."""

    operator_org_id: str
    year: int
    revenue: Decimal
    max_allowed: Decimal | None
    carried_excess: Decimal
    effective_max: Decimal | None
    excess: Decimal

    def record(self) -> dict[str, object]:
        return {"operator_org_id": self.operator_org_id, "year": self.year, "revenue": fen_text(self.revenue),
                "max_allowed": None if self.max_allowed is None else fen_text(self.max_allowed),
                "carried_excess": fen_text(self.carried_excess),
                "effective_max": None if self.effective_max is None else fen_text(self.effective_max),
                "excess": fen_text(self.excess), "over_maximum": self.excess > 0}


def positions(operator_org_id: str, revenue: Mapping[int, Decimal], max_allowed: Mapping[int, Decimal],
              until: int) -> list[RevenuePosition]:
    """Positions from the first year with revenue or a maximum up to `until`, each carrying the excess before.

    A year without a maximum has no effective maximum and no excess; its carried excess waits for the next
    year that has one.
    """
    years = sorted(set(revenue) | set(max_allowed) | {until})
    out: list[RevenuePosition] = []
    carried = ZERO
    for year in range(years[0], until + 1):
        earned = revenue.get(year, ZERO)
        cap = max_allowed.get(year)
        if cap is None:
            out.append(RevenuePosition(operator_org_id, year, earned, None, carried, None, ZERO))
            continue
        effective = max(ZERO, cap - carried)
        excess = max(ZERO, earned - effective)
        out.append(RevenuePosition(operator_org_id, year, earned, cap, carried, effective, excess))
        carried = excess
    return out
