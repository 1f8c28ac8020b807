"""Billing periods: calendar months (`2026-11`) and years (`2026`) in the billing time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from metering.errors import InvalidPricing

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")


@dataclass(frozen=True, order=True)
class Period:
    """A calendar month (month 1..12) or a whole year (month 0), as `2026-11` or `2026`."""

    year: int
    month: int = 0

    @classmethod
    def parse(cls, value: str) -> Period:
        """`2026-11` or `2026`; anything else is refused with the expected form."""
        m = _MONTH.match(value.strip())
        if m and 1 <= int(m.group(2)) <= 12:
            return cls(int(m.group(1)), int(m.group(2)))
        y = _YEAR.match(value.strip())
        if y:
            return cls(int(y.group(1)))
        raise InvalidPricing(f"period {value!r} is not a month such as 2026-11 or a year such as 2026",
                             code="invalid_period", period=value)

    @classmethod
    def month_of(cls, at: datetime, tz: tzinfo) -> Period:
        """The month that contains instant `at`, in time zone `tz`."""
        local = at.astimezone(tz)
        return cls(local.year, local.month)

    @property
    def is_year(self) -> bool:
        return self.month == 0

    def __str__(self) -> str:
        return f"{self.year:04d}" if self.is_year else f"{self.year:04d}-{self.month:02d}"

    def start(self, tz: tzinfo) -> datetime:
        """First instant of the period (UTC)."""
        return datetime(self.year, self.month or 1, 1, tzinfo=tz).astimezone(UTC)

    def end(self, tz: tzinfo) -> datetime:
        """First instant after the period (UTC)."""
        return self.next().start(tz)

    def next(self) -> Period:
        """The following period of the same length."""
        if self.is_year:
            return Period(self.year + 1)
        return Period(self.year + (self.month == 12), self.month % 12 + 1)

    def previous(self) -> Period:
        """The preceding period of the same length."""
        if self.is_year:
            return Period(self.year - 1)
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def contains(self, other: Period) -> bool:
        """True when `other` (a month or year) lies inside this period."""
        return other == self or (self.is_year and other.year == self.year)


class PeriodIndex:
    """Maps instants to their month quickly: event times cluster, so the last month found is tried first."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._last: tuple[datetime, datetime, Period, str] | None = None

    def month(self, at: datetime) -> Period:
        """The month containing `at`."""
        return self.month_text(at)[0]

    def month_text(self, at: datetime) -> tuple[Period, str]:
        """The month containing `at`, and its text (`2026-11`)."""
        last = self._last
        if last is None or not last[0] <= at < last[1]:
            p = Period.month_of(at, self.tz)
            last = self._last = (p.start(self.tz), p.end(self.tz), p, str(p))
        return last[2], last[3]
