"""The release audit: no combination of released figures may single anyone out, across queries, grants and operators.

A population's releases are kept as one `Ledger` per measure (policy/audit_ledger.py). A run's cells arrive as
`AuditCell`s: per population, an entity set and the measures released over it. `PopulationAudit.audit` decides
which cells may be released:

- cells are taken in a greedy order, **totals first, finer cells last**: by decreasing size of their largest
  entity set, then by their key (row, column). A cell that would make a small set determined is suppressed with
  `difference_audit`, so when a total and its children conflict, a child goes;
- a cell is released only when every ledger it touches accepts it (all or nothing, per cell);
- past the work budget, the cell being audited and every later one are suppressed with `audit_budget_exceeded`:
  the audit never hangs.

The state is in memory; the caller persists the accepted sets (sandbox/release.py stores them in the control
store) and replays them with `replay` after a restart. Policy code imports nothing from sandbox.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pyroaring import BitMap

from policy.audit_batch import Hint, prepare
from policy.audit_ledger import Ledger, Violation
from policy.audit_rows import Budget, BudgetExceeded
from policy.output import Reason

DEFAULT_BUDGET = 2_000_000


@dataclass(frozen=True)
class AuditPart:
    """One population's part of a cell: the entity set and the measures released over it."""

    population: str
    entities: BitMap
    measures: tuple[str, ...]


@dataclass(frozen=True)
class AuditCell:
    """A released cell (or any released figure): its key and its parts."""

    key: Hashable
    parts: tuple[AuditPart, ...]

    @property
    def size(self) -> int:
        """The size of its largest entity set (the greedy order's key)."""
        return max((len(p.entities) for p in self.parts), default=0)


@dataclass(frozen=True)
class Accepted:
    """A (measure, entity set) the audit added to a ledger, for the caller to persist."""

    population: str
    measure: str
    entities: BitMap
    key: Hashable


@dataclass
class AuditResult:
    """The audit's decision for one run."""

    suppressed: dict[Hashable, Reason] = field(default_factory=dict)
    violations: dict[Hashable, Violation] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)
    spent: int = 0


class PopulationAudit:
    """The ledgers of one population (one per measure), audited at the population's k.

    Measures released over the same sequence of entity sets have the same linear system, so they share one
    `Ledger` object; the first release that treats them differently gives each its own copy (`_separate`).
    """

    def __init__(self, population: str, k: int, *, strict: bool = False, modulus: int | None = 0) -> None:
        self.population = population
        self.k = k
        self._strict = strict  # past the search bound, refuse (see Ledger)
        self.modulus = modulus  # each new ledger's arithmetic over large atoms (0: a secret random prime; see Ledger)
        self.stored_k = 0  # the largest k recorded in the store for this population (the caller keeps it)
        self.ledgers: dict[str, Ledger] = {}
        self.history: list[tuple[str, BitMap]] = []  # (measure, set) in release order, for rebuilding at a new k

    @property
    def strict(self) -> bool:
        """Whether a set whose search reaches its bound is refused (True) or accepted unproven (False)."""
        return self._strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._strict = value
        for ledger in self.ledgers.values():
            ledger.strict = value

    def ledger(self, measure: str) -> Ledger:
        """The ledger of one measure (created empty)."""
        ledger = self.ledgers.get(measure)
        if ledger is None:
            ledger = self.ledgers[measure] = self._new_ledger()
        return ledger

    def _new_ledger(self) -> Ledger:
        return Ledger(self.k, strict=self._strict, modulus=self.modulus)

    def _separate(self, releases: Mapping[str, tuple[int, ...]]) -> None:
        """Before a cell: measures that share a ledger but receive different sets in it (`releases`: measure → the
        cell's parts it is released over; measures not in the cell receive none) stop sharing it."""
        if releases.keys() == self.ledgers.keys() and len(set(releases.values())) == 1:
            return  # every measure receives the same sets: no ledger is shared by measures treated differently
        fresh: dict[tuple[int, ...], Ledger] = {}
        for measure, parts in releases.items():
            if measure not in self.ledgers:
                self.ledgers[measure] = fresh.setdefault(parts, self._new_ledger())
        groups: dict[int, dict[tuple[int, ...], list[str]]] = {}
        for measure, ledger in self.ledgers.items():
            groups.setdefault(id(ledger), {}).setdefault(releases.get(measure, ()), []).append(measure)
        for by_parts in groups.values():
            if len(by_parts) < 2:
                continue
            keep = () if () in by_parts else next(iter(by_parts))
            for parts, measures in by_parts.items():
                if parts != keep:
                    copy = self.ledgers[measures[0]].copy()
                    for measure in measures:
                        self.ledgers[measure] = copy

    def raise_k(self, k: int) -> None:
        """Judge determinacy at a larger k from now on (the largest k of any grant that released)."""
        if k <= self.k:
            return
        self.k = k
        history, self.history, self.ledgers = self.history, [], {}
        self.replay(history)

    def replay(self, releases: Iterable[tuple[str, BitMap]]) -> None:
        """Add earlier releases without checks (they were checked when released). Consecutive releases of one set
        (the measures of one cell) are added once to the ledger they share."""
        batch: list[str] = []
        current: BitMap | None = None
        for measure, entities in releases:
            if current is not None and ((entities is not current and entities != current) or measure in batch):
                self._replay_one(batch, current)
                batch = []
            current = entities
            batch.append(measure)
            self.history.append((measure, entities))
        if current is not None:
            self._replay_one(batch, current)

    def _replay_one(self, measures: list[str], entities: BitMap) -> None:
        self._separate(dict.fromkeys(measures, (0,)))
        for ledger in {id(self.ledgers[m]): self.ledgers[m] for m in measures}.values():
            ledger.add_released(entities)

    @property
    def cells(self) -> int:
        """(measure, set) releases recorded."""
        return len(self.history)


def audit(populations: Mapping[str, PopulationAudit], cells: Sequence[AuditCell], *,
          budget: int = DEFAULT_BUDGET, batch: bool = True) -> AuditResult:
    """Decide which cells may be released (see module doc); accepted sets are added to the ledgers.

    With `batch` (the default), each ledger's new sets of the run are first prepared together
    (`policy.audit_batch.prepare`); the decisions are those of the per-set path (`batch=False`)."""
    result = AuditResult()
    work = Budget(budget)
    exhausted = False
    ordered = sorted(cells, key=lambda c: (-c.size, repr(c.key)))
    prepared: dict[int, tuple[Ledger, dict[int, Hint]]] = {}

    def hints(position: int, name: str, ledger: Ledger) -> dict[int, Hint]:
        """The hints of `ledger` (made at its first cell, for the parts of `name` in this and every later cell)."""
        made = prepared.get(id(ledger))
        if made is None or made[0] is not ledger:
            sets = [p.entities for c in ordered[position:] for p in c.parts if p.population == name]
            made = prepared[id(ledger)] = (ledger, prepare(ledger, sets))
        return made[1]

    for position, cell in enumerate(ordered):
        if exhausted:
            result.suppressed[cell.key] = Reason.AUDIT_BUDGET_EXCEEDED
            continue
        adds = _single_part_adds(populations, cell) or _adds(populations, cell)
        tentative: list[Ledger] = []
        violation: Violation | None = None
        try:
            if len(adds) > 1:  # a single set is refined by try_add itself
                for _, ledger, part in adds:
                    ledger.refine(part.entities, work)
            for _, ledger, part in adds:
                tentative.append(ledger)
                hint = hints(position, part.population, ledger).get(id(part.entities)) if batch else None
                violation = ledger.try_add(part.entities, work, hint)
                if violation is not None:
                    break
        except BudgetExceeded:
            _rollback(tentative)
            exhausted = True
            result.suppressed[cell.key] = Reason.AUDIT_BUDGET_EXCEEDED
            continue
        if violation is not None:
            _rollback(tentative)
            result.suppressed[cell.key] = Reason.DIFFERENCE_AUDIT
            result.violations[cell.key] = violation
            continue
        for ledger in tentative:
            ledger.commit()
        for part in cell.parts:
            population = populations[part.population]
            for measure in part.measures:
                population.history.append((measure, part.entities))
                result.accepted.append(Accepted(population.population, measure, part.entities, cell.key))
    result.spent = budget - work.remaining
    return result


def _adds(populations: Mapping[str, PopulationAudit], cell: AuditCell) -> list[tuple[PopulationAudit, Ledger,
                                                                                    AuditPart]]:
    """The (population, ledger, part) additions a cell makes, each ledger once per part, after the measures that
    shared a ledger but receive different sets in this cell stop sharing it (`PopulationAudit._separate`)."""
    releases: dict[str, dict[str, tuple[int, ...]]] = {}
    for index, part in enumerate(cell.parts):
        for measure in part.measures:
            by_measure = releases.setdefault(part.population, {})
            by_measure[measure] = (*by_measure.get(measure, ()), index)
    for name, by_measure in releases.items():
        populations[name]._separate(by_measure)
    adds: list[tuple[PopulationAudit, Ledger, AuditPart]] = []
    for part in cell.parts:
        population = populations[part.population]
        shared = {id(population.ledgers[m]): population.ledgers[m] for m in part.measures}
        adds += [(population, ledger, part) for ledger in shared.values()]
    return adds


def _single_part_adds(populations: Mapping[str, PopulationAudit],
                      cell: AuditCell) -> list[tuple[PopulationAudit, Ledger, AuditPart]] | None:
    """`_adds` for the usual cell, one part releasing each of its measures once, without its maps (the same
    additions in the same order, and the same separation); None for any other cell."""
    if len(cell.parts) != 1:
        return None
    part = cell.parts[0]
    measures = part.measures
    if not measures or len(set(measures)) != len(measures):
        return None
    population = populations[part.population]
    ledgers = population.ledgers
    if ledgers.keys() != set(measures):  # (otherwise `_separate` returns at once: every measure gets the set)
        population._separate(dict.fromkeys(measures, (0,)))
    first = ledgers[measures[0]]
    if all(ledgers[m] is first for m in measures):
        return [(population, first, part)]
    return [(population, ledger, part) for ledger in {id(ledgers[m]): ledgers[m] for m in measures}.values()]


def _rollback(tentative: list[Ledger]) -> None:
    for ledger in tentative:
        if ledger.pending:
            ledger.rollback()
