"""Quality self-check at registration (质量自查): the profile of a version and its declared expectations.

Computed with DuckDB over the normalized Parquet file, out of core, in a few aggregate passes. The profile
never holds a value of a column that is not `open`: min/max and failing examples are given for `open`
columns only; everything else is counts and rates. See docs/registration.md for why this is not a
general-purpose data-validation library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import duckdb

from sandbox.catalogue.errors import InvalidImportOptions
from sandbox.catalogue.import_types import arrow_type_for, duckdb_type_name
from sandbox.errors import InvalidInput

PROFILE_FORMAT = 1
EXACT_DISTINCT_ROWS = 1_000_000  # above this many rows, distinct counts are HyperLogLog estimates
MAX_EXAMPLES = 5
MAX_IN_SET_VALUES = 10_000


class UpdateFrequency(StrEnum):
    """How often a provider declares it updates a dataset."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"
    IRREGULAR = "irregular"
    STATIC = "static"


# The longest gap, in days, between the newest data and the registration for data to count as fresh.
INTERVAL_DAYS: dict[UpdateFrequency, int | None] = {
    UpdateFrequency.DAILY: 1, UpdateFrequency.WEEKLY: 7, UpdateFrequency.MONTHLY: 31,
    UpdateFrequency.QUARTERLY: 92, UpdateFrequency.YEARLY: 366, UpdateFrequency.IRREGULAR: None,
    UpdateFrequency.STATIC: None,
}


class ExpectationKind(StrEnum):
    """What a steward may declare about a column."""

    NOT_NULL = "not_null"  # no value is null
    UNIQUE = "unique"  # no non-null value occurs twice
    IN_SET = "in_set"  # every non-null value is one of `values` (a domain list)
    RANGE = "range"  # every non-null value is >= `min` and/or <= `max`
    MATCHES = "matches"  # every non-null value, as text, fully matches the RE2 `pattern`


_PARAMS: dict[ExpectationKind, frozenset[str]] = {
    ExpectationKind.NOT_NULL: frozenset(), ExpectationKind.UNIQUE: frozenset(),
    ExpectationKind.IN_SET: frozenset({"values"}), ExpectationKind.RANGE: frozenset({"min", "max"}),
    ExpectationKind.MATCHES: frozenset({"pattern"}),
}
_ORDERED = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE|"
                      r"DECIMAL\(\d+,\d+\)|DATE|TIME|TIMESTAMP.*|VARCHAR)$")
_TIME_TYPES = re.compile(r"^(DATE|TIMESTAMP.*)$")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def declared_type(name: str, type_name: str) -> str:
    """The canonical DuckDB name of a column's declared type (as `column_types` accepts it)."""
    try:
        return duckdb_type_name(arrow_type_for(type_name), column=name)
    except InvalidImportOptions as exc:
        raise InvalidInput(f"column {name}: declared_type {exc.message}", code="invalid_declared_type",
                           column=name) from None


def parse_expectations(raw: Sequence[Mapping[str, Any]], columns: Sequence[Mapping[str, Any]]
                       ) -> list[dict[str, Any]]:
    """Validate declared expectations against the version's columns; returns them normalized."""
    by_name = {c["name"]: c for c in columns}
    con = duckdb.connect()
    out: list[dict[str, Any]] = []
    try:
        for i, item in enumerate(raw):
            where = f"expectations[{i}]"
            try:
                kind = ExpectationKind(str(item.get("kind")))
            except ValueError:
                raise InvalidInput(f"{where}: kind must be one of {', '.join(ExpectationKind)}",
                                   code="invalid_expectation", index=i) from None
            column = item.get("column")
            if column not in by_name:
                raise InvalidInput(f"{where}: column {column!r} is not a column of the file",
                                   code="invalid_expectation", index=i)
            extra = set(item) - {"kind", "column"} - _PARAMS[kind]
            if extra:
                raise InvalidInput(f"{where}: {kind.value} takes no {', '.join(sorted(extra))}",
                                   code="invalid_expectation", index=i)
            typ = by_name[column]["type"]
            norm: dict[str, Any] = {"kind": kind.value, "column": column}
            try:
                if kind == ExpectationKind.IN_SET:
                    values = item.get("values")
                    if not isinstance(values, list) or not values or len(values) > MAX_IN_SET_VALUES:
                        raise InvalidInput(f"{where}: in_set needs a list of 1-{MAX_IN_SET_VALUES} values",
                                           code="invalid_expectation", index=i)
                    con.execute(f"SELECT CAST(? AS {typ}[])", [values]).fetchall()
                    norm["values"] = values
                elif kind == ExpectationKind.RANGE:
                    if item.get("min") is None and item.get("max") is None:
                        raise InvalidInput(f"{where}: range needs min, max or both", code="invalid_expectation",
                                           index=i)
                    if not _ORDERED.match(typ):
                        raise InvalidInput(f"{where}: range needs an ordered column; {column} is {typ}",
                                           code="invalid_expectation", index=i)
                    for bound in ("min", "max"):
                        if item.get(bound) is not None:
                            con.execute(f"SELECT CAST(? AS {typ})", [item[bound]]).fetchall()
                            norm[bound] = item[bound]
                elif kind == ExpectationKind.MATCHES:
                    pattern = item.get("pattern")
                    if not isinstance(pattern, str) or not pattern:
                        raise InvalidInput(f"{where}: matches needs a pattern", code="invalid_expectation",
                                           index=i)
                    con.execute("SELECT regexp_full_match('', ?)", [pattern]).fetchall()
                    norm["pattern"] = pattern
            except duckdb.Error as exc:
                raise InvalidInput(f"{where}: {kind.value} parameters do not fit column {column} ({typ}): "
                                   f"{str(exc).splitlines()[0]}", code="invalid_expectation", index=i) from None
            out.append(norm)
    finally:
        con.close()
    return out


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, datetime | date | Decimal):
        return value.isoformat() if not isinstance(value, Decimal) else str(value)
    return str(value)


@dataclass(frozen=True)
class ProfileInput:
    """What profiling needs to know about a version besides its file."""

    columns: Sequence[Mapping[str, Any]]  # stored column dicts: name, type, constraint, declared_type?
    expectations: Sequence[Mapping[str, Any]]
    update_frequency: UpdateFrequency
    freshness_column: str | None


def profile(parquet: Path, spec: ProfileInput, *, now: datetime,
            exact_distinct_rows: int = EXACT_DISTINCT_ROWS) -> dict[str, Any]:
    """The quality profile of a normalized Parquet file: per-column facts, duplicates, freshness, findings."""
    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        literal = "'" + str(parquet).replace("'", "''") + "'"
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({literal})")
        return _profile(con, spec, now, exact_distinct_rows)
    finally:
        con.close()


def _profile(con: duckdb.DuckDBPyConnection, spec: ProfileInput, now: datetime, exact_limit: int
             ) -> dict[str, Any]:
    cols = list(spec.columns)
    rows = int(con.execute("SELECT count(*) FROM t").fetchone()[0])  # type: ignore[index]
    exact = rows <= exact_limit
    exprs: list[str] = []
    for c in cols:
        q = _quote(c["name"])
        exprs += [f"count({q})", f"count(DISTINCT {q})" if exact else f"approx_count_distinct({q})"]
        target = c.get("declared_type") or c["type"]
        exprs.append(f"count(TRY_CAST({q} AS {target}))" if target != c["type"] else f"count({q})")
        if c.get("constraint") == "open":
            exprs += [f"min({q})", f"max({q})"]
    values = con.execute(f"SELECT {', '.join(exprs)} FROM t").fetchone() if cols else ()
    assert values is not None
    it = iter(values)
    columns_out: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for c in cols:
        non_null, distinct, conforming = int(next(it)), int(next(it)), int(next(it))
        entry: dict[str, Any] = {
            "name": c["name"], "type": c["type"], "declared_type": c.get("declared_type") or c["type"],
            "constraint": c.get("constraint"), "null_count": rows - non_null,
            "null_rate": round((rows - non_null) / rows, 6) if rows else None,
            "distinct": distinct, "distinct_exact": exact,
            "conformance": round(conforming / non_null, 6) if non_null else None,
            "nonconforming": non_null - conforming,
        }
        if c.get("constraint") == "open":
            entry["min"], entry["max"] = _json_value(next(it)), _json_value(next(it))
        columns_out.append(entry)
        if non_null - conforming:
            findings.append({"code": "type_nonconformance", "severity": "warning", "column": c["name"],
                             "message": f"{non_null - conforming} of {non_null} non-null values of {c['name']} "
                                        f"do not fit the declared type {entry['declared_type']}"})
    duplicates, dup_exact = _duplicates(con, cols, rows, exact)
    if duplicates:
        findings.append({"code": "duplicate_rows", "severity": "warning",
                         "message": f"{duplicates} rows repeat an earlier row exactly"})
    freshness = _freshness(con, spec, now)
    if freshness["status"] == "stale":
        findings.append({"code": "stale_data", "severity": "warning",
                         "message": f"the newest {spec.freshness_column} is older than a "
                                    f"{spec.update_frequency.value} update allows"})
    results = [_check(con, e, {c["name"]: c for c in cols}) for e in spec.expectations]
    for r in results:
        if not r["passed"]:
            findings.append({"code": "expectation_failed", "severity": "failed", "expectation": r["expectation"],
                             "message": f"{r['failing_rows']} of {r['checked_rows']} rows break "
                                        f"{_describe(r['expectation'])}"})
    return {"format": PROFILE_FORMAT, "profiled_at": now.astimezone(UTC).isoformat(), "row_count": rows,
            "duplicate_rows": duplicates, "duplicate_rows_exact": dup_exact, "columns": columns_out,
            "freshness": freshness, "expectations": results, "findings": findings}


def _duplicates(con: duckdb.DuckDBPyConnection, cols: Sequence[Mapping[str, Any]], rows: int, exact: bool
                ) -> tuple[int, bool]:
    if not cols or not rows:
        return 0, True
    names = ", ".join(_quote(c["name"]) for c in cols)
    if exact:
        distinct = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM t GROUP BY {names})").fetchone()
    else:  # distinct 64-bit row hashes: exact unless two different rows collide (p ~ rows^2 / 2^65)
        distinct = con.execute(f"SELECT count(DISTINCT hash({names})) FROM t").fetchone()
    assert distinct is not None
    return rows - int(distinct[0]), exact


def _freshness(con: duckdb.DuckDBPyConnection, spec: ProfileInput, now: datetime) -> dict[str, Any]:
    interval = INTERVAL_DAYS[spec.update_frequency]
    out: dict[str, Any] = {"update_frequency": spec.update_frequency.value, "expected_interval_days": interval,
                           "column": spec.freshness_column}
    if interval is None:
        out["status"] = "not_applicable" if spec.update_frequency == UpdateFrequency.STATIC else "unknown"
        return out
    if spec.freshness_column is None:
        out["status"] = "unknown"
        return out
    newest = con.execute(f"SELECT max({_quote(spec.freshness_column)}) FROM t").fetchone()
    value = newest[0] if newest else None
    if value is None:
        out["status"] = "unknown"
        return out
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        age = (now - aware).total_seconds() / 86400
    else:
        age = float((now.astimezone(UTC).date() - value).days)
    out["status"] = "stale" if age > interval else "fresh"
    column = next(c for c in spec.columns if c["name"] == spec.freshness_column)
    if column.get("constraint") == "open":  # the newest value is shown only when the column is open
        out["data_as_of"], out["age_days"] = _json_value(value), round(age, 2)
    return out


def freshness_column_check(name: str | None, columns: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a freshness column that does not exist or is not a date or timestamp."""
    if name is None:
        return
    col = next((c for c in columns if c["name"] == name), None)
    if col is None:
        raise InvalidInput(f"freshness_column {name} is not a column of the file", code="invalid_freshness_column")
    if not _TIME_TYPES.match(col["type"]):
        raise InvalidInput(f"freshness_column {name} must be a DATE or TIMESTAMP column; it is {col['type']}",
                           code="invalid_freshness_column")


def _violation(e: Mapping[str, Any], q: str, typ: str) -> tuple[str, list[Any]]:
    kind = ExpectationKind(e["kind"])
    if kind == ExpectationKind.IN_SET:
        return f"{q} IS NOT NULL AND NOT list_contains(CAST(? AS {typ}[]), {q})", [e["values"]]
    if kind == ExpectationKind.RANGE:
        parts, params = [], []
        if e.get("min") is not None:
            parts.append(f"{q} < CAST(? AS {typ})")
            params.append(e["min"])
        if e.get("max") is not None:
            parts.append(f"{q} > CAST(? AS {typ})")
            params.append(e["max"])
        return " OR ".join(parts), params
    if kind == ExpectationKind.MATCHES:
        return f"{q} IS NOT NULL AND NOT regexp_full_match(CAST({q} AS VARCHAR), ?)", [e["pattern"]]
    return f"{q} IS NULL", []


def _check(con: duckdb.DuckDBPyConnection, e: Mapping[str, Any], cols: Mapping[str, Mapping[str, Any]]
           ) -> dict[str, Any]:
    col = cols[e["column"]]
    q, typ = _quote(e["column"]), col["type"]
    kind = ExpectationKind(e["kind"])
    if kind == ExpectationKind.UNIQUE:
        row = con.execute(f"SELECT count({q}), count({q}) - count(DISTINCT {q}) FROM t").fetchone()
        examples_sql = f"SELECT {q} FROM t WHERE {q} IS NOT NULL GROUP BY {q} HAVING count(*) > 1 LIMIT ?"
        params: list[Any] = []
    else:
        where, params = _violation(e, q, typ)
        checked = "count(*)" if kind == ExpectationKind.NOT_NULL else f"count({q})"
        row = con.execute(f"SELECT {checked}, count(*) FILTER (WHERE {where}) FROM t", params).fetchone()
        examples_sql = f"SELECT DISTINCT {q} FROM t WHERE {where} LIMIT ?"
    assert row is not None
    checked_rows, failing = int(row[0]), int(row[1])
    out: dict[str, Any] = {"expectation": dict(e), "passed": failing == 0, "failing_rows": failing,
                           "checked_rows": checked_rows}
    if failing and col.get("constraint") == "open" and kind != ExpectationKind.NOT_NULL:
        out["examples"] = sorted((_json_value(r[0]) for r in con.execute(examples_sql, [*params, MAX_EXAMPLES])
                                  .fetchall()), key=str)
    return out


def _describe(e: Mapping[str, Any]) -> str:
    kind = ExpectationKind(e["kind"])
    col = e["column"]
    if kind == ExpectationKind.IN_SET:
        return f"{col} in a list of {len(e['values'])} values"
    if kind == ExpectationKind.RANGE:
        bounds = [f">= {e['min']}" if e.get("min") is not None else "", f"<= {e['max']}"
                  if e.get("max") is not None else ""]
        return f"{col} {' and '.join(b for b in bounds if b)}"
    if kind == ExpectationKind.MATCHES:
        return f"{col} matches {e['pattern']}"
    return f"{col} {kind.value.replace('_', ' ')}"
