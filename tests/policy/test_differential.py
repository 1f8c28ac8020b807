"""Differential test: seeded random aggregate queries of issue 12's shapes over the city, against raw DuckDB.

Shapes include windows with HAVING, set operations of two aggregations (UNION [ALL], INTERSECT, EXCEPT), two
aggregations joined (inner or LEFT) on their key (with a ratio of both), shares of a scalar subquery total, and
correlated scalar subqueries on the group key (rows or groups compared with their own group's average, a share of
its own group); for set operations and joins every released row must be a raw row and every released cell a value of
a branch's group whose parts cover at least k entities (a LEFT JOIN row without a group of the second aggregation
releases nothing of it).

Each generated query is either refused with a finding, or run for real through the governed path (rewrite, output
control at k = 10, the release audit over a fresh ledger, row selection) and then every released cell must equal
the raw query's value for its group, and every part of it (each aggregate it is computed from) must cover at least
k entities or have no contributing row at all, counted independently by a coverage query written by the generator
(count(DISTINCT person_id) over the same rows and condition). At least 80% of the queries must be accepted.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from casebook import CITY_K, policies_for

from policy.analysis import analyse
from policy.output import apply_output_control, finish
from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit

SEED = 12
QUERIES = 150


@dataclass(frozen=True)
class Source:
    """A FROM clause, its entity expression, group keys, value columns and row conditions."""

    from_: str
    entity: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    conditions: tuple[str, ...]
    ranges: tuple[tuple[str, float, float], ...]


SOURCES = (
    Source("residents AS r JOIN clinic_visits AS c ON r.person_id = c.person_id", "r.person_id",
           ("r.district", "r.income_band", "c.clinic", "c.diagnosis_group", "year(c.visit_date)"), ("c.cost",),
           ("r.income_band = '<3k'", "c.diagnosis_group = '肿瘤'", "r.district IN ('城东区', '城西区')",
            "c.clinic = '市第一人民医院'", "c.cost > 2000"),
           (("c.cost", 50.0, 5000.0),)),
    Source("clinic_visits AS c", "c.person_id", ("c.clinic", "c.diagnosis_group", "month(c.visit_date)"),
           ("c.cost",),
           ("c.diagnosis_group = '呼吸系统疾病'", "c.cost BETWEEN 100 AND 900", "c.clinic <> '市妇幼保健院'"),
           (("c.cost", 20.0, 3000.0),)),
    Source("residents AS r", "r.person_id", ("r.district", "r.income_band", "year(r.birth_date) // 10 * 10"), (),
           ("r.income_band IN ('>20k', '10-20k')", "r.district = '城北区'"), ()),
    Source("enterprises AS e", "e.credit_code", ("e.industry", "e.district"), ("e.employees", "e.registered_capital"),
           ("e.employees > 50", "e.industry = '制造业'", "e.district <> '高新区'"),
           (("e.employees", 5.0, 200.0),)),
)


@dataclass
class Aggregate:
    """An aggregate's SQL and the parts it is computed from: (value expression or None for a row, condition)."""

    sql: str
    parts: list[str]  # conditions (SQL over the source rows) of each part, for coverage


@dataclass
class Generated:
    """A generated query with what the checks need."""

    shape: str
    sql: str
    source: Source | None = None
    keys: list[str] = field(default_factory=list)  # key expressions, output first in this order
    aggregates: list[Aggregate] = field(default_factory=list)
    where: str | None = None
    coverage: str | None = None  # SQL: keys, then per aggregate per part: (entities, rows)
    rollup: bool = False
    branches: list[Generated] = field(default_factory=list)  # set operations and joins: each aggregation


class Generator:
    """Random queries of the issue's shapes (a small grammar, seeded)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def aggregate(self, source: Source) -> Aggregate:
        rng = self.rng
        condition = rng.choice(source.conditions)
        value = rng.choice(source.values) if source.values else None
        options = ["count(*)", "count_filter", "count_if", "count_case", "count_distinct"]
        if value is not None:
            options += ["sum", "avg", "sum_scaled", "sum_case", "sum_if", "avg_filter", "ratio", "stddev"]
        if len(source.values) > 1:
            options.append("product")
        kind = rng.choice(options)
        notnull = f"{value} IS NOT NULL" if value else "TRUE"
        cond = f"coalesce({condition}, FALSE)"
        if kind == "count(*)":
            return Aggregate("count(*)", ["TRUE"])
        if kind == "count_filter":
            return Aggregate(f"count(*) FILTER (WHERE {condition})", [condition])
        if kind == "count_if":
            return Aggregate(f"count_if({condition})", [cond])
        if kind == "count_case":
            return Aggregate(f"count(CASE WHEN {condition} THEN 1 END)", [cond])
        if kind == "count_distinct":
            return Aggregate(f"count(DISTINCT {source.entity})", ["TRUE"])
        if kind == "sum":
            return Aggregate(f"sum({value})", [notnull])
        if kind == "avg":
            return Aggregate(f"avg({value})", [notnull])
        if kind == "sum_scaled":
            return Aggregate(f"sum({value} * 0.5 + 1)", [notnull])
        if kind == "sum_case":
            return Aggregate(f"sum(CASE WHEN {condition} THEN {value} ELSE 0 END)", [f"{cond} AND {notnull}"])
        if kind == "sum_if":
            return Aggregate(f"sum(IF({condition}, {value}, 0))", [f"{cond} AND {notnull}"])
        if kind == "avg_filter":
            return Aggregate(f"avg({value}) FILTER (WHERE {condition})", [f"({condition}) AND {notnull}"])
        if kind == "ratio":
            return Aggregate(f"sum(CASE WHEN {condition} THEN {value} ELSE 0 END) / sum({value})",
                             [f"{cond} AND {notnull}", notnull])
        if kind == "stddev":
            return Aggregate(f"stddev_samp({value})", [notnull])
        a, b = source.values[0], source.values[1]
        return Aggregate(f"sum({a} * {b})", [f"{a} IS NOT NULL AND {b} IS NOT NULL"])

    def where(self, source: Source) -> str | None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.4:
            return None
        if roll < 0.7 or not source.ranges:
            return rng.choice(source.conditions)
        column, low, high = rng.choice(source.ranges)
        a = round(rng.uniform(low, high), 0)
        b = round(rng.uniform(a, high * 2), 0)
        return rng.choice([f"{column} BETWEEN {a} AND {b}", f"({column} < {a} OR {column} > {b})", f"{column} >= {a}"])

    def generate(self) -> Generated:
        rng = self.rng
        roll = rng.random()
        if roll < 0.06:
            return self.open_data()
        if roll < 0.14:
            return self.per_entity()
        if roll < 0.24:
            return self.other_shape()
        if roll < 0.38:
            return self.combined()
        if roll < 0.46:
            return self.correlated()
        if roll < 0.54:
            return self.nested()
        source = rng.choice(SOURCES)
        keys = rng.sample(source.keys, rng.choice([1, 1, 2]))
        aggregates = [self.aggregate(source) for _ in range(rng.choice([1, 2, 3]))]
        where = self.where(source)
        names = [f"k{i}" for i in range(len(keys))] + [f"a{j}" for j in range(len(aggregates))]
        select = ", ".join([f"{k} AS k{i}" for i, k in enumerate(keys)] + [f"{a.sql} AS a{j}"
                                                                           for j, a in enumerate(aggregates)])
        group = ", ".join(keys)
        where_sql = f" WHERE {where}" if where else ""
        base = f"SELECT {select} FROM {source.from_}{where_sql} GROUP BY {group}"
        shape = rng.choice(["plain", "plain", "having", "limit", "cte_rows", "shell", "shell_ratio", "window",
                            "window_having", "rollup"])
        if shape == "rollup":
            sql = base.replace(f"GROUP BY {group}", f"GROUP BY ROLLUP ({group})")
            return Generated(shape, sql, source, keys, aggregates, where, rollup=True)
        if shape in ("window", "window_having"):
            first = aggregates[0].sql
            sql = base.replace(" FROM ", f", rank() OVER (ORDER BY {first} DESC NULLS LAST) AS rk, "
                                         f"{first} * 1.0 / sum({first}) OVER () AS share FROM ", 1)
            aggregates = [*aggregates, Aggregate("rk", aggregates[0].parts), Aggregate("share", aggregates[0].parts)]
            if shape == "window_having":
                sql += f" HAVING count(*) > {rng.choice([5, 20, 100])}"
        elif shape == "having":
            sql = base + f" HAVING count(*) > {rng.choice([5, 20, 100])} ORDER BY {', '.join(names)}"
        elif shape == "limit":
            sql = base + f" ORDER BY a0 DESC NULLS LAST, {', '.join(names[:len(keys)])} LIMIT {rng.choice([3, 5])}"
        elif shape == "cte_rows":
            sql = (f"WITH rows AS (SELECT * FROM {source.from_.split(' AS ')[0]}) "
                   + base.replace(f"FROM {source.from_.split(' AS ')[0]} AS", "FROM rows AS", 1))
        elif shape in ("shell", "shell_ratio"):
            outer = ", ".join(names[:len(keys)] + names[len(keys):])
            if shape == "shell_ratio":
                outer += ", a0 * 1.0 / nullif(n_rows, 0) AS per_row"
                base = base.replace(" FROM ", ", count(*) AS n_rows FROM ", 1)
            sql = (f"WITH t AS ({base}) SELECT {outer} FROM t WHERE n_rows_filter ORDER BY {', '.join(names)}")
            sql = sql.replace("WHERE n_rows_filter", "WHERE a0 IS NOT NULL" if shape == "shell" else
                              f"WHERE n_rows >= {rng.choice([10, 50])}")
            if shape == "shell_ratio":
                aggregates = [*aggregates, Aggregate("per_row", [*aggregates[0].parts, "TRUE"])]
        else:
            sql = base
        return Generated(shape, sql, source, keys, aggregates, where)

    def branch(self, source: Source, key: str) -> Generated:
        """One aggregation of a combined shape: one key, one or two aggregates, an optional WHERE."""
        aggregates = [self.aggregate(source) for _ in range(self.rng.choice([1, 2]))]
        where = self.where(source)
        select = ", ".join([f"{key} AS k0"] + [f"{a.sql} AS a{j}" for j, a in enumerate(aggregates)])
        where_sql = f" WHERE {where}" if where else ""
        return Generated("branch", f"SELECT {select} FROM {source.from_}{where_sql} GROUP BY {key}", source, [key],
                         aggregates, where)

    def combined(self) -> Generated:
        """A set operation of two aggregations, two aggregations joined on their key, or a share of a scalar total."""
        rng = self.rng
        source = rng.choice(SOURCES)
        key = rng.choice(source.keys)
        first, second = self.branch(source, key), self.branch(source, key)
        second.aggregates = second.aggregates[:len(first.aggregates)]
        while len(second.aggregates) < len(first.aggregates):
            second.aggregates.append(self.aggregate(source))
        select = ", ".join([f"{key} AS k0"] + [f"{a.sql} AS a{j}" for j, a in enumerate(second.aggregates)])
        second.sql = f"SELECT {select} FROM {source.from_}" + (f" WHERE {second.where}" if second.where else "") + \
            f" GROUP BY {key}"
        kind = rng.choice(["UNION ALL", "UNION ALL LIMIT", "UNION", "INTERSECT", "EXCEPT", "join", "left join",
                           "scalar"])
        if kind in ("join", "left join"):
            sql = (f"WITH a AS ({first.sql}), b AS ({second.sql}) SELECT a.k0, a.a0, b.a0 AS b0, "
                   f"a.a0 * 1.0 / nullif(b.a0, 0) AS ratio FROM a {kind.upper()} b ON a.k0 = b.k0")
            return Generated("joined" if kind == "join" else "left_joined", sql, keys=["k0"], branches=[first, second])
        if kind == "scalar":
            total = f"(SELECT count(*) FROM {source.from_})"
            sql = first.sql.replace(" FROM ", f", count(*) * 1.0 / {total} AS share FROM ", 1)
            first.aggregates = [*first.aggregates, Aggregate("share", ["TRUE"])]
            return Generated("scalar", sql, source, first.keys, first.aggregates, first.where,
                             branches=[first, Generated("total", f"SELECT 'all' AS k0, count(*) AS a0 FROM "
                                                                 f"{source.from_}", source, ["'all'"],
                                                        [Aggregate("count(*)", ["TRUE"])])])
        if kind == "UNION ALL LIMIT":  # ranked over every row of both branches, after the audit
            order = ", ".join(["2 DESC NULLS LAST", "1", *(str(i + 2) for i in range(1, len(first.aggregates)))])
            return Generated("union_all_limit", f"{first.sql} UNION ALL {second.sql} ORDER BY {order} "
                             f"LIMIT {rng.choice([2, 3, 5])}", keys=["k0"], branches=[first, second])
        return Generated(kind.lower().replace(" ", "_"), f"{first.sql} {kind} {second.sql}", keys=["k0"],
                         branches=[first, second])

    def correlated(self) -> Generated:
        """A correlated scalar subquery on the group key: rows compared with their own group's average (WHERE), a
        group's share of its own larger group (SELECT), or a group compared with its own group's average (HAVING)."""
        rng = self.rng
        source = rng.choice([s for s in SOURCES if s.values])
        key = rng.choice([k for k in source.keys if "(" not in k])  # DuckDB binds correlated columns, not expressions
        value = rng.choice(source.values)
        inner_from, inner_key, inner_value = (_renamed(source.from_), _renamed(key), _renamed(value))
        shape = rng.choice(["correlated_where", "correlated_share", "correlated_having"])
        factor = rng.choice(["", " * 0.8", " * 1.5"])
        inner = f"(SELECT avg({inner_value}){factor} FROM {inner_from} WHERE {inner_key} = {key})"
        entity, notnull = source.entity, f"{value} IS NOT NULL"
        condition, inner_condition = notnull, notnull
        if shape == "correlated_where":
            condition = f"{value} > {inner}"
            sql = f"SELECT {key} AS k0, count(*) AS a0 FROM {source.from_} WHERE {condition} GROUP BY {key}"
        elif shape == "correlated_share":
            inner_condition = "TRUE"
            inner = f"(SELECT count(*) FROM {inner_from} WHERE {inner_key} = {key})"
            sql = (f"SELECT {key} AS k0, count(*) FILTER (WHERE {notnull}) * 1.0 / {inner} AS a0 FROM {source.from_} "
                   f"GROUP BY {key}")
        else:
            sql = (f"SELECT {key} AS k0, avg({value}) AS a0 FROM {source.from_} GROUP BY {key} "
                   f"HAVING avg({value}) > {inner}")
        # the outer aggregate's rows, then the inner group's (the whole group: the subquery has no other filter)
        coverage = (f"SELECT {key}, count(DISTINCT {entity}) FILTER (WHERE {condition}), "
                    f"count(*) FILTER (WHERE {condition}), count(DISTINCT {entity}) FILTER (WHERE {inner_condition}), "
                    f"count(*) FILTER (WHERE {inner_condition}) FROM {source.from_} GROUP BY {key}")
        return Generated(shape, sql, keys=[key], aggregates=[Aggregate("a0", ["outer", "inner"])], coverage=coverage)

    def nested(self) -> Generated:
        """An aggregate of aggregates: avg / max / sum / count over the groups of an aggregation, overall or per one of
        its keys; every inner group of an outer row must be released for its values to be."""
        rng = self.rng
        source = rng.choice(SOURCES)
        outer_key, inner_key = rng.sample(list(source.keys), 2)
        aggregate = self.aggregate(source)
        where = self.where(source)
        where_sql = f" WHERE {where}" if where else ""
        per_key = rng.random() < 0.6
        inner = (f"SELECT {outer_key} AS k0, {inner_key} AS k1, {aggregate.sql} AS a0 FROM {source.from_}{where_sql} "
                 f"GROUP BY {outer_key}, {inner_key}")
        outer = rng.choice(["avg(a0) AS v", "max(a0) AS v", "sum(a0) AS v", "count(*) AS v", "avg(a0) * 2 AS v"])
        having = rng.choice(["", "", " WHERE a0 > 1"])
        sql = (f"SELECT {'k0, ' if per_key else ''}{outer} FROM ({inner}) AS t{having}"
               f"{' GROUP BY k0' if per_key else ''}")
        # per outer row, the fewest entities any inner group's part covers (groups with no row for a part aside)
        columns, parts = [], []
        for j, part in enumerate(aggregate.parts):
            columns += [f"count(DISTINCT {source.entity}) FILTER (WHERE {part}) AS e{j}",
                        f"count(*) FILTER (WHERE {part}) AS r{j}"]
            parts += [f"min(CASE WHEN r{j} = 0 THEN 1000000 ELSE e{j} END)", "1"]
        groups = (f"SELECT {outer_key} AS k0, {inner_key} AS k1, {', '.join(columns)} FROM {source.from_}{where_sql} "
                  f"GROUP BY {outer_key}, {inner_key}")
        coverage = f"SELECT {'k0, ' if per_key else ''}{', '.join(parts)} FROM ({groups}) AS g" + \
            (" GROUP BY k0" if per_key else "")
        return Generated("nested", sql, keys=["k0"] if per_key else [],
                         aggregates=[Aggregate("v", aggregate.parts)], coverage=coverage)

    def per_entity(self) -> Generated:
        clinic = self.rng.choice(["市第一人民医院", "城东区社区卫生服务中心", "市中医医院"])
        sql = (f"SELECT visits, count(*) AS residents FROM (SELECT r.person_id, count(DISTINCT c.visit_id) AS visits "
               "FROM residents AS r LEFT JOIN clinic_visits AS c ON r.person_id = c.person_id "
               f"AND c.clinic = '{clinic}' GROUP BY r.person_id) AS per_person GROUP BY visits")
        coverage = (f"SELECT visits, count(*), count(*) FROM (SELECT r.person_id, count(DISTINCT c.visit_id) AS visits "
                    f"FROM residents AS r LEFT JOIN clinic_visits AS c ON r.person_id = c.person_id "
                    f"AND c.clinic = '{clinic}' GROUP BY r.person_id) GROUP BY visits")
        return Generated("per_entity", sql, keys=["visits"], aggregates=[Aggregate("count(*)", ["TRUE"])],
                         coverage=coverage)

    def other_shape(self) -> Generated:
        """Shapes of the issue that are not all answered yet (refused with a finding, or accepted and checked)."""
        district = self.rng.choice(["城东区", "城西区", "高新区"])
        shape, sql, keys = self.rng.choice([
            ("union_all_rows", "SELECT channel, count(*) AS n FROM (SELECT 'visit' AS channel, person_id "
             "FROM clinic_visits UNION ALL SELECT 'resident' AS channel, person_id FROM residents) AS u "
             "GROUP BY channel", ["channel"]),
            ("set_operation", "SELECT district, count(*) AS n FROM residents GROUP BY district EXCEPT "
             f"SELECT district, count(*) AS n FROM residents WHERE district = '{district}' GROUP BY district",
             ["district"]),
            ("exists_subquery", "SELECT r.district, count(*) AS n FROM residents AS r WHERE EXISTS (SELECT 1 FROM "
             "clinic_visits AS c WHERE c.person_id = r.person_id AND c.cost > 1000) GROUP BY r.district",
             ["district"]),
        ])
        if shape == "union_all_rows":
            union = sql[sql.index("FROM (") + 5:sql.index(" AS u")]
            coverage = f"SELECT channel, count(DISTINCT person_id), count(*) FROM {union} AS u GROUP BY channel"
            return Generated(shape, sql, keys=keys, aggregates=[Aggregate("count(*)", ["TRUE"])], coverage=coverage)
        return Generated(shape, sql, keys=keys)

    def open_data(self) -> Generated:
        sql = self.rng.choice([
            "SELECT district, avg(temperature) AS t, sum(rain_mm) AS rain FROM weather GROUP BY district",
            "SELECT route, sum(boardings) AS b FROM bus_ridership GROUP BY route ORDER BY b DESC LIMIT 3",
            "WITH d AS (SELECT district, max(rain_mm) AS m FROM weather GROUP BY district) "
            "SELECT * FROM d WHERE m > 10",
        ])
        return Generated("open_data", sql)


def _renamed(sql: str) -> str:
    """A source's SQL with its aliases renamed (r -> r2, ...), for a correlated subquery over the same datasets."""
    return re.sub(r"\b(AS [rce]|[rce]\.)", lambda m: m.group(1)[:-1] + m.group(1)[-1] + "2"
                  if m.group(1).startswith("AS") else m.group(1)[:-1] + "2.", sql)


def coverage_sql(query: Generated) -> str:
    """Per group: the keys, then per aggregate part (distinct entities, rows) meeting the part's condition."""
    if query.coverage is not None:
        return query.coverage
    assert query.source is not None
    source = query.source
    columns = [f"{k}" for k in query.keys]
    for aggregate in query.aggregates:
        for part in aggregate.parts:
            columns += [f"count(DISTINCT {source.entity}) FILTER (WHERE {part})", f"count(*) FILTER (WHERE {part})"]
    where = f" WHERE {query.where}" if query.where else ""
    group = f"ROLLUP ({', '.join(query.keys)})" if query.rollup else ", ".join(query.keys)
    return f"SELECT {', '.join(columns)} FROM {source.from_}{where} GROUP BY {group}"


def _normal(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.9g}"
    return value


def _check(query: Generated, con: duckdb.DuckDBPyConnection) -> tuple[bool, int]:
    """(accepted, released cells checked); asserts the properties in the module doc."""
    result = analyse(query.sql, policies_for("city"))
    if not result.accepted:
        assert result.findings, query.sql
        return False, 0
    assert result.sql is not None
    governed = con.sql(result.sql).to_arrow_table()
    raw = con.sql(query.sql).to_arrow_table()
    if result.release is None:
        assert not result.entity_tables
        assert sorted(map(repr, governed.to_pylist())) == sorted(map(repr, raw.to_pylist())), query.sql
        return True, 0
    controlled = apply_output_control(governed, k=CITY_K, max_rows=None, plan=result.release)
    cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
             for c in controlled.cells]
    decision = audit({p: PopulationAudit(p, CITY_K) for p in result.release.populations}, cells)
    released = finish(controlled.table, controlled.marks, dict(decision.suppressed), result.release)
    assert released.num_columns == raw.num_columns + 1, query.sql
    if query.branches and query.shape != "scalar":
        return True, _check_combined(query, con, raw, released)
    keys = len(query.keys)
    raw_rows = {tuple(_normal(v) for v in row[:keys]): row for row in (tuple(r.values()) for r in raw.to_pylist())}
    cover: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    if query.source is not None or query.coverage is not None:
        for row in con.sql(coverage_sql(query)).fetchall():
            cover[tuple(_normal(v) for v in row[:keys])] = row[keys:]
    else:  # a shape without a coverage query: released values are still compared with the raw ones
        assert released.num_rows <= raw.num_rows
        query.aggregates = [Aggregate("", []) for _ in range(raw.num_columns - keys)]
        cover = {key: () for key in raw_rows}
    checked = 0
    for row in released.drop_columns(["sluice_suppressed"]).to_pylist():
        values = tuple(row.values())
        key = tuple(_normal(v) for v in values[:keys])
        assert key in raw_rows, (query.sql, key)
        original = raw_rows[key]
        counts = cover[key]
        offset = 0
        for j, aggregate in enumerate(query.aggregates):
            parts = counts[offset:offset + 2 * len(aggregate.parts)]
            offset += 2 * len(aggregate.parts)
            value = values[keys + j] if keys + j < len(values) else None
            if value is None:
                continue
            assert _normal(value) == _normal(original[keys + j]), (query.sql, key, j)
            for entities, rows in zip(parts[::2], parts[1::2], strict=True):
                assert rows == 0 or entities >= CITY_K, (query.sql, key, j, entities, rows)
            checked += 1
    return True, checked


def _number(value: Any) -> Any:
    """A value as a set operation's column of unified type would show it (decimals beside doubles are doubles)."""
    numeric = isinstance(value, Decimal | float | int) and not isinstance(value, bool)
    return _normal(float(value)) if numeric else _normal(value)


def _covered(branch: Generated, con: duckdb.DuckDBPyConnection) -> dict[Any, tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """Per key of one aggregation: (its raw values, its coverage counts)."""
    raw = {_number(r[0]): r[1:] for r in con.sql(branch.sql).fetchall()}
    cover = {_number(r[0]): r[1:] for r in con.sql(coverage_sql(branch)).fetchall()}
    return {key: (values, cover[key]) for key, values in raw.items()}


def _parts_ok(branch: Generated, counts: tuple[Any, ...], j: int) -> bool:
    """Whether every part of aggregate j of a branch covers at least k entities or has no row."""
    offset = sum(2 * len(a.parts) for a in branch.aggregates[:j])
    parts = counts[offset:offset + 2 * len(branch.aggregates[j].parts)]
    return all(rows == 0 or entities >= CITY_K for entities, rows in zip(parts[::2], parts[1::2], strict=True))


def _check_combined(query: Generated, con: duckdb.DuckDBPyConnection, raw: Any, released: Any) -> int:
    """Set operations and joins: every released row is a raw row (suppressed cells aside), and every released cell
    is a value of a branch's group whose parts cover at least k entities."""
    branches = [_covered(b, con) for b in query.branches]
    if query.shape not in ("joined", "left_joined"):  # a set operation's values have the branches' unified type
        unified = " UNION ALL ".join(f"SELECT {b} AS branch, * FROM ({branch.sql}) AS t{b}"
                                     for b, branch in enumerate(query.branches))
        typed: list[dict[Any, tuple[Any, ...]]] = [{} for _ in query.branches]
        for row in con.sql(unified).fetchall():
            typed[row[0]][_number(row[1])] = row[2:]
        branches = [{key: (typed[b][key], cover) for key, (_, cover) in covered.items()}
                    for b, covered in enumerate(branches)]
    raw_rows = [tuple(_number(v) for v in r.values()) for r in raw.to_pylist()]
    checked = 0
    for row in released.drop_columns(["sluice_suppressed"]).to_pylist():
        values = tuple(_number(v) for v in row.values())
        assert any(all(v is None or v == o for v, o in zip(values, full, strict=True)) for full in raw_rows), \
            (query.sql, values)
        key = values[0]
        if query.shape in ("joined", "left_joined"):  # k0, a0 (first), b0 (second), ratio (both)
            (first, cover_a) = branches[0][key]
            if key not in branches[1]:  # LEFT JOIN without a group of the second: nothing of it is released
                assert query.shape == "left_joined" and values[2] is None and values[3] is None, (query.sql, values)
                assert values[1] is None or (values[1] == _number(first[0]) and
                                             _parts_ok(query.branches[0], cover_a, 0))
                checked += values[1] is not None
                continue
            (second, cover_b) = branches[1][key]
            assert values[1] is None or (values[1] == _number(first[0]) and _parts_ok(query.branches[0], cover_a, 0))
            assert values[2] is None or (values[2] == _number(second[0]) and _parts_ok(query.branches[1], cover_b, 0))
            assert values[3] is None or (_parts_ok(query.branches[0], cover_a, 0) and
                                         _parts_ok(query.branches[1], cover_b, 0))
            checked += sum(v is not None for v in values[1:])
            continue
        candidates = [(b, found) for b, covered in enumerate(branches) if (found := covered.get(key)) is not None and
                      all(v is None or v == _number(o) for v, o in zip(values[1:], found[0], strict=True))]
        assert any(all(values[1 + j] is None or _parts_ok(query.branches[b], cover, j)
                       for j in range(len(values) - 1)) for b, (_, cover) in candidates), (query.sql, values)
        checked += sum(v is not None for v in values[1:])
    return checked


@pytest.mark.slow
def test_random_aggregate_queries_are_refused_with_a_finding_or_released_exactly_over_k_entities(
        connections: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    con = connections["city"]
    generator = Generator(SEED)
    shapes: Counter[str] = Counter()
    accepted_shapes: Counter[str] = Counter()
    accepted = checked = 0
    refused: list[str] = []
    for _ in range(QUERIES):
        query = generator.generate()
        shapes[query.shape] += 1
        ok, cells = _check(query, con)
        accepted += ok
        checked += cells
        if ok:
            accepted_shapes[query.shape] += 1
        else:
            refused.append(query.sql)
    summary = {"generated": QUERIES, "accepted": accepted, "cells_checked": checked,
               "shapes": dict(shapes), "accepted_by_shape": dict(accepted_shapes)}
    with capsys.disabled():
        print("\ndifferential:", json.dumps(summary, ensure_ascii=False))
    assert accepted >= 0.8 * QUERIES, (summary, refused[:5])
    assert checked > 0


def test_the_coverage_of_a_generated_query_counts_entities_per_part() -> None:
    query = Generated("plain", "", SOURCES[1], ["c.clinic"], [Aggregate("x", ["TRUE", "c.cost > 1"])], "c.cost > 5")
    sql = coverage_sql(query)
    assert sql.count("count(DISTINCT c.person_id)") == 2 and "WHERE c.cost > 5" in sql
