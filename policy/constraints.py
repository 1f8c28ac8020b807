"""Column constraints, grades and masks: the vocabulary shared by the catalogue, grants and SQL analysis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar, overload

from policy.errors import ConstraintLoosening


class Constraint(StrEnum):
    """How a column may be used by a query (see docs/governed-queries.md)."""

    OPEN = "open"  # in output row by row, anywhere
    GROUP = "group"  # output only as a GROUP BY key of an aggregate query; WHERE, GROUP BY
    AGGREGATE = "aggregate"  # output only inside a safe aggregate; WHERE predicates
    JOIN = "join"  # never output; equi-join conditions and count(DISTINCT col) only
    HIDDEN = "hidden"  # does not exist in the sandbox


class Grade(StrEnum):
    """Data Security Law grades."""

    CORE = "core"
    IMPORTANT = "important"
    GENERAL = "general"


class MaskKind(StrEnum):
    """Masks applied before any query sees the column."""

    HASH = "hash"  # keyed HMAC, key scoped to the grant
    PARTIAL = "partial"  # 13812341234 -> 138****1234
    GENERALIZE = "generalize"  # date -> month, integer age -> 5-year band


TEXT_TYPE = "VARCHAR"  # the DuckDB type of a `hash` or `partial` masked column
_TEXT_MASKS = frozenset({MaskKind.HASH, MaskKind.PARTIAL})
_TypeT = TypeVar("_TypeT")


@overload
def masked_type(source_type: str, mask: MaskKind | None) -> str: ...
@overload
def masked_type(source_type: _TypeT, mask: MaskKind | None, text: _TypeT) -> _TypeT: ...
def masked_type(source_type: object, mask: MaskKind | None, text: object = TEXT_TYPE) -> object:
    """A column's type after its mask: text for `hash` and `partial`; `generalize` and no mask keep the type.

    The one rule shared by SQL analysis (`ColumnPolicy.type`), the catalogue (`query_type`) and input preparation
    (the prepared file's column type). `text` is the caller's text type: DuckDB's VARCHAR by default, or
    `pyarrow.string()` for input preparation.
    """
    return text if mask in _TEXT_MASKS else source_type


SENSITIVE_PERSONAL = "sensitive_personal"
PERSONAL = "personal"
# Column tags a steward may declare: the two that set default constraints, and descriptive ones. A typo in a tag
# (`"sensitve_personal"`) would silently leave a column open, so unknown tags are refused.
KNOWN_TAGS: tuple[str, ...] = (PERSONAL, SENSITIVE_PERSONAL, "identifier", "location", "financial", "health",
                               "contact", "enterprise")


def default_constraint(tags: Iterable[str], *, is_entity: bool = False) -> Constraint:
    """The constraint a column gets when its steward declares none.

    The entity column defaults to `join`; `sensitive_personal` to `hidden`; `personal` to `aggregate`;
    anything else to `open`.
    """
    tagset = set(tags)
    if SENSITIVE_PERSONAL in tagset:
        return Constraint.HIDDEN
    if is_entity:
        return Constraint.JOIN
    if PERSONAL in tagset:
        return Constraint.AGGREGATE
    return Constraint.OPEN


def tighten(base: Constraint, override: Constraint, *, column: str = "") -> Constraint:
    """Apply a grant's override to a column's constraint; only `-> hidden` and `open -> group` are allowed."""
    if override == base:
        return base
    if override == Constraint.HIDDEN or (base == Constraint.OPEN and override == Constraint.GROUP):
        return override
    raise ConstraintLoosening(
        f"grant may only tighten a constraint (any -> hidden, open -> group); "
        f"column {column or '?'} is {base.value}, override {override.value} would loosen it",
        column=column,
        base=base.value,
        override=override.value,
    )


@dataclass(frozen=True)
class ColumnPolicy:
    """One column as SQL analysis sees it: name, DuckDB type, effective constraint, tags and mask.

    `type` is the type queries see, after the mask (`masked_type`): a BIGINT column with `mask: hash` is VARCHAR
    here, as it is in the prepared input. Give the catalogue type; the mask's type replaces it.
    """

    name: str
    type: str
    constraint: Constraint
    tags: tuple[str, ...] = ()
    mask: MaskKind | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", masked_type(self.type, self.mask))


@dataclass(frozen=True)
class TablePolicy:
    """One granted dataset version as SQL analysis sees it, under the name SQL uses for it."""

    name: str
    columns: tuple[ColumnPolicy, ...]
    entity_column: str | None = None
    grade: Grade = Grade.GENERAL
    dataset_id: str = ""
    version: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)
    population: str | None = None  # the entity id space; defaults to the dataset's own (see `entity_population`)

    @property
    def entity_population(self) -> str | None:
        """The population (entity id space) this dataset's entity column belongs to, or None without one."""
        if self.entity_column is None:
            return None
        return self.population or self.dataset_id or self.name

    def column(self, name: str) -> ColumnPolicy | None:
        """The column called `name` (case-insensitive), if it exists."""
        lowered = name.lower()
        for col in self.columns:
            if col.name.lower() == lowered:
                return col
        return None

    @property
    def visible_columns(self) -> tuple[ColumnPolicy, ...]:
        """Columns that exist in the sandbox (everything but `hidden`)."""
        return tuple(c for c in self.columns if c.constraint != Constraint.HIDDEN)
