"""The release audit: brute force over small populations, and the named differencing attacks at the audit level."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit


def _rank(rows: list[list[Fraction]]) -> int:
    rows = [list(r) for r in rows]
    rank, columns = 0, len(rows[0]) if rows else 0
    for c in range(columns):
        pivot = next((i for i in range(rank, len(rows)) if rows[i][c] != 0), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for i in range(len(rows)):
            if i != rank and rows[i][c] != 0:
                factor = rows[i][c] / rows[rank][c]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[rank], strict=True)]
        rank += 1
    return rank


def small_sets_determined(released: list[set[int]], n: int, k: int) -> list[tuple[int, ...]]:
    """Every set T of entities (index 0 weighs nothing) with fewer than k entities on which some non-zero
    combination of the released sums is supported: rank(M) > rank(M without T's columns)."""
    if not released:
        return []
    matrix = [[Fraction(int(e in s)) for e in range(n)] for s in released]
    full = _rank(matrix)
    found = []
    for size in range(1, n + 1):
        for subset in combinations(range(n), size):
            if sum(1 for e in subset if e != 0) >= k:
                continue
            rest = [[row[e] for e in range(n) if e not in subset] for row in matrix]
            if _rank(rest) < full if rest and rest[0] else full > 0:
                found.append(subset)
    return found


def _cell(key: object, entities: set[int] | range, population: str = "p", measures: tuple[str, ...] = ("m",)
          ) -> AuditCell:
    return AuditCell(key, (AuditPart(population, BitMap(entities), measures),))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_set_of_fewer_than_k_entities_is_ever_determined(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 9), label="entities")
    k = data.draw(st.integers(2, 4), label="k")
    sets = data.draw(st.lists(st.sets(st.integers(0, n - 1), min_size=1), min_size=1, max_size=14), label="sets")
    population = PopulationAudit("p", k)
    released: list[set[int]] = []
    for run, entities in enumerate(sets):
        result = audit({"p": population}, [_cell(run, entities)])
        if run not in result.suppressed:
            released.append(entities)
    assert small_sets_determined(released, n, k) == []


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_one_run_of_many_cells_is_audited_as_a_whole(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 8), label="entities")
    k = data.draw(st.integers(2, 3), label="k")
    sets = data.draw(st.lists(st.sets(st.integers(0, n - 1), min_size=1), min_size=1, max_size=10), label="sets")
    population = PopulationAudit("p", k)
    result = audit({"p": population}, [_cell(i, s) for i, s in enumerate(sets)])
    released = [s for i, s in enumerate(sets) if i not in result.suppressed]
    assert small_sets_determined(released, n, k) == []
