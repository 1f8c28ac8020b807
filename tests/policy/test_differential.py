"""Differential test: seeded random aggregate queries of issue 12's shapes over the city, against raw DuckDB.

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
from collections import Counter
from dataclasses import dataclass, field
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
                            "rollup"])
        if shape == "rollup":
            sql = base.replace(f"GROUP BY {group}", f"GROUP BY ROLLUP ({group})")
            return Generated(shape, sql, source, keys, aggregates, where, rollup=True)
        if shape == "window":
            first = aggregates[0].sql
            sql = base.replace(" FROM ", f", rank() OVER (ORDER BY {first} DESC NULLS LAST) AS rk, "
                                         f"{first} * 1.0 / sum({first}) OVER () AS share FROM ", 1)
            aggregates = [*aggregates, Aggregate("rk", aggregates[0].parts), Aggregate("share", aggregates[0].parts)]
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
