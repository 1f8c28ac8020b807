"""The release audit: brute force over small populations, and the named differencing attacks at the audit level."""

from __future__ import annotations

import itertools
import pickle
from fractions import Fraction
from itertools import combinations
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from policy.audit_ledger import Ledger
from policy.audit_rows import Budget, is_prime
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


def _determined_small_sets(released: list[set[int]], n: int, k: int) -> bool:
    """Slow reference (vectorised): does any set T of fewer than k entities (index 0 weighs nothing) carry a non-zero
    combination of the released sums, i.e. rank(M) > rank(M without T's columns)? Entries are 0/1 over at most 13
    columns, so floating-point ranks of these small matrices are exact."""
    if not released:
        return False
    matrix = np.array([[float(e in s) for e in range(n)] for s in released])
    full = np.linalg.matrix_rank(matrix)
    masks = [subset for size in range(1, n + 1) for subset in combinations(range(n), size)
             if sum(1 for e in subset if e != 0) < k]
    stacked = np.repeat(matrix[None, :, :], len(masks), axis=0)
    for i, subset in enumerate(masks):
        stacked[i][:, list(subset)] = 0.0
    return bool((np.linalg.matrix_rank(stacked) < full).any())


def _dense_ledger_run(rng: np.random.Generator) -> tuple[int, int]:
    """Release random dense sets over 13 entities one by one; the audit must refuse exactly what the reference
    refuses (no bound on this path). Returns (sets, refused)."""
    n, k = 13, int(rng.integers(2, 5))
    population = PopulationAudit("p", k)
    released: list[set[int]] = []
    refused = 0
    for i in range(int(rng.integers(4, 25))):
        entities = {e for e in range(n) if rng.random() < rng.choice((0.3, 0.5, 0.7))} or {1}
        result = audit({"p": population}, [_cell(i, entities)])
        reference = _determined_small_sets([*released, entities], n, k)
        if i in result.suppressed:
            assert result.violations[i].check != "search_bound"
            assert reference, f"refused {sorted(entities)} after {released} at k={k}, reference releases it"
            refused += 1
        else:
            assert not reference, f"released {sorted(entities)} after {released} at k={k}: a small set is determined"
            released.append(entities)
    return i + 1, refused


def test_on_dense_thirteen_entity_ledgers_the_audit_refuses_exactly_what_brute_force_refuses() -> None:
    rng = np.random.default_rng(20261128)
    totals = [_dense_ledger_run(rng) for _ in range(50)]
    assert sum(refused for _, refused in totals) > 0  # the property is not vacuous


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_audit_and_the_brute_force_reference_agree_on_every_release(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 11), label="entities")
    k = data.draw(st.integers(2, 4), label="k")
    sets = data.draw(st.lists(st.sets(st.integers(0, n - 1), min_size=1), min_size=1, max_size=16), label="sets")
    population = PopulationAudit("p", k)
    released: list[set[int]] = []
    for run, entities in enumerate(sets):
        result = audit({"p": population}, [_cell(run, entities)])
        expected = _determined_small_sets([*released, entities], n, k)
        assert (run in result.suppressed) == expected
        if not expected:
            released.append(entities)


def test_past_the_search_bound_a_strict_ledger_refuses_and_a_default_one_counts_the_set_unproven() -> None:
    population = PopulationAudit("p", 10)
    # a and b leave the small atoms A1 = 1..8, A2 = 9..16; d and e leave A3 = 31..38, A4 = 39..46: V_s holds
    # A1 + A2 and A3 + A4 (16 entities each)
    for key, entities in (("a", range(1, 17)), ("b", range(9, 31)), ("d", range(31, 47)), ("e", range(39, 61))):
        assert not audit({"p": population}, [_cell(key, entities)]).suppressed
    # f = A1 + (17..30) + A3 + (47..60) adds A1 + A3 - A2 - A4 to V_s: no combination isolates fewer than 10
    # entities (each needs two atoms, 16 entities), but proving it takes a search, and this one has no room
    f = {*range(1, 9), *range(17, 31), *range(31, 39), *range(47, 61)}
    population.ledger("m").exhaustive_tests = population.ledger("m").circuit_tests = 0
    population.ledger("m").strict = True
    result = audit({"p": population}, [_cell("f", f)])
    assert result.suppressed == {"f": Reason.DIFFERENCE_AUDIT}
    assert result.violations["f"].check == "search_bound"
    population.ledger("m").strict = False  # the default: accepted, and counted as unproven
    assert not audit({"p": population}, [_cell("f again", f)]).suppressed
    assert population.ledger("m").unproven == 1
    fresh = PopulationAudit("p", 10)  # with the default bound, the same releases are proven safe
    for key, entities in (("a", range(1, 17)), ("b", range(9, 31)), ("d", range(31, 47)), ("e", range(39, 61)),
                          ("f", f)):
        assert not audit({"p": fresh}, [_cell(key, entities)]).suppressed
    assert fresh.ledger("m").unproven == 0


def test_modular_errors_only_ever_refuse_even_with_a_tiny_prime() -> None:
    """L's arithmetic is modulo a secret random prime; with a prime as small as 2, 3 or 5 its answers are often
    wrong, and every wrong answer must end in a refusal (or an exact rebuild), never in a release that determines a
    small set. Dense random ledgers over 9 entities, checked against the brute-force reference."""
    rng = np.random.default_rng(61)
    unconfirmed = over_refused = 0
    for trial in range(40):
        n, k = 9, int(rng.integers(2, 4))
        population = PopulationAudit("p", k, modulus=int(rng.choice((2, 3, 5))))
        released: list[set[int]] = []
        for i in range(int(rng.integers(4, 16))):
            entities = {e for e in range(n) if rng.random() < rng.choice((0.3, 0.5, 0.7))} or {1}
            result = audit({"p": population}, [_cell(i, entities)])
            if i not in result.suppressed:
                assert not _determined_small_sets([*released, entities], n, k), f"trial {trial}: released {entities}"
                released.append(entities)
            elif not _determined_small_sets([*released, entities], n, k):
                over_refused += 1
        unconfirmed += population.ledger("m").unconfirmed
    assert unconfirmed > 0 and over_refused > 0  # the tiny primes did err, and their errors were refusals


def test_the_default_ledger_computes_modulo_a_secret_31_bit_prime() -> None:
    first, second = PopulationAudit("p", 10).ledger("m"), PopulationAudit("p", 10).ledger("m")
    assert first.modulus is not None and first.modulus.bit_length() == 31 and is_prime(first.modulus)
    assert first.modulus != second.modulus  # drawn per ledger
    assert PopulationAudit("p", 10, modulus=None).ledger("m").modulus is None  # exact arithmetic on request


def test_a_strict_population_makes_strict_ledgers_and_can_be_switched() -> None:
    population = PopulationAudit("p", 10, strict=True)
    assert population.ledger("m").strict
    population.strict = False
    assert not population.ledger("m").strict and not population.ledger("n").strict


def test_a_pickled_population_decides_exactly_as_the_original() -> None:
    """Snapshots pickle the ledgers with L packed into arrays; the restored ledger must go on deciding the same."""
    rng = np.random.default_rng(5)
    population = PopulationAudit("p", 3)
    released: list[set[int]] = []
    for r in range(8):
        entities = {int(e) for e in rng.choice(40, int(rng.integers(5, 25)), replace=False)}
        if not audit({"p": population}, [_cell(r, entities)]).suppressed:
            released.append(entities)
    restored = pickle.loads(pickle.dumps(population))
    assert restored.ledger("m").modulus == population.ledger("m").modulus
    refused = 0
    for r in range(8):
        fresh = {int(e) for e in rng.choice(40, int(rng.integers(5, 25)), replace=False)}
        leave_one_out = released[r % len(released)] - {min(released[r % len(released)])}
        cells = [_cell(("fresh", r), fresh), _cell(("loo", r), leave_one_out)]
        first, second = audit({"p": population}, cells), audit({"p": restored}, cells)
        assert first.suppressed == second.suppressed
        refused += len(first.suppressed)
    assert refused > 0  # the comparison covers refusals too
    assert {p: (e.row, e.y) for p, e in restored.ledger("m").lrows.items()} == {
        p: (e.row, e.y) for p, e in population.ledger("m").lrows.items()}


def test_a_ledger_with_a_prime_too_large_for_int64_rows_decides_as_the_vectorized_one() -> None:
    """Snapshots written before the rows of L were vectorized hold a 61-bit prime: such a ledger reduces its rows in
    Python integers, and must decide exactly as one reduced in int64 arrays (modulo a 31-bit prime)."""
    rng = np.random.default_rng(31)
    big = PopulationAudit("p", 3, modulus=2305843009213693951)  # 2^61 - 1
    small = PopulationAudit("p", 3, modulus=2147483647)  # 2^31 - 1
    decided = 0
    blocks = [set(range(5 * b, 5 * b + 5)) for b in range(24)]  # large atoms, so that L fills up

    def released(r: int) -> set[int]:
        chosen = set().union(*(blocks[int(b)] for b in rng.choice(24, int(rng.integers(2, 12)), replace=False)))
        return chosen - {min(chosen)} if r % 7 == 6 else chosen  # now and then, a leave-one-out

    for r in range(60):
        cells = [_cell((r, c), released(r)) for c in range(int(rng.integers(1, 4)))]
        first, second = audit({"p": big}, cells), audit({"p": small}, cells)
        assert first.suppressed == second.suppressed, r
        decided += len(first.suppressed)
    assert decided > 0 and len(big.ledger("m").lrows) == len(small.ledger("m").lrows) > 10


def test_a_set_within_k_of_a_released_set_it_contains_or_is_contained_in_is_refused_as_a_complement() -> None:
    """Check 3 finds its candidates through each set's smallest entity and size: a released set inside the new one
    has its smallest entity there, and the new set's smallest entity lies in every released set containing it."""
    cases = [
        (range(1, 11), range(2, 10)),  # inside a released set, without its smallest entity
        (range(1, 11), range(1, 9)),  # inside, with it
        (range(3, 11), range(1, 11)),  # around a released set, without its smallest entity
        (range(1, 8), range(1, 10)),  # around, sharing the smallest entity
    ]
    for released, new in cases:
        ledger = PopulationAudit("p", 3).ledger("m")
        budget = Budget(1 << 40)
        assert ledger.try_add(BitMap(released), budget) is None
        ledger.commit()
        violation = ledger.try_add(BitMap(new), budget)
        assert violation is not None and (violation.check, violation.weight) == ("complement", 2), (released, new)
        ledger.rollback()


def test_a_released_sets_atoms_follow_every_later_split() -> None:
    """The atoms of each released set are kept from its release on and carried across later splits (a split atom
    lies inside the set or outside it); they must equal the atoms recomputed from its entities."""
    rng = np.random.default_rng(17)
    ledger = PopulationAudit("p", 2).ledger("m")
    for step in range(120):
        ledger.add_released(BitMap(int(e) for e in rng.choice(300, int(rng.integers(3, 60)), replace=False)))
        if step % 10 == 9:
            for index, released in enumerate(ledger.sets):
                kept = ledger._atoms_of_set(index)
                recomputed = np.unique(ledger.atom_of[np.frombuffer(released.to_array(), dtype=np.uint32)])
                assert kept.tolist() == recomputed.tolist(), (step, index)
    assert ledger._epoch > 30  # splits happened between the checks


def test_a_ledger_restored_from_a_snapshot_without_the_newer_indexes_decides_as_the_original() -> None:
    """Snapshots written before check 3's arrays (`_cards`, `_mins`) and the split log existed hold a sorted
    list of sizes instead; the restored ledger rebuilds what it lacks."""
    rng = np.random.default_rng(23)
    population = PopulationAudit("p", 3)
    for r in range(10):
        entities = {int(e) for e in rng.choice(50, int(rng.integers(8, 30)), replace=False)}
        audit({"p": population}, [_cell(r, entities)])
    ledger = population.ledger("m")
    state = pickle.loads(pickle.dumps(ledger.__getstate__()))  # (a shallow copy would share the lists)
    for name in ("_cards", "_mins", "_split_log", "_split_base"):
        del state[name]
    state["_sizes"] = sorted((len(s), i) for i, s in enumerate(ledger.sets))
    old = Ledger.__new__(Ledger)
    old.__setstate__(state)
    for r in range(10):
        released = ledger.sets[r % len(ledger.sets)]
        cells = [BitMap(released - BitMap([released.min()])), BitMap(int(e) for e in rng.choice(50, 20, replace=False))]
        for entities in cells:
            first, second = ledger.try_add(entities, Budget(1 << 40)), old.try_add(entities, Budget(1 << 40))
            assert first == second
            for each in (ledger, old):
                each.commit() if first is None else each.rollback()


def test_refinement_leaves_every_set_a_union_of_atoms_and_returns_exactly_its_atoms() -> None:
    """`_split` recognises a set that is already a union of atoms by its total (each atom it touches holds at least
    the members it has there, so equal totals mean every touched atom lies inside it); any other set splits."""
    rng = np.random.default_rng(41)
    ledger = PopulationAudit("p", 2).ledger("m")
    released: list[BitMap] = []
    blocks = [range(10 * b, 10 * b + 10) for b in range(30)]
    for step in range(150):
        if step % 3 == 0 and released:  # a union of earlier sets: nothing splits
            chosen = [released[int(i)] for i in rng.choice(len(released), int(rng.integers(1, 4)))]
            entities = BitMap.union(*chosen)
        elif step % 3 == 1:  # a union of blocks, often cutting earlier atoms
            entities = BitMap(e for b in rng.choice(30, int(rng.integers(1, 6)), replace=False) for e in blocks[b])
        else:
            entities = BitMap(int(e) for e in rng.choice(300, int(rng.integers(2, 80)), replace=False))
        atoms = ledger.refine(entities, Budget(1 << 40))
        members = np.frombuffer(entities.to_array(), dtype=np.uint32)
        assert sorted(atoms) == np.unique(ledger.atom_of[members]).tolist(), step
        for index, each in enumerate([*released, entities]):
            owners = ledger.atom_of[np.frombuffer(each.to_array(), dtype=np.uint32)]
            inside = np.bincount(owners, minlength=len(ledger.weight))
            touched = inside.nonzero()[0]
            assert (inside[touched] == ledger.count[touched]).all(), (step, index)  # every touched atom is inside
        released.append(entities)
    assert ledger.atoms > 60


def test_measures_that_shared_a_ledger_stop_sharing_it_when_a_cell_releases_only_one_of_them() -> None:
    """`_separate` returns at once only when every measure of the population receives the same sets."""
    population = PopulationAudit("p", 3)
    assert not audit({"p": population}, [_cell("a", range(1, 21), measures=("rows", "value"))]).suppressed
    assert population.ledger("rows") is population.ledger("value")
    assert not audit({"p": population}, [_cell("b", range(1, 41), measures=("value",))]).suppressed
    assert population.ledger("rows") is not population.ledger("value")
    # `rows` never released 1..40, so 1..39 differs from nothing it released by fewer than k entities
    assert not audit({"p": population}, [_cell("c", range(1, 40), measures=("rows",))]).suppressed
    assert audit({"p": population}, [_cell("d", range(1, 40), measures=("value",))]).suppressed == {
        "d": Reason.DIFFERENCE_AUDIT}


def test_spending_units_at_once_stops_and_raises_where_a_loop_of_single_units_would() -> None:
    """`Budget.spend_each(n)` stands for n rounds of `spend(1); check()` (check 4's candidate sets)."""
    from policy.audit_rows import BudgetExceeded

    for remaining in range(-3, 12):
        for units in range(0, 9):
            looped, at_once = Budget(remaining), Budget(remaining)
            raised = False
            try:
                for _ in range(units):
                    looped.spend(1)
                    looped.check()
            except BudgetExceeded:
                raised = True
            try:
                at_once.spend_each(units)
                assert not raised, (remaining, units)
            except BudgetExceeded:
                assert raised, (remaining, units)
            assert at_once.remaining == looped.remaining, (remaining, units)


def test_check_3_looks_at_every_released_set_within_k_of_the_new_sets_size_and_no_other() -> None:
    """The size window is a slice of the sets sorted by (cardinality, index): a released set whose size differs by
    1 to k-1 is compared, on either side; one k or more apart never makes a complement below k."""
    k = 5
    for difference, inside, at_top in itertools.product(range(1, k + 2), (True, False), (True, False)):
        ledger = PopulationAudit("p", k).ledger("m")
        base = BitMap(range(100, 140))
        wider = BitMap(range(100, 140 + difference) if at_top else range(100 - difference, 140))  # shares min or max
        ledger.add_released(wider if inside else base)
        violation = ledger.try_add(base if inside else wider, Budget(1 << 40))
        if difference < k:
            assert violation is not None and violation.check == "complement", (difference, inside, at_top)
            assert violation.weight == difference
        else:
            assert violation is None or violation.check != "complement", (difference, inside, at_top)
        ledger.rollback()


def test_the_size_index_of_check_3_follows_every_release_and_rollback() -> None:
    """`_by_card` holds cardinality << 32 | index for exactly the registered sets, sorted, after commits and
    rollbacks, and after a snapshot round trip; keys registered since it was last read are merged when it is read,
    including keys of pending sets that a rollback then removes (read before the rollback, or not), and a snapshot
    taken with keys not merged yet."""
    rng = np.random.default_rng(59)
    ledger = PopulationAudit("p", 3).ledger("m")
    unmerged = 0
    for step in range(80):
        entities = BitMap(int(e) for e in rng.choice(400, int(rng.integers(5, 40)), replace=False))
        violation = ledger.try_add(entities, Budget(1 << 40))
        if rng.random() < 0.3:
            ledger._by_card  # noqa: B018 - merged before the cell ends: a rollback then removes its key from the array
        ledger.commit() if violation is None and step % 4 else ledger.rollback()
        expected = sorted(len(s) << 32 | i for i, s in enumerate(ledger.sets))
        if step % 3 == 0:
            unmerged += bool(ledger._cards_added)
            restored = pickle.loads(pickle.dumps(ledger))  # (perhaps with keys not merged yet)
            assert restored._by_card.tolist() == expected, step
        assert ledger._by_card.tolist() == expected, step
    assert unmerged > 5
    restored = pickle.loads(pickle.dumps(ledger))
    assert restored._by_card.tolist() == ledger._by_card.tolist()
    assert restored._maxs[: len(ledger.sets)].tolist() == [s.max() for s in ledger.sets]


def test_check_4_finds_the_same_contained_sets_as_testing_every_candidate() -> None:
    """Check 4 tests only candidate sets that are smaller and hold the new set's largest entity (a set contained in
    it does); the union it covers must equal the one found by testing every set whose smallest entity is inside."""
    rng = np.random.default_rng(61)
    for trial in range(6):
        ledger = PopulationAudit("p", 2).ledger("m")
        blocks = [BitMap(range(10 * b, 10 * b + 10)) for b in range(40)]
        for b in range(40):  # many small released sets inside the sets tried below, and others across them
            ledger.add_released(blocks[b])
            if rng.random() < 0.3:
                ledger.add_released(BitMap(int(e) for e in rng.choice(400, 8, replace=False)))
        for _ in range(10):
            picked = rng.choice(40, int(rng.integers(18, 35)), replace=False)
            entities = BitMap.union(*(blocks[int(b)] for b in picked)) | BitMap([int(rng.integers(400, 403))])
            covered = BitMap()
            for other in ledger.sets:
                if other.min() in entities and len(other) < len(entities) and other.issubset(entities):
                    covered |= other
            rest = entities - covered
            found: list[BitMap] = []

            def spy(part: BitMap, *, found: list[BitMap] = found, original: Any = ledger._atoms_of,
                    **options: bool) -> tuple[int, ...]:
                found.append(part)
                return original(part, **options)  # type: ignore[no-any-return]

            ledger._atoms_of = spy  # type: ignore[method-assign]
            ledger.refine(entities, Budget(1 << 40))
            ledger._contained_complement(entities, Budget(1 << 40))
            del ledger._atoms_of
            if rest and len(rest) - (1 if 0 in rest else 0) < ledger.k:
                assert found == [rest], trial
            else:
                assert not found, trial


def test_markowitz_pivot_is_the_first_column_of_the_sort_by_row_count_then_atom() -> None:
    """`markowitz_place` picks the column fewest rows of L touch, the lowest atom among ties, as the lexicographic
    sort did: with many ties, atoms up to 2^32 - 1 and counts up to 2^31 - 1 (the fast key's limits), and past them
    (the sort itself)."""
    from policy.audit_ledger import markowitz_place

    rng = np.random.default_rng(61)
    for trial in range(500):
        top = int(rng.choice((50, 1 << 20, 1 << 32)))
        columns = rng.choice(top, int(rng.integers(1, 40)), replace=False).astype(np.int64)
        most = int(rng.choice((3, (1 << 31) - 1)))
        counts = rng.integers(max(0, most - 3), most + 1, len(columns)).astype(np.int64)  # many ties
        expected = int(np.lexsort((columns, counts))[0])
        assert markowitz_place(columns, counts, top, most) == expected, trial
        assert markowitz_place(columns, counts, (1 << 32) + 1, most) == expected, trial
