"""Disclosure periods: a year (`2026`), a quarter (`2026-Q3`) or a month (`2026-11`), in the billing time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from disclosure.errors import DisclosureError

_YEAR = re.compile(r"^(\d{4})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class InvalidPeriod(DisclosureError):
    """A period that is not a year, a quarter or a month."""

    code = "invalid_period"


@dataclass(frozen=True, order=True)
class ReportPeriod:
    """A reporting period: `kind` is year, quarter or month; months are 1-based, first..last inclusive."""

    year: int
    first_month: int
    last_month: int
    kind: str

    @classmethod
    def parse(cls, value: str) -> ReportPeriod:
        """`2026`, `2026-Q3` or `2026-11`; anything else is refused naming the three forms."""
        text = value.strip()
        if m := _YEAR.match(text):
            return cls(int(m.group(1)), 1, 12, "year")
        if m := _QUARTER.match(text):
            q = int(m.group(2))
            return cls(int(m.group(1)), 3 * q - 2, 3 * q, "quarter")
        if (m := _MONTH.match(text)) and 1 <= int(m.group(2)) <= 12:
            month = int(m.group(2))
            return cls(int(m.group(1)), month, month, "month")
        raise InvalidPeriod(f"period {value!r} is not a year (2026), a quarter (2026-Q3) or a month (2026-11)",
                            period=value)

    def __str__(self) -> str:
        if self.kind == "year":
            return f"{self.year:04d}"
        if self.kind == "quarter":
            return f"{self.year:04d}-Q{(self.last_month + 2) // 3}"
        return f"{self.year:04d}-{self.first_month:02d}"

    @property
    def months(self) -> list[str]:
        """The billing months inside the period, as `2026-07`."""
        return [f"{self.year:04d}-{m:02d}" for m in range(self.first_month, self.last_month + 1)]

    def start(self, tz: tzinfo) -> datetime:
        """First instant of the period (UTC)."""
        return datetime(self.year, self.first_month, 1, tzinfo=tz).astimezone(UTC)

    def end(self, tz: tzinfo) -> datetime:
        """First instant after the period (UTC)."""
        year, month = (self.year + 1, 1) if self.last_month == 12 else (self.year, self.last_month + 1)
        return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)

    def closed(self, now: datetime, tz: tzinfo) -> bool:
        """True once the period has ended at `now`: only then can its report be published."""
        return now >= self.end(tz)

    def previous(self) -> ReportPeriod:
        """The preceding period of the same kind."""
        if self.kind == "year":
            return ReportPeriod(self.year - 1, 1, 12, "year")
        span = self.last_month - self.first_month + 1
        first = self.first_month - span
        year = self.year
        if first < 1:
            first += 12
            year -= 1
        return ReportPeriod(year, first, first + span - 1, self.kind)
