"""Meters: what usage events count, in which base unit, and the billing unit each is priced in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Relation(StrEnum):
    """The two fee relations: platform fees (agency -> operator) and product fees (operator -> customer)."""

    PLATFORM = "platform"
    PRODUCT = "product"


class Basis(StrEnum):
    """Charging bases of product and service fees under government-guided pricing."""

    PER_CALL = "per_call"
    PER_PERIOD = "per_period"
    PER_VOLUME = "per_volume"


class Outcome(StrEnum):
    """How the metered access ended; only `succeeded` is chargeable."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    TIMED_OUT = "timed_out"


class PurposeClass(StrEnum):
    """A grant's purpose class; `public_interest` use is free in both fee relations."""

    PUBLIC_INTEREST = "public_interest"
    INDUSTRY = "industry"


@dataclass(frozen=True)
class Meter:
    """One meter: events count `base_unit`s; bills price `divisor` base units as one `unit`."""

    name: str
    relation: Relation
    unit: str
    base_unit: str
    divisor: int
    per_dataset: bool = False
    counts_accesses: bool = False
    label_zh: str = ""


_P, _C = Relation.PLATFORM, Relation.PRODUCT
METERS: dict[str, Meter] = {m.name: m for m in (
    Meter("runs", _P, "run", "run", 1, counts_accesses=True, label_zh="运行次数"),
    Meter("rows_scanned", _P, "10k rows", "row", 10_000, per_dataset=True, label_zh="扫描行数"),
    Meter("bytes_scanned", _P, "GB", "byte", 10**9, per_dataset=True, label_zh="扫描数据量"),
    Meter("cpu_seconds", _P, "CPU second", "microsecond", 10**6, label_zh="CPU 时间"),
    Meter("downloads", _P, "download", "download", 1, counts_accesses=True, label_zh="结果下载次数"),
    Meter("download_bytes", _P, "GB", "byte", 10**9, label_zh="结果下载量"),
    Meter("calls", _C, "call", "call", 1, counts_accesses=True, label_zh="调用次数"),
    Meter("result_rows", _C, "10k rows", "row", 10_000, label_zh="结果行数"),
    Meter("result_bytes", _C, "GB", "byte", 10**9, label_zh="结果数据量"),
    Meter("periods", _C, "period", "period", 1, counts_accesses=True, label_zh="订阅期数"),
    Meter("packages", _C, "package", "package", 1, counts_accesses=True, label_zh="资源包"),
)}
PLATFORM_METERS: tuple[str, ...] = tuple(m.name for m in METERS.values() if m.relation == Relation.PLATFORM)
METER_ORDER: dict[str, int] = {name: i for i, name in enumerate(METERS)}

# Units a price-list entry (and its cap) may use, per basis, and the meter that counts them.
BASIS_UNITS: dict[Basis, dict[str, str]] = {
    Basis.PER_CALL: {"call": "calls"},
    Basis.PER_VOLUME: {"10k_rows": "result_rows", "GB": "result_bytes"},
    Basis.PER_PERIOD: {"month": "periods", "year": "periods"},
}


def entry_meter(basis: Basis, unit: str) -> str:
    """The meter that counts usage of a price-list entry with this basis and unit."""
    return BASIS_UNITS[basis][unit]
