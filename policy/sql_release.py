"""The release plan: which cells a query over entity data releases, and what each cell is made of.

A *cell* is one value of the result: one output column of one output row that depends on an aggregate. Each cell
is built from *components*, the aggregates it depends on. For each component the plan records:

- its kind: `rows` (count(*), count(x): a sum of per-entity row counts), `value` (sum, avg, stddev, variance: sums
  of per-entity values) or `entities` (count(DISTINCT entity): the size of the entity set, treated as known);
- its contributing condition (its FILTER, and its argument not NULL), as an index into the rewrite's conditions;
- its *measures*: the ledgers the release audit records it in. The argument is expanded into monomials of base
  columns (`price * (1 - discount)` releases Σ price and Σ price·discount, as if separately: the safe side), a
  constant term or a count is `rows`, avg adds `rows`, stddev and variance add the squares' monomials and `rows`;
- its dominance statistics: one per numeric base column in the argument, computed on each entity's contribution to
  that column itself (traced through CTEs), never on the expression around it.

The plan is plain data (JSON) frozen with the job; the worker and the API read it at run time without parsing SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROWS = "rows"
KINDS = ("rows", "value", "entities")


@dataclass(frozen=True)
class Component:
    """One aggregate feeding released cells."""

    kind: str
    condition: int | None
    measures: tuple[str, ...] = ()
    stats: tuple[int, ...] = ()
    strict: bool = False
    """The condition compares protected (`aggregate`) values: no contributing row at all is suppressed for k too,
    so that "nobody in the group" cannot be told apart from "fewer than k" (a membership oracle)."""
    branch: int | None = None
    """In a set operation of aggregations (SetOp): the branch whose rows this component feeds; None otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"kind": self.kind, "condition": self.condition, "measures": list(self.measures),
                               "stats": list(self.stats)}
        if self.strict:
            out["strict"] = True
        if self.branch is not None:
            out["branch"] = self.branch
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Component:
        """From `to_dict` output."""
        branch = data.get("branch")
        return cls(str(data["kind"]), data.get("condition"), tuple(data.get("measures", ())),
                   tuple(int(x) for x in data.get("stats", ())), bool(data.get("strict", False)),
                   int(branch) if branch is not None else None)


@dataclass(frozen=True)
class Stat:
    """A dominance statistic: per-entity contributions to one base column, within one component's rows."""

    component: int
    column: str  # "dataset.column"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"component": self.component, "column": self.column}


@dataclass(frozen=True)
class Cell:
    """One output column whose values are released cells, and the components each value depends on."""

    index: int
    name: str
    components: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"index": self.index, "name": self.name, "components": list(self.components)}


@dataclass(frozen=True)
class Shell:
    """How the top-level clauses that select rows (HAVING, LIMIT, OFFSET) are applied after the release audit.

    Every group is evaluated, so every group's aggregates (in the output, in HAVING, in an ORDER BY that LIMIT
    cuts) are cells that output control and the audit decide on; the rows are selected afterwards (`finish`): of
    the rows whose group passed k, those where HAVING holds and whose HAVING cell was released, sorted in the
    released order (`output_rows.released_order`: ORDER BY values as released, a suppressed one as NULL), OFFSET / LIMIT
    keep a slice. `pos` (the raw rank over all groups) and `order` (the order columns that are cells) are kept in
    the format but no longer select rows: the raw rank ranked suppressed values too. Values are column indexes of
    the result before `finish`."""

    pos: int
    keep: int | None = None
    limit: int | None = None
    offset: int | None = None
    order: tuple[int, ...] = ()
    windows: tuple[tuple[int, int], ...] = ()
    """(column, partition column) of each output column with a window over the aggregated rows: its value in a row
    depends on the cells of every group of its partition, so one suppressed cell (or a group dropped for k) in a
    partition suppresses the window's cells in the whole partition."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"pos": self.pos, "keep": self.keep, "limit": self.limit, "offset": self.offset,
                "order": list(self.order), "windows": [list(w) for w in self.windows]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shell:
        """From `to_dict` output."""
        return cls(int(data["pos"]), data.get("keep"), data.get("limit"), data.get("offset"),
                   tuple(int(x) for x in data.get("order", ())),
                   tuple((int(c), int(p)) for c, p in data.get("windows", ())))


@dataclass(frozen=True)
class SortKey:
    """One ORDER BY item of the query, applied after the release audit to released values only (`output.finish`).

    `column` is a column index of the result before `finish` (a user column, or a hidden order column); the key's
    value in a row counts as NULL when that cell, or any of the output columns in `depends` (output aliases the
    ORDER BY expression reads), was suppressed."""

    column: int
    desc: bool = False
    nulls_first: bool = False
    depends: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"column": self.column, "desc": self.desc, "nulls_first": self.nulls_first,
                "depends": list(self.depends)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SortKey:
        """From `to_dict` output."""
        return cls(int(data["column"]), bool(data.get("desc", False)), bool(data.get("nulls_first", False)),
                   tuple(int(d) for d in data.get("depends", ())))


SET_KINDS = ("union_all", "union", "intersect", "except")


@dataclass(frozen=True)
class SetOp:
    """A set operation of aggregations over entity data (sql_setop.py), applied after the release audit.

    The SQL runs every branch (as UNION ALL) with a hidden column holding each row's branch number; each branch has
    its own entity instances and components (`ReleasePlan.branches`, `Component.branch`), so a row is checked only
    against its own branch's. Every cell of every branch is audited, output or not (an INTERSECT / EXCEPT compares
    the first branch's rows with the others' values); `policy.output.finish` then applies the set operation to the
    released values: `union` drops duplicate rows, `intersect` keeps a first-branch row equal to a released row of
    every other branch, `except` one that no row of another branch could equal. A row whose fate depends on a value
    that was not released is dropped and its cells counted as suppressed."""

    kind: str
    column: int  # the hidden branch column
    branches: int  # how many branches (numbered from 0, the first)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "column": self.column, "branches": self.branches}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SetOp:
        """From `to_dict` output."""
        kind = str(data["kind"])
        if kind not in SET_KINDS:
            raise ValueError(f"unknown set operation {kind!r}")
        return cls(kind, int(data["column"]), int(data["branches"]))


@dataclass(frozen=True)
class ReleasePlan:
    """What a query over entity data releases, for output control (worker) and the release audit (API)."""

    instances: tuple[str, ...]  # population of each entity instance, in helper-column order
    conditions: int
    components: tuple[Component, ...]
    cells: tuple[Cell, ...]
    stats: tuple[Stat, ...]
    columns: int  # user output columns
    hidden: tuple[str, ...] = ()  # hidden columns after the user's (HAVING, order cells, rank, LIMIT, OFFSET)
    shell: Shell | None = None
    setop: SetOp | None = None
    branches: tuple[int, ...] = ()  # with a set operation: the branch of each entity instance
    distinct: bool = False
    """SELECT DISTINCT of an aggregate of aggregates (sql_nested.py): equal released rows are merged after the audit."""
    optional: tuple[int, ...] = ()
    """Entity instances of an outer-joined aggregation (LEFT JOIN, sql_joined.py): a row whose group of one of them
    is missing or covers fewer than k entities is kept, and every cell reading that source is suppressed (k)."""
    sort: tuple[SortKey, ...] | None = None
    """The query's ORDER BY over released values (`output.finish` re-sorts the released rows by it, ties broken by
    every released column); None when the plan has none it can apply: the rows are then released sorted by their
    released values, column by column (never in the raw query's order, which the hidden values decided)."""

    def instances_of(self, branch: Any) -> list[int]:
        """The entity instances that count for a row of `branch` (every instance without a set operation)."""
        if self.setop is None:
            return list(range(len(self.instances)))
        return [i for i, b in enumerate(self.branches) if b == branch]

    @property
    def populations(self) -> tuple[str, ...]:
        """The populations the query reads, sorted."""
        return tuple(sorted(set(self.instances)))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what is frozen at approval)."""
        return {"instances": list(self.instances), "conditions": self.conditions,
                "components": [c.to_dict() for c in self.components], "cells": [c.to_dict() for c in self.cells],
                "stats": [s.to_dict() for s in self.stats], "columns": self.columns, "hidden": list(self.hidden),
                "shell": self.shell.to_dict() if self.shell is not None else None,
                "setop": self.setop.to_dict() if self.setop is not None else None, "branches": list(self.branches),
                "optional": list(self.optional), "distinct": self.distinct,
                "sort": [k.to_dict() for k in self.sort] if self.sort is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleasePlan:
        """From `to_dict` output."""
        return cls(
            instances=tuple(data["instances"]), conditions=int(data["conditions"]),
            components=tuple(Component.from_dict(c) for c in data["components"]),
            cells=tuple(Cell(int(c["index"]), str(c["name"]), tuple(c["components"])) for c in data["cells"]),
            stats=tuple(Stat(int(s["component"]), str(s["column"])) for s in data["stats"]),
            columns=int(data["columns"]), hidden=tuple(data.get("hidden", ())),
            shell=Shell.from_dict(data["shell"]) if data.get("shell") else None,
            setop=SetOp.from_dict(data["setop"]) if data.get("setop") else None,
            branches=tuple(int(b) for b in data.get("branches", ())),
            optional=tuple(int(i) for i in data.get("optional", ())), distinct=bool(data.get("distinct", False)),
            sort=tuple(SortKey.from_dict(k) for k in data["sort"]) if data.get("sort") is not None else None)


# helper columns the rewrite adds after the user's columns, per entity instance i --------------------------------
HELPER_PREFIX = "__sluice_i"
KEEP = "__sluice_keep"
POS = "__sluice_pos"
LIMIT = "__sluice_limit"
OFFSET = "__sluice_offset"
ORDER_CELL = "__sluice_order"
ORDER_KEY = "__sluice_sortkey"  # an ORDER BY value that is not an output column and reads no aggregate (no cell)
PARTITION = "__sluice_part"
BRANCH = "__sluice_branch"


def group_count(i: int) -> str:
    """Distinct (non-NULL) entities of instance i in the group."""
    return f"{HELPER_PREFIX}{i}_n"


def group_set(i: int) -> str:
    """Entity indexes of instance i in the group (0 stands for rows without an entity)."""
    return f"{HELPER_PREFIX}{i}_s"


def condition_count(i: int, c: int) -> str:
    """Distinct entities of instance i with a row meeting condition c."""
    return f"{HELPER_PREFIX}{i}_n{c}"


def condition_rows(i: int, c: int) -> str:
    """Whether any row of the group (with or without an entity) meets condition c."""
    return f"{HELPER_PREFIX}{i}_r{c}"


def condition_set(i: int, c: int) -> str:
    """Entity indexes of instance i with a row meeting condition c (0: rows without an entity)."""
    return f"{HELPER_PREFIX}{i}_s{c}"


def stat_top(i: int, j: int) -> str:
    """The two largest absolute per-entity contributions of statistic j (instance i)."""
    return f"{HELPER_PREFIX}{i}_t{j}"


def stat_total(i: int, j: int) -> str:
    """The sum of absolute per-entity contributions of statistic j (instance i)."""
    return f"{HELPER_PREFIX}{i}_a{j}"


def helper_names(plan: ReleasePlan) -> list[str]:
    """Every helper column of a plan, in the order the rewrite adds them."""
    names: list[str] = []
    for i in range(len(plan.instances)):
        names += [group_count(i), group_set(i)]
        for c in range(plan.conditions):
            names += [condition_count(i, c), condition_rows(i, c), condition_set(i, c)]
        for j in range(len(plan.stats)):
            names += [stat_top(i, j), stat_total(i, j)]
    return names


def measures_of(kind: str, monomials: Sequence[tuple[str, ...]], squares: Sequence[tuple[str, ...]] = (),
                *, counts_rows: bool = False) -> tuple[str, ...]:
    """Ledger measure names for a component: monomials as `a*b`, the empty monomial (a constant) as `rows`."""
    if kind == "entities":
        return ()
    names = {("*".join(m) if m else ROWS) for m in (*monomials, *squares)}
    if kind == "rows" or counts_rows:
        names.add(ROWS)
    return tuple(sorted(names))
