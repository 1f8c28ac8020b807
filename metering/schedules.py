"""Price schedules: the agency's platform fees and caps, the operators' price lists, versioned by effective time."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Generic, Protocol, TypeVar

from metering.errors import InvalidPricing, PriceRefused
from metering.meters import BASIS_UNITS, METERS, PLATFORM_METERS, Basis, entry_meter
from metering.money import RATING, text


class Versioned(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def effective_from(self) -> datetime: ...


V = TypeVar("V", bound=Versioned)


class Timeline(Generic[V]):
    """The versions of one schedule; `at(t)` is the version in force at instant t (the latest that started)."""

    def __init__(self, versions: Iterable[V]) -> None:
        self.versions: list[V] = sorted(versions, key=lambda v: (v.effective_from, v.version))
        self._starts = [v.effective_from for v in self.versions]

    def at(self, when: datetime) -> V | None:
        """The version in force at `when`, or None before the first one."""
        i = bisect.bisect_right(self._starts, when) - 1
        return self.versions[i] if i >= 0 else None

    def index_at(self, when: datetime) -> int:
        """Position of the version in force at `when` (-1 before the first)."""
        return bisect.bisect_right(self._starts, when) - 1

    def span_at(self, when: datetime) -> tuple[int, datetime | None, datetime | None]:
        """(index of the version in force at `when`, when it started, when the next one starts)."""
        i = bisect.bisect_right(self._starts, when) - 1
        lo = self._starts[i] if i >= 0 else None
        hi = self._starts[i + 1] if i + 1 < len(self._starts) else None
        return i, lo, hi

    def latest(self) -> V | None:
        return self.versions[-1] if self.versions else None

    def __len__(self) -> int:
        return len(self.versions)


@dataclass(frozen=True)
class PlatformSchedule:
    """The agency's platform fee schedule: a price per billing unit of each platform meter (missing = 0)."""

    version: int
    effective_from: datetime
    rates: Mapping[str, Decimal]
    vat_included: bool

    def rate(self, meter: str) -> Decimal:
        return self.rates.get(meter, Decimal(0))


def validate_platform(schedule: PlatformSchedule) -> PlatformSchedule:
    """Every rate names a platform meter and is non-negative; an all-zero schedule is allowed."""
    for meter, price in schedule.rates.items():
        if meter not in PLATFORM_METERS:
            raise InvalidPricing(f"platform fees price the meters {', '.join(PLATFORM_METERS)}; not {meter!r}",
                                 code="unknown_meter", meter=meter)
        if price < 0:
            raise InvalidPricing(f"platform fee for {meter} is negative", code="invalid_price", meter=meter)
    return schedule


@dataclass(frozen=True)
class Cap:
    """The agency's price cap (上限收费标准) for one charging basis, product category and unit."""

    basis: str
    category: str
    unit: str
    price: Decimal


@dataclass(frozen=True)
class CapSchedule:
    """One version of the agency's price caps: the complete table in force from `effective_from`."""

    version: int
    effective_from: datetime
    caps: tuple[Cap, ...]
    vat_included: bool
    _index: dict[tuple[str, str, str], Decimal] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({(c.basis, c.category, c.unit): c.price for c in self.caps})

    def cap_for(self, basis: str, category: str, unit: str) -> Decimal | None:
        return self._index.get((basis, category, unit))


def validate_caps(schedule: CapSchedule, categories: Iterable[str]) -> CapSchedule:
    """Each cap names a known basis, unit and category once, with a non-negative price."""
    known = set(categories)
    seen: set[tuple[str, str, str]] = set()
    for cap in schedule.caps:
        basis = _basis(cap.basis)
        if cap.unit not in BASIS_UNITS[basis]:
            raise InvalidPricing(f"a {basis.value} cap is per {' or '.join(BASIS_UNITS[basis])}, not {cap.unit!r}",
                                 code="invalid_unit", unit=cap.unit)
        if cap.category not in known:
            raise InvalidPricing(f"unknown product category {cap.category!r}; the agency's categories are "
                                 f"{', '.join(sorted(known)) or '(none yet)'}", code="unknown_category",
                                 category=cap.category)
        key = (cap.basis, cap.category, cap.unit)
        if key in seen:
            raise InvalidPricing(f"two caps for {cap.basis}/{cap.category}/{cap.unit}", code="duplicate_cap")
        seen.add(key)
        if cap.price < 0:
            raise InvalidPricing("a cap cannot be negative", code="invalid_price")
    return schedule


def _basis(value: str) -> Basis:
    try:
        return Basis(value)
    except ValueError:
        raise InvalidPricing(f"charging basis must be one of {', '.join(Basis)}; got {value!r}",
                             code="invalid_basis", basis=value) from None


@dataclass(frozen=True)
class Tier:
    """A graduated tier: usage up to `up_to` billing units (cumulative per payer, entry and period) costs
    `unit_price` each; the last tier is open (`up_to` None)."""

    up_to: Decimal | None
    unit_price: Decimal


@dataclass(frozen=True)
class Package:
    """A prepaid quantity (in billing units) bought at a package price, used up before tiers apply."""

    quantity: Decimal
    price: Decimal

    @property
    def unit_price(self) -> Decimal:
        """The effective unit price, at full precision; it must be at or below the cap."""
        with localcontext(RATING):
            return self.price / self.quantity


@dataclass(frozen=True)
class PriceEntry:
    """One version of an entry in an operator's price list. A product may be attached to the entry later."""

    entry_id: str
    operator_org_id: str
    category: str
    basis: str
    unit: str
    version: int
    effective_from: datetime
    unit_price: Decimal
    vat_included: bool
    tiers: tuple[Tier, ...] = ()
    package: Package | None = None
    product_id: str | None = None

    @property
    def meter(self) -> str:
        return entry_meter(Basis(self.basis), self.unit)

    @property
    def divisor(self) -> int:
        """Base units per billing unit (e.g. 10,000 rows, 10^9 bytes)."""
        return METERS[self.meter].divisor

    def tier_table(self) -> tuple[Tier, ...]:
        return self.tiers or (Tier(None, self.unit_price),)

    def unit_prices(self) -> list[tuple[str, Decimal]]:
        """Every unit price a payer can be charged: each tier and the package's effective price."""
        out = [(f"tier {i + 1}" if self.tiers else "unit price", t.unit_price)
               for i, t in enumerate(self.tier_table())]
        if self.package is not None:
            out.append(("package", self.package.unit_price))
        return out


def validate_entry(entry: PriceEntry, categories: Iterable[str]) -> PriceEntry:
    """Shape rules: known basis, unit and category; ascending tiers ending open; packages only for usage."""
    basis = _basis(entry.basis)
    if entry.unit not in BASIS_UNITS[basis]:
        raise InvalidPricing(f"a {basis.value} price is per {' or '.join(BASIS_UNITS[basis])}, not {entry.unit!r}",
                             code="invalid_unit", unit=entry.unit)
    known = set(categories)
    if entry.category not in known:
        raise InvalidPricing(f"unknown product category {entry.category!r}; the agency's categories are "
                             f"{', '.join(sorted(known)) or '(none yet)'}", code="unknown_category",
                             category=entry.category)
    if entry.unit_price < 0:
        raise InvalidPricing("a price cannot be negative", code="invalid_price")
    divisor = entry.divisor
    if entry.tiers:
        if basis == Basis.PER_PERIOD:
            raise InvalidPricing("tiers apply to per_call and per_volume prices, not subscriptions",
                                 code="invalid_tiers")
        if entry.tiers[0].unit_price != entry.unit_price:
            raise InvalidPricing("the first tier's unit price is the entry's unit price", code="invalid_tiers")
        bounds = [t.up_to for t in entry.tiers]
        if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise InvalidPricing("every tier but the last has an `up_to`; the last is open", code="invalid_tiers")
        limits = [b for b in bounds if b is not None]
        if any(b <= 0 or (b * divisor) != int(b * divisor) for b in limits) or limits != sorted(set(limits)):
            raise InvalidPricing("tier bounds must rise strictly and be whole base units", code="invalid_tiers")
    if entry.package is not None:
        if basis == Basis.PER_PERIOD:
            raise InvalidPricing("packages prepay per_call or per_volume usage", code="invalid_package")
        q = entry.package.quantity
        if q <= 0 or q * divisor != int(q * divisor) or entry.package.price < 0:
            raise InvalidPricing("a package has a positive quantity in whole base units and a price",
                                 code="invalid_package")
    return entry


def check_against_cap(entry: PriceEntry, caps: CapSchedule | None) -> Decimal:
    """The cap that applies to `entry`; refuses a price with no cap or any unit price above the cap."""
    where = f"{entry.basis}/{entry.category}/per {entry.unit}"
    cap = caps.cap_for(entry.basis, entry.category, entry.unit) if caps else None
    if caps is None or cap is None:
        raise PriceRefused(f"no price cap is set for {where}; the agency sets caps before prices are listed",
                           code="no_price_cap", basis=entry.basis, category=entry.category, unit=entry.unit)
    if caps.vat_included != entry.vat_included:
        raise InvalidPricing("the price and its cap must both include or both exclude VAT", code="vat_mismatch")
    for label, price in entry.unit_prices():
        if price > cap:
            raise PriceRefused(f"{label} {text(price)} CNY per {entry.unit} is above the cap of {text(cap)} CNY "
                               f"for {where} (cap version {caps.version})", code="price_above_cap",
                               cap=text(cap), price=text(price), which=label, cap_version=caps.version)
    return cap


@dataclass(frozen=True)
class EntryStatus:
    """Whether an entry's price may be charged now: `suspended` once a lowered cap falls below it."""

    status: str
    cap: Decimal | None
    reason: str


def entry_status(entry: PriceEntry | None, caps: CapSchedule | None) -> EntryStatus:
    """`active`, `suspended` (a cap now below the price, or no cap), or `not_yet_effective`."""
    if entry is None:
        return EntryStatus("not_yet_effective", None, "no version of this entry is in force yet")
    try:
        cap = check_against_cap(entry, caps)
    except PriceRefused as exc:
        cap_text = exc.context.get("cap")
        return EntryStatus("suspended", Decimal(cap_text) if cap_text else None,
                           f"suspended until repriced: {exc.message}")
    return EntryStatus("active", cap, f"at or below the cap of {text(cap)} CNY (cap version "
                                      f"{caps.version if caps else '-'})")


@dataclass(frozen=True)
class RevenueCap:
    """The agency's maximum allowed revenue (最高准许收入) for one operator and year."""

    operator_org_id: str
    year: int
    amount: Decimal
