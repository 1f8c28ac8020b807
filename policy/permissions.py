"""Organization kinds, roles and which roles fit which kind.

The permission matrix itself lives in the control store (seeded and changed only by migrations);
docs/permissions.md is its human copy and a test keeps the two identical.
"""

from __future__ import annotations

from enum import StrEnum


class OrgKind(StrEnum):
    AGENCY = "agency"
    PROVIDER = "provider"
    OPERATOR = "operator"
    CUSTOMER = "customer"
    REGULATOR = "regulator"


class Role(StrEnum):
    ADMIN = "admin"
    DATA_STEWARD = "data_steward"
    REVIEWER = "reviewer"
    OPERATOR = "operator"
    CUSTOMER = "customer"
    REGULATOR = "regulator"
    FINANCE = "finance"


# Which roles fit which organization kind. `admin` and `finance` fit every kind.
ROLE_KINDS: dict[Role, frozenset[OrgKind]] = {
    Role.ADMIN: frozenset(OrgKind),
    Role.FINANCE: frozenset(OrgKind),
    Role.DATA_STEWARD: frozenset({OrgKind.PROVIDER}),
    Role.REVIEWER: frozenset({OrgKind.AGENCY}),
    Role.OPERATOR: frozenset({OrgKind.OPERATOR}),
    Role.CUSTOMER: frozenset({OrgKind.CUSTOMER}),
    Role.REGULATOR: frozenset({OrgKind.REGULATOR}),
}
