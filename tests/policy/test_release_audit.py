"""The release audit: brute force over small populations, and the named differencing attacks at the audit level."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from policy.output import Reason
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


def _groups() -> dict[str, range]:
    """Four districts over entities 1..63; D4 has three people."""
    return {"D1": range(1, 21), "D2": range(21, 41), "D3": range(41, 61), "D4": range(61, 64)}


def test_a_rollup_total_and_its_children_cannot_isolate_the_small_child() -> None:
    groups = _groups()
    total = set(range(1, 64))
    cells = [_cell("total", total), *(_cell(name, groups[name]) for name in ("D1", "D2", "D3"))]
    result = audit({"p": PopulationAudit("p", 10)}, cells)  # D4 itself was already suppressed for k
    assert result.suppressed == {"D3": Reason.DIFFERENCE_AUDIT}  # totals first: the finest cell goes
    assert result.violations["D3"].weight == 3


def test_a_window_total_over_released_groups_cannot_isolate_a_suppressed_group() -> None:
    groups = _groups()
    population = PopulationAudit("p", 10)
    first = audit({"p": population}, [_cell(name, groups[name]) for name in ("D1", "D2", "D3")])
    assert first.suppressed == {}
    window = audit({"p": population}, [_cell("sum(sum(x)) OVER ()", set(range(1, 64)))])
    assert window.suppressed == {"sum(sum(x)) OVER ()": Reason.DIFFERENCE_AUDIT}


def test_leave_one_out_is_refused_whatever_the_run() -> None:
    population = PopulationAudit("p", 10)
    assert not audit({"p": population}, [_cell("all", range(1, 31))]).suppressed
    for person in (3, 4, 5):
        result = audit({"p": population}, [_cell(person, set(range(1, 31)) - {person})])
        assert result.suppressed == {person: Reason.DIFFERENCE_AUDIT}


def test_two_lists_that_differ_by_one_person_are_refused() -> None:
    population = PopulationAudit("p", 10)
    assert not audit({"p": population}, [_cell("a", range(1, 13))]).suppressed
    assert audit({"p": population}, [_cell("b", range(1, 12))]).suppressed == {"b": Reason.DIFFERENCE_AUDIT}


def test_separate_measures_and_populations_have_separate_ledgers() -> None:
    populations = {"p": PopulationAudit("p", 10), "q": PopulationAudit("q", 10)}
    assert not audit(populations, [_cell("a", range(1, 31), measures=("income",))]).suppressed
    assert not audit(populations, [_cell("b", range(1, 30), measures=("rows",))]).suppressed
    assert not audit(populations, [_cell("c", range(1, 30), population="q", measures=("income",))]).suppressed
    assert audit(populations, [_cell("d", range(1, 30), measures=("income", "rows"))]).suppressed == {
        "d": Reason.DIFFERENCE_AUDIT}


def test_the_largest_k_of_any_grant_that_released_applies() -> None:
    population = PopulationAudit("p", 5)
    assert not audit({"p": population}, [_cell("a", range(1, 31))]).suppressed
    assert not audit({"p": population}, [_cell("b", range(1, 24))]).suppressed  # differs by 7 >= 5
    population.raise_k(10)
    assert audit({"p": population}, [_cell("c", range(1, 25))]).suppressed == {"c": Reason.DIFFERENCE_AUDIT}


def test_past_the_work_budget_cells_are_suppressed_and_the_audit_stops() -> None:
    population = PopulationAudit("p", 3)
    keys = [f"{i:02d}" for i in range(1, 60)]  # equal sizes: audited in key order
    cells = [_cell(key, set(range(i, i + 40))) for i, key in enumerate(keys, start=1)]
    result = audit({"p": population}, cells, budget=300)
    exceeded = [key for key in keys if result.suppressed.get(key) == Reason.AUDIT_BUDGET_EXCEEDED]
    assert exceeded and exceeded == keys[keys.index(exceeded[0]):]  # from the first one on, every later cell
    # the ledger stayed consistent: more cells can still be audited with a fresh budget
    assert audit({"p": population}, [_cell("next", range(200, 260))]).suppressed == {}
