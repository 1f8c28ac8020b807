"""A run's sets prepared together (`policy.audit_batch`) decide exactly as the per-set path: every decision,
violation, budget charge and the ledgers they leave behind."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from policy import audit_batch, release_audit
from policy.audit_ledger import Ledger
from policy.audit_rows import Budget
from policy.output import Reason
from policy.release_audit import AuditCell, AuditPart, AuditResult, PopulationAudit, audit

PRIME = 2_147_483_647  # one prime for both twins, so that their arithmetic modulo it is the same


def _population(name: str, k: int, modulus: int = PRIME) -> PopulationAudit:
    """A population whose ledgers bound check 5 tightly (the same bounds in both twins: only the cost changes)."""
    population = PopulationAudit(name, k, modulus=modulus)
    new = population._new_ledger

    def bounded() -> Ledger:
        ledger = new()
        ledger.circuit_tests, ledger.exhaustive_tests = 64, 16
        return ledger

    population._new_ledger = bounded  # type: ignore[method-assign]
    return population


def _state(ledger: Ledger) -> dict[str, Any]:
    """Everything a ledger decides from, in comparable form."""
    count = len(ledger.sets)
    return {
        "sets": [sorted(s) for s in ledger.sets],
        "atom_of": ledger.atom_of[: ledger.size].tolist(), "weight": list(ledger.weight),
        "lrows": {p: (e.row, e.y, e.order) for p, e in ledger.lrows.items()},
        "vrows": ledger.vrows, "low": ledger._low, "order": ledger._order, "epoch": ledger._epoch,
        "colcount": ledger._colcount[: len(ledger.weight)].tolist(), "by_card": ledger._by_card.tolist(),
        "cards": ledger._cards[:count].tolist(), "mins": ledger._mins[:count].tolist(),
        "maxs": ledger._maxs[:count].tolist(), "by_minimum": ledger._by_minimum, "unproven": ledger.unproven,
        "unconfirmed": ledger.unconfirmed, "modulus": ledger.modulus, "size": ledger.size,
    }


def _population_state(population: PopulationAudit) -> dict[str, Any]:
    sharing = {m: sorted(n for n, other in population.ledgers.items() if other is ledger)
               for m, ledger in population.ledgers.items()}
    return {"ledgers": {m: _state(ledger) for m, ledger in population.ledgers.items()}, "sharing": sharing,
            "history": [(m, sorted(s)) for m, s in population.history]}


def _decisions(result: AuditResult) -> tuple[Any, ...]:
    return (result.suppressed, result.violations, [(a.population, a.measure, sorted(a.entities), a.key)
                                                   for a in result.accepted], result.spent)


def _random_set(rng: np.random.Generator, n: int, released: list[BitMap]) -> BitMap:
    """A random set shaped like an aggregate's cell: the entities of 1..n-1 (and sometimes 0) whose attributes
    (i mod 3, i // 3 mod 4, i // 12 mod 2) take chosen values; or one released before, equal (another object),
    with a few entities fewer or more."""
    choice = rng.random()
    if released and choice < 0.4:
        base = set(released[int(rng.integers(len(released)))])
        change = {int(e) for e in rng.choice(n, int(rng.integers(1, 4)), replace=False)}
        if choice < 0.15:
            return BitMap(base)
        entities = base - change if choice < 0.3 else base | change
        return BitMap(entities or {1})
    ids = np.arange(n)
    keep = ids > int(rng.random() < 0.1) - 1
    for attribute in (ids % 3, ids // 3 % 4, ids // 12 % 2):
        if rng.random() < 0.6:
            keep &= attribute == int(rng.integers(attribute.max() + 1))
    return BitMap(ids[keep & (ids > 0)].tolist() + ([0] if keep[0] else [])) or BitMap({1})


def _run(rng: np.random.Generator, n: int, released: list[BitMap], round_: int) -> list[AuditCell]:
    cells = []
    for i in range(int(rng.integers(1, 9))):
        entities = _random_set(rng, n, released)
        roll = rng.random()
        if roll < 0.1:  # a cell over two sets of one measure
            parts: tuple[AuditPart, ...] = (AuditPart("p", entities, ("m",)),
                                            AuditPart("p", _random_set(rng, n, released), ("m",)))
        elif roll < 0.2:  # a cell released for one measure only (its ledger stops being shared)
            parts = (AuditPart("p", entities, ("v",)),)
        elif roll < 0.25:  # a second population
            parts = (AuditPart("p", entities, ("m", "v")), AuditPart("q", entities, ("m",)))
        else:
            parts = (AuditPart("p", entities, ("m", "v")),)
        cells.append(AuditCell((round_, i), parts))
        released.append(entities)
    return cells


def _twin_runs(seed: int, *, n: int, k: int, rounds: int, modulus: int = PRIME) -> tuple[int, int]:
    """Replays the same random runs through the batch path and the per-set path; returns the cells refused and
    the dependencies left unconfirmed."""
    rng = np.random.default_rng(seed)
    twins = [{name: _population(name, k, modulus) for name in ("p", "q")} for _ in range(2)]
    released: list[BitMap] = []
    refused = 0
    for round_ in range(rounds):
        cells = _run(rng, n, released, round_)
        batch, single = audit(twins[0], cells, batch=True), audit(twins[1], cells, batch=False)
        assert _decisions(batch) == _decisions(single), f"seed {seed}, round {round_}"
        for name in ("p", "q"):
            assert _population_state(twins[0][name]) == _population_state(twins[1][name]), f"seed {seed} {round_}"
        refused += len(batch.suppressed)
    return refused, sum(ledger.unconfirmed for population in twins[0].values()
                        for ledger in {id(x): x for x in population.ledgers.values()}.values())


def test_random_runs_decide_and_leave_the_ledgers_exactly_as_the_per_set_path() -> None:
    refused = sum(_twin_runs(seed, n=100, k=int(2 + seed % 3), rounds=15)[0] for seed in range(100))
    assert refused > 0  # refusals (checks 0-5) are compared too, not only releases


def test_with_a_tiny_prime_unconfirmed_dependencies_are_refused_alike() -> None:
    """Modulo 2, 3 or 5 the modular arithmetic errs often: refusals for unconfirmed dependencies and exact rebuilds
    of a ledger mid-run must happen at the same cells in both paths."""
    unconfirmed = sum(_twin_runs(1000 + seed, n=14, k=2 + seed % 2, rounds=10, modulus=(2, 3, 5)[seed % 3])[1]
                      for seed in range(20))
    assert unconfirmed > 0


def test_a_small_work_budget_runs_out_at_the_same_cell() -> None:
    """The batch path charges the budget what the per-set path charges, at the same checks."""
    exceeded = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        twins = [_population("p", 2) for _ in range(2)]
        released: list[BitMap] = []
        for round_ in range(6):
            cells = [AuditCell((round_, i), (AuditPart("p", _random_set(rng, 30, released), ("m",)),))
                     for i in range(8)]
            released += [c.parts[0].entities for c in cells]
            budget = int(rng.integers(5, 400))
            batch, single = (audit({"p": t}, cells, budget=budget, batch=b) for t, b in zip(twins, (True, False),
                                                                                            strict=True))
            assert _decisions(batch) == _decisions(single)
            assert _population_state(twins[0]) == _population_state(twins[1])
            exceeded += Reason.AUDIT_BUDGET_EXCEEDED in batch.suppressed.values()
    assert exceeded > 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_run_of_sets_is_decided_alike_with_and_without_preparing_it(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 12), label="entities")
    k = data.draw(st.integers(2, 4), label="k")
    runs = data.draw(st.lists(st.lists(st.sets(st.integers(0, n - 1), max_size=n), min_size=1, max_size=8),
                              min_size=1, max_size=5), label="runs")
    twins = [_population("p", k) for _ in range(2)]
    for r, sets in enumerate(runs):
        cells = [AuditCell((r, i), (AuditPart("p", BitMap(s), ("m",)),)) for i, s in enumerate(sets)]
        batch, single = audit({"p": twins[0]}, cells, batch=True), audit({"p": twins[1]}, cells, batch=False)
        assert _decisions(batch) == _decisions(single)
        assert _population_state(twins[0]) == _population_state(twins[1])


def test_a_hint_is_made_only_for_new_sets_and_finds_check_3s_window() -> None:
    """`prepare` skips sets the ledger holds, and its window count and candidates are those of the sets released
    before the run (in (size, index) order)."""
    ledger = Ledger(3, modulus=PRIME)
    released = [BitMap(range(1, 21)), BitMap(range(1, 23)), BitMap(range(2, 20)), BitMap(range(30, 50))]
    for entities in released:
        ledger.add_released(entities)
    known, grown, other = BitMap(range(1, 21)), BitMap(range(1, 22)), BitMap(range(60, 70))
    hints = audit_batch.prepare(ledger, [known, grown, other])
    assert set(hints) == {id(grown), id(other)}
    hint = hints[id(grown)]
    # window |S'| - 21 in (-3, 3): sizes 20 (1..20), 22 (1..22) and 20 (30..49); 18 (2..19) lies outside it
    assert hint.window == 3
    assert hint.candidates == [(20, 0), (22, 1)]  # 30..49 has its smallest entity outside the set
    assert hint.atoms is None  # 21 splits the atom 21..22
    assert hints[id(other)].atoms is None  # entities the ledger never saw lie in atom 0
    inside = BitMap([1, 20])  # (one atom: 1 and 20 lie in 1..20 and 1..22 only)
    assert audit_batch.prepare(ledger, [inside, other])[id(inside)].atoms.tolist() == [ledger.atom_of[1]]


def test_the_shape_index_of_has_follows_every_release_and_rollback() -> None:
    """`has` looks a set up by (size, smallest, largest entity): the index holds exactly the registered sets after
    commits and rollbacks and after a snapshot round trip, and `has` answers as a scan of every set would."""
    rng = np.random.default_rng(67)
    ledger = PopulationAudit("p", 3).ledger("m")
    seen: list[BitMap] = []
    for step in range(80):
        if seen and step % 3 == 0:
            entities = BitMap(seen[int(rng.integers(len(seen)))])
        else:
            entities = BitMap(int(e) for e in rng.choice(400, int(rng.integers(5, 40)), replace=False))
        seen.append(entities)
        violation = ledger.try_add(entities, Budget(1 << 40))
        ledger.commit() if violation is None and step % 4 else ledger.rollback()
        expected: dict[int, list[int]] = {}
        for index, released in enumerate(ledger.sets):
            expected.setdefault(len(released) << 64 | released.min() << 32 | released.max(), []).append(index)
        assert ledger._by_shape == expected, step
        assert [ledger.has(s) for s in seen] == [s in ledger.sets for s in seen], step
    restored = pickle.loads(pickle.dumps(ledger))
    assert restored._by_shape == ledger._by_shape


def test_a_single_part_cells_additions_and_separation_are_those_of_the_general_path() -> None:
    """`_single_part_adds` (a cell of one part, each measure once) makes the same additions, in the same order, and
    leaves the same measures sharing ledgers as `_adds`; it declines every other cell."""
    rng = np.random.default_rng(71)
    names = ("m", "v", "w")
    declined = 0
    for trial in range(400):
        twins = [PopulationAudit("p", 2, modulus=PRIME) for _ in range(2)]
        for step in range(int(rng.integers(0, 5))):  # earlier releases, some for a subset of the measures
            measures = [str(m) for m in rng.permutation(names)[: int(rng.integers(1, 4))]]
            for twin in twins:
                twin.replay([(m, BitMap({1, 2, step + 3})) for m in measures])
        measures = [str(m) for m in rng.permutation(names)[: int(rng.integers(1, 4))]]
        if rng.random() < 0.2:
            measures.append(measures[0])  # a measure twice: declined
        parts = (AuditPart("p", BitMap({1, 5}), tuple(measures)),)
        if rng.random() < 0.2:
            parts += (AuditPart("p", BitMap({2, 6}), ("m",)),)  # two parts: declined
        cell = AuditCell(trial, parts)
        fast = release_audit._single_part_adds({"p": twins[0]}, cell)
        general = release_audit._adds({"p": twins[1]}, cell)
        if fast is None:
            declined += 1
            assert len(parts) > 1 or len(set(measures)) < len(measures), trial
            continue

        def shape(adds: list[Any], population: PopulationAudit) -> list[tuple[Any, ...]]:
            return [(p is population, sorted(m for m, x in population.ledgers.items() if x is ledger), part)
                    for p, ledger, part in adds]

        assert shape(fast, twins[0]) == shape(general, twins[1]), trial
        assert _population_state(twins[0]) == _population_state(twins[1]), trial
    assert 40 < declined < 200
