"""One ledger of the release audit: the released entity sets of one population and one measure, as linear algebra.

Each released cell is a sum Σ_{i∈S} x_i of per-entity unknowns over its entity set S. With M the matrix of released
sets (one row per set, one 0/1 column per entity), a combination of released figures determines something about a
set T of entities exactly when the row space of M holds a non-zero vector supported on T. The ledger keeps:

- the **atoms**: the coarsest partition of the entities in which every released set is a union of parts
  (`atom_of[entity]`; atom 0 holds the entities no released set contains) and each atom's *weight*, its number of
  entities (rows without an entity, index 0, weigh nothing). Rows of M are constant on atoms, so vectors are kept
  over atoms. Atoms of weight ≥ k are *large*, the others *small*;
- `L`: the released sets restricted to the large atoms, in (unreduced) row echelon form, each basis row with the
  combination `y` of released sets it stands for;
- `V`: a basis, in reduced row echelon form, of V_s = rowspace(M) ∩ R^{small atoms}, the vectors of the row space
  supported on small atoms only. A vector supported on fewer than k entities has only small atoms, so it lies in V_s.
  dim V_s = rank(M) − rank(M restricted to large atoms): a new set adds to V_s exactly when its restriction to the
  large atoms is a combination of earlier ones (its `y`), and the small part of that combination is the new vector.

L is computed modulo a secret random 31-bit prime per ledger (`modulus`; None computes it exactly), so that a row's
reduction runs on int64 arrays (`_reduce_mod`: a product of two residues fits in 63 bits). "Independent
modulo p" is exact (a rank modulo p never exceeds the rational rank); a dependency modulo p is lifted to the
rationals and confirmed exactly before it is used, and a set whose dependency is not confirmed is refused
(`unconfirmed`), so that the modular arithmetic can only ever cause a refusal. V_s and every check are exact
(`Fraction`). Rows over large atoms are short (a set of n entities has at most n/k large atoms) and V_s is usually
empty or small, so the work follows the structure of what was released rather than the number of entities.

A set may be added only if, afterwards, none of these finds a vector of the row space supported on atoms that total
fewer than k entities (docs/output-control.md says what they stop):

0. the set itself (its own weight);
1. every basis row of V_s (this covers every single atom, and every pair of atoms, whose total is determined);
2. every combination of two basis rows of V_s that cancels at least one shared column;
3. the complement S∖S' of the new set and every released set it contains or is contained in;
4. the part of the new set outside every released set it contains (rank test);
5. the lightest vector of each changed component of V_s, exactly through its circuits when they are few,
   otherwise by a search over unions of small atoms lighter than k (rank test, lightest first) of at most
   `EXHAUSTIVE_TESTS` candidates; past that bound a strict ledger refuses, a default one accepts and counts
   the set as `unproven` (see `_exhaustive`).

`try_add` returns the violation found, if any; `commit` or `rollback` then finalizes or undoes every set added since
the last commit. Atom splits are kept either way: a finer partition describes the same row space.
"""

from __future__ import annotations

import array
import copy
import heapq
import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from pyroaring import BitMap

from policy import audit_kernel
from policy.audit_batch import Hint
from policy.audit_rows import (
    Budget,
    Row,
    Value,
    as_row,
    axpy,
    axpy_mod,
    distinct,
    div,
    index_columns,
    kernel_vector,
    lift,
    pack_arrays,
    random_prime,
    rank,
    slices,
    unindex_columns,
)

EXHAUSTIVE_TESTS = 512  # candidate unions of atoms in the bounded search
CIRCUIT_TESTS = 4096  # choices of d-1 atoms when a component's circuits are enumerated
PRIME_BITS = 31  # size of each ledger's secret random prime (products of two residues fit in int64: numpy rows)
_NO_PIVOT = 1 << 62  # `Ledger._pivot_order` of a column that is no pivot of L
_ONE = 1


_ONES = np.ones(1024, dtype=np.int32)


def _ones(length: int) -> np.ndarray:
    """A read-only int32 array of `length` ones (views of one shared array: rows of L are never changed in place)."""
    global _ONES
    if length > len(_ONES):
        _ONES = np.ones(2 * length, dtype=np.int32)
        _ONES.flags.writeable = False
    return _ONES[:length]


_ONES.flags.writeable = False


def _shape(entities: BitMap) -> int:
    """A non-empty set's size, smallest and largest entity as one integer (equal sets have equal shapes)."""
    return len(entities) << 64 | entities.min() << 32 | entities.max()


def markowitz_place(columns: np.ndarray, counts: np.ndarray, atoms: int, rows: int) -> int:
    """The position in `columns` (distinct atoms below `atoms`, non-empty) of Markowitz's pivot: the column fewest
    rows of L touch (`counts`, per column, at most `rows`), the lowest atom among those. With atoms below 2^32 and
    counts below 2^31, the key count << 32 | atom orders the columns as the lexicographic sort by (count, atom)
    does, and its argmin is that sort's first entry, without sorting."""
    if atoms <= 1 << 32 and rows < 1 << 31:
        return int((counts << 32 | columns).argmin())
    return int(np.lexsort((columns, counts))[0])


class _SearchDone(Exception):
    """The bounded exhaustive search reached its number of candidates."""


class _Unconfirmed(Exception):
    """A dependency found modulo the ledger's prime could not be confirmed over the rationals."""


@dataclass(frozen=True)
class Violation:
    """Why a set may not be added: the small set of entities on which a combination of releases would be known."""

    check: str  # "own" | "basis_row" | "pair" | "complement" | "contained_complement" | "circuit" | "exhaustive"
    #             | "search_bound" | "unconfirmed" (a dependency modulo the prime that exact arithmetic did not confirm)
    weight: int  # entities in the support
    atoms: tuple[int, ...]

    def entities(self, ledger: Ledger) -> BitMap:
        """The entities of the violating support (for tests and explanations)."""
        members = np.flatnonzero(np.isin(ledger.atom_of[: ledger.size], np.array(self.atoms, dtype=np.int64)))
        return BitMap(array.array("I", members.astype(np.uint32).tobytes()))


class _LRow:
    """A row of L: its entries over large atoms (`row`) and the combination of released sets it stands for (`y`).

    With modular arithmetic a row at rest is kept as four arrays only (`arrays()`: keys and values of `row` and
    `y`), about a fifth of the memory of two dictionaries; `row` and `y` materialize dictionaries on demand, and a
    caller that changes them calls `touched()`. Arrays are never changed in place, so copies share them."""

    __slots__ = ("_row", "_y", "order", "packed")

    def __init__(self, row: Row | None, y: Row | None, order: int = 0,
                 packed: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        self._row, self._y, self.packed = row, y, packed
        self.order = order  # position in the echelon order: the row vanishes at the pivots of every lower order

    @property
    def row(self) -> Row:
        """Entries over large atoms (a dictionary, made from the arrays when needed)."""
        if self._row is None:
            assert self.packed is not None
            self._row = as_row(self.packed[0], self.packed[1])
        return self._row

    @row.setter
    def row(self, value: Row) -> None:
        self.y  # noqa: B018 - keep y before the arrays go
        self._row, self.packed = value, None

    @property
    def y(self) -> Row:
        """The combination of released sets (indexes into Ledger.sets) the row stands for."""
        if self._y is None:
            assert self.packed is not None
            self._y = as_row(self.packed[2], self.packed[3])
        return self._y

    @y.setter
    def y(self, value: Row) -> None:
        self.row  # noqa: B018 - keep row before the arrays go
        self._y, self.packed = value, None

    def touched(self) -> None:
        """`row` or `y` was changed in place: the arrays are stale."""
        self.row, self.y  # noqa: B018 - materialize both before the arrays go
        self.packed = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row keys, row values, y keys, y values) as arrays (int64 when made here from the dictionaries; as
        `Ledger._insert_packed` stores them, row keys int64 and the rest int32); the dictionaries are dropped
        (modular rows)."""
        if self.packed is None:
            row, y = self.row, self.y
            self.packed = (np.fromiter(row, dtype=np.int64, count=len(row)),
                           np.fromiter(row.values(), dtype=np.int64, count=len(row)),
                           np.fromiter(y, dtype=np.int64, count=len(y)),
                           np.fromiter(y.values(), dtype=np.int64, count=len(y)))
        self._row = self._y = None
        return self.packed

    def columns(self) -> np.ndarray:
        """The row's keys as an array (without making a dictionary)."""
        if self._row is None and self.packed is not None:
            return self.packed[0]
        return np.fromiter(self.row, dtype=np.int64, count=len(self.row))

    def clone(self) -> _LRow:
        """An independent copy (arrays shared: they are never changed in place)."""
        if self.packed is not None and self._row is None:
            return _LRow(None, None, self.order, self.packed)
        return _LRow(dict(self.row), dict(self.y), self.order)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _LRow) and (self.row, self.y, self.order) == (other.row, other.y, other.order)

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> tuple[Row | None, Row | None, int, Any]:
        return self._row, self._y, self.order, self.packed

    def __setstate__(self, state: tuple[Row | None, Row | None, int, Any]) -> None:
        self._row, self._y, self.order, self.packed = state


@dataclass
class _Undo:
    lrows: dict[int, _LRow | None] = field(default_factory=dict)  # pivot -> previous (None: did not exist)
    vrows: dict[int, Row | None] = field(default_factory=dict)


class Ledger:
    """The released sets of one (population, measure), audited at group size k."""

    def __init__(self, k: int, *, exhaustive_tests: int = EXHAUSTIVE_TESTS, strict: bool = False,
                 modulus: int | None = 0) -> None:
        self.k = k
        self.exhaustive_tests = exhaustive_tests
        self.circuit_tests = CIRCUIT_TESTS
        self.strict = strict  # past the search bound: refuse (True) or accept unproven (False, counted)
        # L's arithmetic: modulo this prime (0: a fresh secret random one), or exact (None); V is always exact
        self.modulus: int | None = random_prime(PRIME_BITS) if modulus == 0 else modulus
        self.unconfirmed = 0  # dependencies found modulo the prime that exact arithmetic did not confirm
        self._low = 0  # the lowest order given to a row of L (rows inserted first in the elimination order)
        self._epoch = 0  # incremented at every atom split (`_set_atoms` entries are brought up to date by the log)
        self._set_atoms: dict[int, tuple[int, np.ndarray]] = {}  # set index -> (epoch, its atoms, sorted)
        self._split_log: list[tuple[np.ndarray, np.ndarray]] = []  # per epoch: (atoms split, their new parts)
        self._split_base = 0  # the epoch `_split_log[0]` leads from
        self.unproven = 0  # sets accepted after a search that reached its bound
        self.atom_of = np.zeros(1024, dtype=np.int64)
        self.size = 0  # entity indexes seen: 0 .. size-1
        self.weight: list[int] = [0]  # atom 0: outside every released set (its weight is never used)
        self.count = np.zeros(1024, dtype=np.int64)  # members of each atom, rows without an entity included
        self._weights = np.zeros(1024, dtype=np.int64)  # `weight` as an array (kept in step by `_split`)
        self.lrows: dict[int, _LRow] = {}
        self.lcolumns: dict[int, set[int]] = {}  # column -> pivots of the rows touching it; read after `_lflush()`
        self._lpending: list[tuple[int, int, np.ndarray]] = []  # (+1 index / -1 unindex, pivot, columns) to apply
        self._colcount = np.zeros(1024, dtype=np.int64)  # column -> rows of L touching it (always up to date)
        self._pivot_order = np.full(1024, _NO_PIVOT, dtype=np.int64)  # column -> order of the row of L pivoted there
        self._scratch()
        self.vrows: dict[int, Row] = {}
        self.vcolumns: dict[int, set[int]] = {}
        self.sets: list[BitMap] = []
        self._cards = np.zeros(1024, dtype=np.int64)  # set index -> its cardinality (check 3's size window)
        self._mins = np.zeros(1024, dtype=np.uint32)  # set index -> its smallest entity (check 3's pre-filter)
        self._maxs = np.zeros(1024, dtype=np.uint32)  # set index -> its largest entity (check 3's pre-filter)
        # cardinality << 32 | set index of every set, sorted (check 3's size window): `_by_card`, the sorted array
        # merged with the keys registered since it was last read (merged once per run, not once per set)
        self._cards_sorted = np.zeros(0, dtype=np.int64)
        self._cards_added: list[int] = []
        self._minimums = BitMap()
        self._by_minimum: dict[int, list[int]] = {}
        self._by_shape: dict[int, list[int]] = {}  # _shape(set) -> indexes of the sets of that shape (`has`)
        self._undo: _Undo | None = None
        self._order = 0  # the highest order given to a row of L
        self._pending: list[int] = []
        self._changed: set[int] = set()  # V_s pivots changed by the current set

    # --- state ------------------------------------------------------------------------------------------------
    def small(self, atom: int) -> bool:
        """Whether an atom totals fewer than k entities."""
        return self.weight[atom] < self.k

    def support_weight(self, row: Row) -> int:
        """Entities in the support of a row."""
        return sum(self.weight[a] for a in row)

    @property
    def atoms(self) -> int:
        """Atoms inside at least one released set."""
        return len(self.weight) - 1

    @property
    def pending(self) -> bool:
        """Whether sets were added since the last commit or rollback."""
        return self._undo is not None

    # --- adding sets ------------------------------------------------------------------------------------------
    def refine(self, entities: BitMap, budget: Budget, members: np.ndarray | None = None) -> np.ndarray:
        """Split the atoms by `entities` (permanent: a finer partition describes the same row space and never
        creates a violation); return the atoms the set is the union of (sorted). A cell's sets are all refined
        before the first of them is added, so that a rollback restores rows over the current atoms."""
        if not entities:
            return np.zeros(0, dtype=np.int64)
        if members is None:
            members = np.frombuffer(entities.to_array(), dtype=np.uint32)  # sorted
        budget.spend(1 + len(members) // 1024)
        return self._split(members, budget)

    def try_add(self, entities: BitMap, budget: Budget, hint: Hint | None = None) -> Violation | None:
        """Add `entities` tentatively and check; the caller must then `commit()` or `rollback()`.

        Several sets may be added before one commit (a cell can release several sets of one measure), all refined
        first (`refine`); a rollback undoes all of them. Raises BudgetExceeded (the caller rolls back) when the
        budget runs out. `hint` is what `policy.audit_batch.prepare` computed for this set and this ledger earlier
        in the run; each part of it is used only while it still holds, so the outcome is the same without it.
        """
        budget.check()
        atoms: np.ndarray  # sorted
        large: np.ndarray | None = None  # its large atoms, when the hint holds them
        # the members, sorted (refinement and checks 3, 4)
        members = hint.members if hint is not None else np.frombuffer(entities.to_array(), dtype=np.uint32)
        if self._undo is None:
            if self.has(entities):
                return None  # a set released before: a union of atoms already, and the row space does not change
            if hint is not None and hint.atoms is not None and hint.epoch == self._epoch:
                # no atom split since the hint: the set is still the union of those atoms, and refinement would
                # change nothing; charge what it charges (`refine`, `_split`)
                budget.spend(1 + len(members) // 1024 + len(hint.atoms))
                atoms, large = hint.atoms, hint.large
            else:
                atoms = self.refine(entities, budget, members)  # (registers no set: `has` stays false)
            self._undo = _Undo()
            self._changed = set()
            if not entities:
                return None
        else:
            atoms = np.asarray(self._atoms_of(entities, refined=True), dtype=np.int64)
            if not entities or self.has(entities):
                return None  # an empty set, or a row M already has: the row space does not change
        budget.check()
        weight = len(entities) - (1 if 0 in entities else 0)
        complement = self._complements(entities, budget, members, hint)
        index = self._register(entities, atoms)
        if weight < self.k:
            return Violation("own", weight, tuple(atoms.tolist()))
        if complement is not None:
            return complement
        try:
            self._add_row(index, atoms, budget, large)
        except _Unconfirmed:
            self.unconfirmed += 1  # the set is refused: an error of the modular arithmetic only ever refuses
            return Violation("unconfirmed", weight, tuple(atoms.tolist()))
        budget.check()
        return (self._check(budget) or self._contained_complement(entities, budget, members)
                or (self._exhaustive(budget) if self._changed else None))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled state (snapshots): modular rows of L as flat arrays; column indexes and caches are rebuilt."""
        state = self.__dict__.copy()
        state["_set_atoms"], state["_split_log"], state["_split_base"] = {}, [], self._epoch
        state["lcolumns"] = state["vcolumns"] = state["_pivot_order"] = state["_lpending"] = None
        state["_colcount"] = state["_by_shape"] = None
        state["_cards_sorted"], state["_cards_added"] = None, []
        for name in ("_acc", "_pos", "_yacc", "_pcols", "_pvals", "_psets", "_pweights", "_pused", "_yused",
                     "_where", "_pool_dirty", "_touched", "_work", "_state"):
            state.pop(name, None)
        atoms = len(self.weight)
        state["atom_of"] = self.atom_of[: self.size].astype(np.int32 if atoms < 1 << 31 else np.int64)
        state["count"], state["_weights"] = self.count[:atoms].copy(), self._weights[:atoms].copy()
        if self.modulus is not None and self._undo is None:
            pivots = list(self.lrows)
            entries = [self.lrows[p] for p in pivots]
            arrays = [e.arrays() for e in entries]
            state["lrows"] = (np.array(pivots, dtype=np.int64), np.array([e.order for e in entries], dtype=np.int64),
                              pack_arrays([(a[0], a[1]) for a in arrays]),
                              pack_arrays([(a[2], a[3]) for a in arrays]))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled ledger (see __getstate__)."""
        packed = state["lrows"]
        if isinstance(packed, tuple):
            pivots, orders, rows, ys = packed
            rows = (rows[0], rows[1].astype(np.int64), rows[2])  # columns as numpy's index type (see _insert_packed)
            state["lrows"] = {pivot: _LRow(None, None, order, (*row, *y)) for pivot, order, row, y
                              in zip(pivots.tolist(), orders.tolist(), slices(*rows), slices(*ys), strict=True)}
        for name, least in (("atom_of", 1024), ("count", 1024), ("_weights", 1024)):
            array = state[name]
            grown = np.zeros(max(least, 2 * len(array)), dtype=np.int64)
            grown[: len(array)] = array
            state[name] = grown
        if "_mins" not in state:  # (older snapshots)
            sets = state["sets"]
            state["_mins"] = np.zeros(max(1024, 2 * len(sets)), dtype=np.uint32)
            state["_mins"][: len(sets)] = [entities.min() for entities in sets]
            state["_cards"] = np.zeros(max(1024, 2 * len(sets)), dtype=np.int64)
            state["_cards"][: len(sets)] = [len(entities) for entities in sets]
            state.pop("_sizes", None)
        if "_maxs" not in state:  # (older snapshots)
            state["_maxs"] = np.zeros(len(state["_mins"]), dtype=np.uint32)
            state["_maxs"][: len(state["sets"])] = [entities.max() for entities in state["sets"]]
        state.setdefault("_split_log", [])  # (older snapshots: no log, caches rebuilt from the sets)
        count = len(state["sets"])
        state.pop("_by_card", None)  # (older snapshots)
        state["_cards_sorted"] = np.sort(state["_cards"][:count] << 32 | np.arange(count, dtype=np.int64))
        state["_cards_added"] = []
        state.setdefault("_split_base", state["_epoch"])
        self.__dict__.update(state)
        self.lcolumns, self.vcolumns = {}, {}
        self._by_shape = {}
        for index, entities in enumerate(self.sets):
            self._by_shape.setdefault(_shape(entities), []).append(index)
        self._scratch()
        self._pivot_order = np.full(max(1024, 2 * len(self.weight)), _NO_PIVOT, dtype=np.int64)
        self._colcount = np.zeros(max(1024, 2 * len(self.weight)), dtype=np.int64)
        self._lpending = []
        for pivot, entry in self.lrows.items():
            self._lindex(pivot, entry.columns(), 1)
            self._pivot_order[pivot] = entry.order
        for pivot, vector in self.vrows.items():
            index_columns(self.vcolumns, pivot, vector)
        if self._vectorized:  # the pool of L's rows now, at load, rather than in the first audit after it
            self._reserve(len(self.weight))
            self._pool_flush()

    def copy(self) -> Ledger:
        """An independent copy (between cells: nothing pending)."""
        assert self._undo is None, "copy a ledger only between cells"
        return copy.deepcopy(self)

    @property
    def _by_card(self) -> np.ndarray:
        """cardinality << 32 | index of every registered set, sorted (the keys registered since the last read are
        merged in here, in one step)."""
        if self._cards_added:
            added = np.sort(np.array(self._cards_added, dtype=np.int64))
            self._cards_added = []
            by_card = self._cards_sorted
            self._cards_sorted = np.insert(by_card, by_card.searchsorted(added), added)
        return self._cards_sorted

    def has(self, entities: BitMap) -> bool:
        """Whether this exact set was already added (released, or pending in this cell)."""
        if not entities:
            return False
        same = self._by_shape.get(_shape(entities))
        return same is not None and any(self.sets[i] == entities for i in same)

    def add_released(self, entities: BitMap) -> None:
        """Add a set released earlier, without checks (they passed when it was released; checks change nothing)."""
        budget = Budget(1 << 62)
        atoms = self.refine(entities, budget)
        if entities and not self.has(entities):
            self._undo = None
            self._add_row(self._register(entities, atoms), atoms, budget)
        self.commit()

    def commit(self) -> None:
        """Keep the tentatively added sets."""
        self._undo = None
        self._pending = []
        self._changed = set()

    def rollback(self) -> None:
        """Undo the tentatively added sets (atom splits are kept: they describe the same row space)."""
        if self._undo is not None:
            for pivot, previous in self._undo.lrows.items():
                current = self._lpop(pivot)
                if current is not None:
                    self._lindex(pivot, current.columns(), -1)
                if previous is not None:
                    self._lput(pivot, previous)
                    self._lindex(pivot, previous.columns(), 1)
            for pivot, vprevious in self._undo.vrows.items():
                vcurrent = self.vrows.pop(pivot, None)
                if vcurrent is not None:
                    unindex_columns(self.vcolumns, pivot, vcurrent)
                if vprevious is not None:
                    self.vrows[pivot] = vprevious
                    index_columns(self.vcolumns, pivot, vprevious)
        for index in reversed(self._pending):
            self._unregister(index)
        self._undo = None
        self._pending = []
        self._changed = set()

    def _register(self, entities: BitMap, atoms: np.ndarray) -> int:
        """Record a set and its atoms (sorted, as `refine` returns them)."""
        index = len(self.sets)
        self.sets.append(entities)
        self._set_atoms[index] = (self._epoch, atoms)
        low = entities.min()
        if index >= len(self._mins):
            self._mins = np.concatenate((self._mins, np.zeros(len(self._mins), dtype=np.uint32)))
            self._cards = np.concatenate((self._cards, np.zeros(len(self._cards), dtype=np.int64)))
        if index >= len(self._maxs):
            self._maxs = np.concatenate((self._maxs, np.zeros(len(self._mins) - len(self._maxs), dtype=np.uint32)))
        self._mins[index], self._maxs[index], self._cards[index] = low, entities.max(), len(entities)
        self._cards_added.append(len(entities) << 32 | index)  # (merged into `_by_card` when it is next read)
        self._minimums.add(low)
        self._by_minimum.setdefault(low, []).append(index)
        self._by_shape.setdefault(_shape(entities), []).append(index)
        self._pending.append(index)
        return index

    def _unregister(self, index: int) -> None:
        entities = self.sets.pop(index)
        assert index == len(self.sets), "pending sets are the last ones"
        self._set_atoms.pop(index, None)
        key = len(entities) << 32 | index
        added = self._cards_added
        if key in added:
            added.remove(key)
        else:
            by_card = self._cards_sorted
            place = int(by_card.searchsorted(key))
            self._cards_sorted = np.concatenate((by_card[:place], by_card[place + 1:]))
        low = entities.min()
        shape = _shape(entities)
        same = self._by_shape[shape]
        same.remove(index)
        if not same:
            del self._by_shape[shape]
        holders = self._by_minimum[low]
        holders.remove(index)
        if not holders:
            del self._by_minimum[low]
            self._minimums.discard(low)

    # --- atoms ------------------------------------------------------------------------------------------------
    def _split(self, members: np.ndarray, budget: Budget) -> np.ndarray:
        """Refine the atoms by the set `members` (sorted); return the atoms the set is the union of, sorted."""
        top = int(members[-1]) + 1
        if top > len(self.atom_of):
            grown = np.zeros(max(top, 2 * len(self.atom_of)), dtype=np.int64)
            grown[: len(self.atom_of)] = self.atom_of
            self.atom_of = grown
        self.size = max(self.size, top)
        owners = self.atom_of[members]
        atoms = len(self.weight)
        self._reserve(atoms)
        # the atoms touched, sorted (`distinct` passes over the members only, never over every atom)
        touched = np.sort(distinct(owners, self._pos))
        budget.spend(len(touched))
        if touched[0] != 0 and int(self.count[touched].sum()) == len(members):
            # each touched atom holds at least the members it has here, so equal totals mean every touched atom lies
            # inside the set: a union of atoms already, nothing splits
            return touched
        counts = np.bincount(np.searchsorted(touched, owners), minlength=len(touched))
        whole = (counts == self.count[touched]) & (touched != 0)
        weighed = counts.copy()
        if members[0] == 0:  # the "no entity" index weighs nothing
            weighed[np.searchsorted(touched, owners[0])] -= 1
        inside_atoms = touched[whole]  # atoms entirely inside the set
        parted = touched[~whole]
        counts, weighed = counts[~whole], weighed[~whole]
        fresh = np.arange(atoms, atoms + len(parted), dtype=np.int64)
        if len(self.count) < atoms + len(parted):
            grown = np.zeros(max(2 * len(self.count), atoms + len(parted)), dtype=np.int64)
            grown[: len(self.count)] = self.count
            self.count = grown
        self.count[fresh] = counts
        self.count[parted] -= counts
        self.count[0] = 0
        splits: list[tuple[int, int, bool]] = []
        for atom, new, inside in zip(parted.tolist(), fresh.tolist(), weighed.tolist(), strict=True):
            splits.append((atom, new, self.small(atom)))
            self.weight.append(inside)
            if atom != 0:
                self.weight[atom] -= inside
        if len(self._weights) < len(self.weight):
            grown = np.zeros(max(2 * len(self._weights), len(self.weight)), dtype=np.int64)
            grown[: len(self._weights)] = self._weights
            self._weights = grown
        if len(parted):
            self._weights[fresh] = weighed
            self._weights[parted[parted != 0]] -= weighed[parted != 0]
        result = np.concatenate((inside_atoms, fresh))  # (sorted: new atoms are numbered above every other)
        if splits:
            self._epoch += 1
            self._split_log.append((parted, fresh))
            self._lflush()
            self._reserve(len(self.weight))
            place = np.minimum(np.searchsorted(parted, owners), len(parted) - 1)
            moved = parted[place] == owners
            self.atom_of[members[moved]] = fresh[place[moved]]
            leaving = [old for old, new, was_small in splits if old != 0 and self._split_columns(old, new, was_small,
                                                                                                 budget)]
            try:
                self._leave_l(leaving, budget)
            except _Unconfirmed:  # a row of L lost its last column but the dependency is not confirmed: go exact
                self.unconfirmed += 1
                self._rebuild_exact()
        return result

    def _rebuild_exact(self) -> None:
        """Recompute L and V from the released sets with exact rational arithmetic (only between cells, after a
        dependency found modulo the prime was not confirmed: the price of a prime that divides a determinant)."""
        assert not self._pending, "rebuild only between cells"
        self.modulus = None
        self.lrows, self.lcolumns, self.vrows, self.vcolumns = {}, {}, {}, {}
        self._pivot_order[:] = _NO_PIVOT
        self._colcount[:] = 0
        self._lpending = []
        self._order = self._low = 0
        budget = Budget(1 << 62)
        for index, entities in enumerate(self.sets):
            self._add_row(index, np.asarray(self._atoms_of(entities), dtype=np.int64), budget)

    def _split_columns(self, old: int, new: int, was_small: bool, budget: Budget) -> bool:
        """Atom `old` split off `new` (same column of M): duplicate or move the column in L (large atoms) or V
        (small atoms). Returns True when both parts are small and the column must leave L (`_leave_l`, done once
        every column is in place, so that new vectors of V_s are eliminated against complete rows)."""
        if was_small:  # both parts small: V rows get the same entry on the new part
            for pivot in list(self.vcolumns.get(old, ())):
                row = self.vrows[pivot]
                self._save_v(pivot)
                row[new] = row[old]
                self.vcolumns.setdefault(new, set()).add(pivot)
                self._changed.add(pivot)
            return False
        old_large, new_large = not self.small(old), not self.small(new)
        if self._lpending:  # a split before this one re-keyed a row
            self._lflush()
        holders = list(self.lcolumns.get(old, ()))  # (`_split` reserved the counts)
        budget.spend(len(holders))
        if old_large and new_large:
            self._colcount[new] += len(holders)
            for pivot in holders:
                self._save_l(pivot)
                self.lrows[pivot].row[new] = self.lrows[pivot].row[old]
                self.lrows[pivot].touched()
                self.lcolumns.setdefault(new, set()).add(pivot)
            return False
        if new_large:  # the large part is `new`: the column moves there
            self._colcount[new] += len(holders)
            self._colcount[old] -= len(holders)
            for pivot in holders:
                self._save_l(pivot)
                row = self.lrows[pivot].row
                row[new] = row.pop(old)
                self.lrows[pivot].touched()
                self.lcolumns[old].discard(pivot)
                self.lcolumns.setdefault(new, set()).add(pivot)
            if old in self.lrows:
                self._rekey_l(old, new)
            return False
        return not old_large  # old large, new small: `new` simply is not a column of L

    def _leave_l(self, atoms: list[int], budget: Budget) -> None:
        """Columns that became small leave L. Deleting a non-pivot column keeps the echelon form; a row that loses
        its pivot moves it to another of its (large) entries, or, with none left, adds a vector to V_s."""
        for atom in atoms:
            self._lflush()
            holders = list(self.lcolumns.pop(atom, ()))
            self._colcount[atom] = 0
            budget.spend(len(holders))
            for pivot in holders:
                if pivot != atom:
                    self._save_l(pivot)
                    del self.lrows[pivot].row[atom]
                    self.lrows[pivot].touched()
            if atom in self.lrows:
                self._save_l(atom)
                entry = self._lpop(atom)
                assert entry is not None
                del entry.row[atom]
                entry.touched()
                self._lindex(atom, entry.columns(), -1)
                self._reinsert_l(entry, budget)

    def _rekey_l(self, old: int, new: int) -> None:
        self._save_l(new)
        entry = self._lpop(old)
        assert entry is not None
        columns = entry.columns()
        self._lindex(old, columns, -1)
        self._lput(new, entry)
        self._lindex(new, columns, 1)

    # --- L: released sets over large atoms ---------------------------------------------------------------------
    def _add_row(self, index: int, atoms: np.ndarray, budget: Budget, large: np.ndarray | None = None) -> None:
        """Add released set `index`, the union of `atoms` (sorted), to L (or V); `large`, when given, is the
        large atoms among them (as computed here: a hint made at the current epoch)."""
        if large is None:
            large = atoms[(self._weights[atoms] >= self.k) & (atoms != 0)]
        if self._vectorized and len(large):
            # rows that need no reduction, without the general path's array copies (same pivot, order, arrays):
            # one with a column no row of L touches (the first such column, lowest order), or one that meets no
            # pivot of L (Markowitz's column: fewest rows, then lowest atom; `large` is sorted)
            self._reserve(len(self.weight))
            place, fresh, meets = audit_kernel.quick_place(large, self._colcount, self._pivot_order)
            if fresh or not meets:
                if fresh:
                    self._low -= 1
                else:
                    self._order += 1
                entry = _LRow(None, None, 0, None)
                ones = _ones(len(large))
                self._insert_packed(entry, large, ones, np.array([index], dtype=np.int32), ones[:1], place,
                                    self._low if fresh else self._order)
                return
        if self._vectorized:
            ones = np.ones(len(large), dtype=np.int64)
            entry = _LRow(None, None, 0, (large, ones, np.array([index], dtype=np.int64), np.ones(1, dtype=np.int64)))
        else:
            entry = _LRow(dict.fromkeys(large.tolist(), _ONE), {index: _ONE})
        self._reinsert_l(entry, budget)

    @property
    def _vectorized(self) -> bool:
        """Whether L is reduced in int64 arrays (a prime below 2^31; a snapshot may hold a larger one)."""
        return self.modulus is not None and self.modulus < 1 << 31

    def _reinsert_l(self, entry: _LRow, budget: Budget) -> None:
        """Reduce a row over large atoms against L; insert it, or turn the dependency into a vector of V_s.

        L is kept in (unreduced) row echelon form: each basis row vanishes at the pivots of every row of lower
        `order`. A row with an entry in a column no row of L touches is inserted unreduced, with the lowest order,
        pivoted there (every other row vanishes at that column). Otherwise it is reduced against the rows whose
        pivots it meets, in order (fill-in can only meet pivots of higher order), and inserted with the highest
        order; no existing row changes. The pivot is the row's entry in the column fewest rows of L touch
        (Markowitz's choice: it keeps fill-in low). Arithmetic is modulo the ledger's prime, or exact."""
        lrows, modulus = self.lrows, self.modulus
        self._reserve(len(self.weight))
        if self._vectorized:  # (a snapshot may hold a larger prime: the loop below)
            assert modulus is not None
            columns, values, sets, weights = entry.arrays()
            outcome, rcolumns, rvalues, rsets, rweights, place = self._reduce(columns, values, sets, weights, budget)
            if outcome == audit_kernel.FRESH:
                self._low -= 1
                self._insert_packed(entry, columns, values, sets, weights, place, self._low)
                return
            if outcome == audit_kernel.UNCHANGED:  # (it meets no pivot of L)
                if not len(columns):  # no large atom at all: the set itself is the dependency
                    rsets, rweights = sets, weights
                else:
                    self._order += 1
                    markowitz = markowitz_place(columns, self._colcount[columns], len(self.weight), len(lrows))
                    self._insert_packed(entry, columns, values, sets, weights, markowitz, self._order)
                    return
            elif outcome == audit_kernel.REDUCED:  # (scaled to 1 at its pivot already)
                self._order += 1
                self._insert_packed(entry, rcolumns, rvalues, rsets, rweights, place, self._order)
                return
            vector = self._dependency(as_row(rsets, rweights), budget)
            if vector:
                self._insert_v(vector, budget)
            return
        row, y = entry.row, entry.y
        keys = np.fromiter(row, dtype=np.int64, count=len(row))
        untouched = keys[self._colcount[keys] == 0]
        fresh = int(untouched[0]) if len(untouched) else None
        if fresh is not None:
            self._low -= 1
            self._insert_l(entry, fresh, self._low)
            return
        heap = [(lrows[a].order, a) for a in row if a in lrows]
        heapq.heapify(heap)
        while heap:
            _, atom = heapq.heappop(heap)
            factor = row.get(atom)
            if not factor:
                continue
            reducer = lrows[atom]
            for other in reducer.row:
                if other != atom and other in lrows and other not in row:
                    heapq.heappush(heap, (lrows[other].order, other))
            if modulus is None:
                axpy(row, -factor, reducer.row, budget)
                axpy(y, -factor, reducer.y, budget)
            else:
                axpy_mod(row, modulus - int(factor), reducer.row, modulus, budget)
                axpy_mod(y, modulus - int(factor), reducer.y, modulus, budget)
        if row:
            self._order += 1
            keys = np.fromiter(row, dtype=np.int64, count=len(row))
            markowitz = int(keys[np.lexsort((keys, self._colcount[keys]))[0]])  # fewest rows, then lowest atom
            self._insert_l(entry, markowitz, self._order)
            return
        vector = self._dependency(y, budget)
        if vector:
            self._insert_v(vector, budget)

    def _insert_packed(self, entry: _LRow, columns: np.ndarray, values: np.ndarray, sets: np.ndarray,
                       weights: np.ndarray, place: int, order: int) -> None:
        """`_insert_l` for a row given as arrays (modulo a prime below 2^31), pivoted at `columns[place]`."""
        assert self.modulus is not None
        pivot = int(columns[place])
        scale = int(values[place])
        if scale != 1:
            inverse = pow(scale, -1, self.modulus)
            values = np.multiply(values, inverse, dtype=np.int64) % self.modulus
            weights = np.multiply(weights, inverse, dtype=np.int64) % self.modulus
        # at rest, values, set indexes and residues as int32 (they fit below 2^31): half the memory; the columns
        # stay int64 (numpy's index type: an int32 index array is converted at every gather and scatter)
        entry.packed = (columns.astype(np.int64, copy=False), values.astype(np.int32, copy=False),
                        sets.astype(np.int32, copy=False), weights.astype(np.int32, copy=False))
        entry._row = entry._y = None
        entry.order = order
        self._save_l(pivot)
        self._lput(pivot, entry)
        self._lindex(pivot, entry.columns(), 1)

    def _scratch(self) -> None:
        """Empty accumulators for `audit_kernel.reduce_row` and an empty pool of L's rows (grown on demand; not
        pickled)."""
        self._acc: np.ndarray = np.zeros(0, dtype=np.int64)  # over atoms
        self._pos: np.ndarray = np.zeros(0, dtype=np.int64)  # over atoms (`distinct`)
        self._yacc: np.ndarray = np.zeros(0, dtype=np.int64)  # over released sets
        # the pool: the rows of L as slices of four flat arrays for `audit_kernel.reduce_row`, located by pivot
        # (`_where[:, pivot]`: start and length in `_pcols`/`_pvals`, start and length in `_psets`/`_pweights`;
        # length -1: absent), brought up to date by `_pool_flush` from `_pool_dirty`, the pivots whose rows were
        # put or saved for a change since (every change to a row of L is preceded by `_save_l` or `_lput` of its
        # pivot; a pivot taken out has no order in `_pivot_order`, so the kernel never reads its slot)
        self._pcols: np.ndarray = np.zeros(0, dtype=np.int64)
        self._pvals: np.ndarray = np.zeros(0, dtype=np.int32)
        self._psets: np.ndarray = np.zeros(0, dtype=np.int32)
        self._pweights: np.ndarray = np.zeros(0, dtype=np.int32)
        self._pused = self._yused = 0
        self._where: np.ndarray = np.full((4, 0), -1, dtype=np.int64)  # (`_reserve` grows it with the orders)
        self._pool_dirty: set[int] = set(getattr(self, "lrows", ()))
        self._touched: np.ndarray = np.zeros(1024, dtype=np.int64)  # reduce_row's scratch: columns written
        self._work: np.ndarray = np.zeros((6, 0), dtype=np.int64)  # its heap, pivots hidden, reducers (per atom)
        self._state: np.ndarray = np.zeros(8, dtype=np.int64)  # its counters between calls

    def _pool_flush(self) -> None:
        """Bring the pool up to date with the rows of L changed since the last flush: rows held as arrays are
        written (appended), rows being edited as dictionaries (atom splits) are marked absent, to be written only
        if a reduction meets them (`_reduce`), as arrays then."""
        if not self._pool_dirty:
            return
        lrows = self.lrows
        ready = []
        for pivot in self._pool_dirty:
            entry = lrows.get(pivot)
            if entry is not None and entry.packed is not None:
                ready.append(pivot)
            else:
                self._where[1, pivot] = -1
        self._pool_dirty = set()
        if ready:
            self._pool_put(ready)

    def _pool_put(self, pivots: list[int]) -> None:
        """Write the rows of L at `pivots` to the pool (appended), and keep them as views of it (no second copy;
        a slot of the pool is written once, and rows are never changed in place). When the pool is full it is
        rebuilt from every row of L held as arrays, with a third to spare (stale slots are dropped then)."""
        lrows = self.lrows
        arrays = [lrows[pivot].arrays() for pivot in pivots]
        need, yneed = sum(len(a[0]) for a in arrays), sum(len(a[2]) for a in arrays)
        if self._pused + need > len(self._pcols) or self._yused + yneed > len(self._psets):
            self._where[1] = -1
            kept = set(pivots)
            pivots = [p for p, e in lrows.items() if p in kept or e.packed is not None]
            arrays = [lrows[pivot].arrays() for pivot in pivots]
            need, yneed = sum(len(a[0]) for a in arrays), sum(len(a[2]) for a in arrays)
            size, ysize = need * 3 // 2 + 1024, yneed * 3 // 2 + 1024
            self._pcols, self._pvals = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int32)
            self._psets, self._pweights = np.zeros(ysize, dtype=np.int32), np.zeros(ysize, dtype=np.int32)
            self._pused = self._yused = 0
        pcols, pvals, psets, pweights, where = self._pcols, self._pvals, self._psets, self._pweights, self._where
        used, yused = self._pused, self._yused
        if len(arrays) > 8:  # (many rows: a snapshot just loaded, or the pool rebuilt)
            pcols[used: used + need] = np.concatenate([a[0] for a in arrays])
            pvals[used: used + need] = np.concatenate([a[1] for a in arrays])
            psets[yused: yused + yneed] = np.concatenate([a[2] for a in arrays])
            pweights[yused: yused + yneed] = np.concatenate([a[3] for a in arrays])
        for pivot, (columns, values, sets, weights) in zip(pivots, arrays, strict=True):
            length, ylength = len(columns), len(sets)
            if len(arrays) <= 8:  # (the usual case: the rows inserted since the last reduction)
                audit_kernel.pool_write(pcols, pvals, psets, pweights, where, pivot, used, yused, columns,
                                        values.astype(np.int32, copy=False), sets.astype(np.int32, copy=False),
                                        weights.astype(np.int32, copy=False))
            else:
                where[0, pivot], where[1, pivot], where[2, pivot], where[3, pivot] = used, length, yused, ylength
            lrows[pivot].packed = (pcols[used: used + length], pvals[used: used + length],
                                   psets[yused: yused + ylength], pweights[yused: yused + ylength])
            used += length
            yused += ylength
        self._pused, self._yused = used, yused

    def _reduce(self, columns: np.ndarray, values: np.ndarray, sets: np.ndarray, weights: np.ndarray,
                budget: Budget) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """`audit_kernel.reduce_row` over this ledger's L (the pool) and scratch arrays: a row of L that is not in
        the pool when the reduction meets it is written there (`_pool_put`), and the reduction goes on."""
        assert self.modulus is not None
        self._pool_flush()
        if len(self._yacc) < len(self.sets):
            self._yacc = np.zeros(max(1024, 2 * len(self.sets)), dtype=np.int64)
        if len(self._touched) < len(columns):
            self._touched = np.zeros(2 * len(columns), dtype=np.int64)
        values, sets, weights = (values.astype(np.int64, copy=False), sets.astype(np.int64, copy=False),
                                 weights.astype(np.int64, copy=False))
        state = self._state
        state[:] = 0
        try:
            while True:
                result = audit_kernel.reduce_row(
                    columns, values, sets, weights, self._colcount, self._pivot_order, self._where, self._pcols,
                    self._pvals, self._psets, self._pweights, self._acc, self._pos, self._yacc, self._work,
                    self._touched, state, self.modulus)
                if result[0] == audit_kernel.NEED:
                    self._pool_put([int(state[audit_kernel.ATOM])])
                elif result[0] == audit_kernel.GROW:
                    atom = int(state[audit_kernel.ATOM])
                    grown = np.zeros(2 * int(state[audit_kernel.USED] + self._where[1, atom]), dtype=np.int64)
                    grown[: len(self._touched)] = self._touched
                    self._touched = grown
                else:
                    return result
        finally:
            budget.spend(int(state[audit_kernel.SPENT]))

    def _reserve(self, columns: int) -> None:
        """Grow the dense accumulators of `audit_kernel.reduce_row`, the pivot orders, the pool's index and the
        column counts to `columns` atoms."""
        if len(self._acc) < columns:
            size = max(1024, 2 * columns)
            self._acc = np.zeros(size, dtype=np.int64)
            self._pos = np.zeros(size, dtype=np.int64)
        if len(self._pivot_order) < columns:
            grown = np.full(max(1024, 2 * columns), _NO_PIVOT, dtype=np.int64)
            grown[: len(self._pivot_order)] = self._pivot_order
            self._pivot_order = grown
        if self._where.shape[1] < len(self._pivot_order):
            where = np.full((4, len(self._pivot_order)), -1, dtype=np.int64)
            where[:, : self._where.shape[1]] = self._where
            self._where = where
            self._work = np.zeros((6, len(self._pivot_order)), dtype=np.int64)
        if len(self._colcount) < columns:
            counts = np.zeros(max(1024, 2 * columns), dtype=np.int64)
            counts[: len(self._colcount)] = self._colcount
            self._colcount = counts

    def _lindex(self, pivot: int, columns: np.ndarray, sign: int) -> None:
        """Count the row pivoted at `pivot` in (+1) or out of (-1) its `columns`; `lcolumns` follows at `_lflush`."""
        if len(columns):
            self._reserve(len(self.weight))  # (columns are atoms)
            audit_kernel.count_columns(self._colcount, columns, sign)
            self._lpending.append((sign, pivot, columns))

    def _lflush(self) -> None:
        """Bring `lcolumns` up to date (only atom splits read it; inserting rows only counts)."""
        for sign, pivot, columns in self._lpending:
            if sign > 0:
                for atom in columns.tolist():
                    self.lcolumns.setdefault(atom, set()).add(pivot)
            else:
                for atom in columns.tolist():
                    holders = self.lcolumns.get(atom)
                    if holders is not None:
                        holders.discard(pivot)
        self._lpending = []

    def _lput(self, pivot: int, entry: _LRow) -> None:
        """Put a row of L at its pivot (keeping `_pivot_order`)."""
        self.lrows[pivot] = entry
        self._reserve(pivot + 1)
        self._pivot_order[pivot] = entry.order
        self._pool_dirty.add(pivot)

    def _lpop(self, pivot: int) -> _LRow | None:
        """Take the row of L pivoted at `pivot` out (None when there is none)."""
        entry = self.lrows.pop(pivot, None)
        if entry is not None:
            self._pivot_order[pivot] = _NO_PIVOT
            self._pool_dirty.discard(pivot)
        return entry

    def _insert_l(self, entry: _LRow, pivot: int, order: int) -> None:
        row, y = entry.row, entry.y
        scale = row[pivot]
        if scale != 1:
            if self.modulus is None:
                for key in row:
                    row[key] = div(row[key], scale)
                for key in y:
                    y[key] = div(y[key], scale)
            else:
                modulus = self.modulus
                inverse = pow(int(scale), -1, modulus)
                for key in row:
                    row[key] = row[key] * inverse % modulus
                for key in y:
                    y[key] = y[key] * inverse % modulus
        entry.order = order
        entry.touched()
        self._save_l(pivot)
        self._lput(pivot, entry)
        if self.modulus is not None:
            entry.arrays()  # at rest as arrays only (and the column log below shares its keys)
        self._lindex(pivot, entry.columns(), 1)

    def _dependency(self, y: Row, budget: Budget) -> Row:
        """The vector of V_s a dependency of L stands for: the combination `y` of released sets, which vanishes on
        the large atoms, over the small atoms (exact). Modulo the prime, `y` is first lifted to the rationals
        (rational reconstruction) and the vanishing on large atoms is checked exactly; raises _Unconfirmed when
        either fails, so that a wrong modular answer can only ever refuse."""
        if self.modulus is not None:
            lifted: Row = {}
            for index, value in y.items():
                rational = lift(int(value), self.modulus)
                if rational is None:
                    raise _Unconfirmed
                lifted[index] = rational
            y = lifted
        denominator = math.lcm(*(v.denominator if type(v) is Fraction else 1 for v in y.values()))
        scaled = {index: int(v * denominator) for index, v in y.items()}
        if sum(abs(v) for v in scaled.values()) >= 1 << 62:
            raise _Unconfirmed  # beyond int64 accumulation: not expected from 0/1 rows
        self._reserve(len(self.weight))
        total, used = self._acc, []  # (a zero scratch array over the atoms; zero again on the way out)
        try:
            for index, coefficient in scaled.items():
                atoms = self._atoms_of_set(index)
                budget.spend(1 + len(atoms) // 256)
                total[atoms] += coefficient  # (a set's atoms are distinct)
                used.append(atoms)
            every = distinct(np.concatenate(used), self._pos) if used else np.zeros(0, dtype=np.int64)
            sums = total[every]
        finally:
            for atoms in used:
                total[atoms] = 0
        support, sums = every[sums != 0], sums[sums != 0]
        if ((self._weights[support] >= self.k) & (support != 0)).any():
            if self.modulus is None:
                raise AssertionError("an exact dependency of L that does not vanish on the large atoms")
            raise _Unconfirmed
        if denominator == 1:
            return as_row(support, sums)
        return {atom: div(value, denominator) for atom, value in zip(support.tolist(), sums.tolist(), strict=True)}

    def _atoms_of_set(self, index: int) -> np.ndarray:
        """The atoms released set `index` is the union of (cached until the next atom split)."""
        cached = self._set_atoms.get(index)
        if cached is not None and cached[0] == self._epoch:
            return cached[1]
        if cached is not None and self._split_base <= cached[0] and self._epoch - cached[0] <= 64:
            # a released set is a union of atoms: an atom split since then either lies inside it (the set gains
            # the new part) or outside it; new parts have higher numbers than every earlier atom (sorted order)
            atoms = cached[1]
            for parted, fresh in self._split_log[cached[0] - self._split_base: self._epoch - self._split_base]:
                if not len(atoms):
                    break
                place = np.minimum(np.searchsorted(atoms, parted), len(atoms) - 1)
                inside = atoms[place] == parted
                if inside.any():
                    atoms = np.concatenate((atoms, fresh[inside]))
            self._set_atoms[index] = (self._epoch, atoms)
            return atoms
        members = np.frombuffer(self.sets[index].to_array(), dtype=np.uint32)
        mark = np.zeros(len(self.weight), dtype=bool)
        mark[self.atom_of[members]] = True
        atoms = np.flatnonzero(mark)
        self._set_atoms[index] = (self._epoch, atoms)
        return atoms

    # --- V: the row space over small atoms ---------------------------------------------------------------------
    def _insert_v(self, vector: Row, budget: Budget) -> None:
        for atom in [a for a in vector if a in self.vrows]:
            factor = vector.get(atom)
            if factor:
                axpy(vector, -factor, self.vrows[atom], budget)
        if not vector:
            return
        pivot = max(vector, key=lambda a: (self.weight[a], a))
        scale = vector[pivot]
        if scale != 1:
            for key in vector:
                vector[key] = div(vector[key], scale)
        for other in list(self.vcolumns.get(pivot, ())):
            self._save_v(other)
            target = self.vrows[other]
            factor = target[pivot]
            axpy(target, -factor, vector, budget, self.vcolumns, other)
            self._changed.add(other)
        self._save_v(pivot)
        self.vrows[pivot] = vector
        index_columns(self.vcolumns, pivot, vector)
        self._changed.add(pivot)

    def _save_l(self, pivot: int) -> None:
        """Keep the row of L at `pivot` for `rollback` (before it is changed)."""
        self._pool_dirty.add(pivot)  # (its row in the pool is rewritten at the next flush)
        if self._undo is not None and pivot not in self._undo.lrows:
            entry = self.lrows.get(pivot)
            self._undo.lrows[pivot] = (entry.clone() if entry is not None
                                       else None)

    def _save_v(self, pivot: int) -> None:
        if self._undo is not None and pivot not in self._undo.vrows:
            row = self.vrows.get(pivot)
            self._undo.vrows[pivot] = dict(row) if row is not None else None

    # --- checks -----------------------------------------------------------------------------------------------
    def _check(self, budget: Budget) -> Violation | None:
        """Checks 1 and 2 on the basis rows of V_s that changed."""
        for pivot in sorted(self._changed):
            row = self.vrows.get(pivot)
            if row is None:
                continue
            weight = self.support_weight(row)
            if weight < self.k:
                return Violation("basis_row", weight, tuple(sorted(row)))
            neighbours = {p for atom in row for p in self.vcolumns.get(atom, ()) if p != pivot}
            budget.spend(len(neighbours))
            budget.check()
            for other in neighbours:
                violation = self._pair(row, self.vrows[other], budget)
                if violation is not None:
                    return violation
        return None

    def _pair(self, first: Row, second: Row, budget: Budget) -> Violation | None:
        """The lightest combination of two basis rows that cancels a shared column, if it is below k."""
        budget.spend(len(first) + len(second))
        union = self.support_weight(first) + sum(self.weight[a] for a in second if a not in first)
        cancelled: dict[Value, int] = {}
        for atom in first:
            if atom in second:
                ratio = div(-first[atom], second[atom])
                cancelled[ratio] = cancelled.get(ratio, 0) + self.weight[atom]
        for ratio, weight in cancelled.items():
            if union - weight < self.k:
                support = tuple(sorted(a for a in {*first, *second}
                                       if first.get(a, 0) + ratio * second.get(a, 0)))
                if support:
                    return Violation("pair", union - weight, support)
        return None

    def _complements(self, entities: BitMap, budget: Budget, members: np.ndarray | None = None,
                     hint: Hint | None = None) -> Violation | None:
        """Check 3: the new set and released sets it contains or is contained in differ by 0 or ≥ k entities."""
        size = len(entities)
        if hint is not None and hint.base <= len(self.sets):
            indexes = self._candidates_hinted(entities, budget, hint)
        else:
            by_card = self._by_card  # (cardinality, index), sorted: the window |S'| - |S| in (-k, k) is one slice
            low, high = np.searchsorted(by_card, ((size - self.k + 1) << 32, (size + self.k) << 32)).tolist()
            window = by_card[low:high]
            budget.spend(len(window))
            budget.check()
            below, above = np.searchsorted(window, (size << 32, (size + 1) << 32)).tolist()
            indexes = self._sets_around(entities, window[:below] & 0xFFFFFFFF, window[above:] & 0xFFFFFFFF, members)
        for index in indexes:
            cardinality, other = len(self.sets[index]), self.sets[index]
            inner, outer = (other, entities) if cardinality < size else (entities, other)
            if inner.issubset(outer):
                difference = outer - inner
                weight = len(difference) - (1 if 0 in difference else 0)
                if weight < self.k:
                    return Violation("complement", weight, self._atoms_of(difference))
        return None

    def _candidates_hinted(self, entities: BitMap, budget: Budget, hint: Hint) -> list[int]:
        """`_complements`' window and candidates from a hint: the sets released before the run as the hint found
        them (they do not change during a run), and the sets registered since (indexes from `hint.base` on), tested
        here one by one with the same window and pre-filter; charged the whole window, as the slice was."""
        size, k, sets = len(entities), self.k, self.sets
        count, found = hint.window, hint.candidates
        low, high = entities.min(), entities.max()
        extra: list[tuple[int, int]] = []
        for index in range(hint.base, len(sets)):
            other = sets[index]
            cardinality = len(other)
            if not size - k < cardinality < size + k:
                continue
            count += 1
            if cardinality < size:
                if other.min() in entities:
                    extra.append((cardinality, index))
            elif cardinality > size and other.min() <= low and other.max() >= high and low in other:
                extra.append((cardinality, index))
        budget.spend(count)
        budget.check()
        if extra:
            found = sorted(found + extra)
        return [index for _, index in found]

    def _sets_around(self, entities: BitMap, smaller: np.ndarray, larger: np.ndarray,
                     members: np.ndarray | None = None) -> list[int]:
        """Check 3's candidates, in order of (size, index) (`smaller` and `larger` come in that order): the
        `smaller` sets whose smallest entity is in `entities`, and the `larger` sets whose smallest and largest
        entities bracket those of `entities` and that hold its smallest entity. A set contained in another has its
        smallest entity there, and lies between its smallest and largest, so no set the containment test would
        find is left out."""
        found: list[int] = []
        if len(smaller):
            if members is None:
                members = np.frombuffer(entities.to_array(), dtype=np.uint32)
            lows = self._mins[smaller]
            place = np.minimum(np.searchsorted(members, lows), len(members) - 1)
            found = smaller[members[place] == lows].tolist()
        if len(larger):
            low, high, sets = entities.min(), entities.max(), self.sets
            around = larger[(self._mins[larger] <= low) & (self._maxs[larger] >= high)]
            found += [index for index in around.tolist() if low in sets[index]]
        return found

    def _contained_complement(self, entities: BitMap, budget: Budget,
                              members: np.ndarray | None = None) -> Violation | None:
        """Check 4: the part of the new set outside every released set it contains must not be determined."""
        candidates = self._minimums & entities
        budget.spend(1 + len(candidates) // 64)
        by_minimum = self._by_minimum
        indexes = [index for low in candidates for index in by_minimum[low]]
        if not indexes:
            return None
        budget.spend_each(len(indexes))  # (one unit per candidate set)
        size, sets = len(entities), self.sets
        if len(indexes) > 16:
            # a set contained in `entities` is smaller and holds its largest entity there: only those are tested
            found = np.array(indexes, dtype=np.int64)
            if members is None:
                members = np.frombuffer(entities.to_array(), dtype=np.uint32)
            highs = self._maxs[found]
            place = np.minimum(members.searchsorted(highs), len(members) - 1)
            indexes = found[(self._cards[found] < size) & (members[place] == highs)].tolist()
        inside = [sets[index] for index in indexes if len(sets[index]) < size and sets[index].issubset(entities)]
        if not inside:
            return None
        covered = BitMap.union(*inside)
        rest = entities - covered
        weight = len(rest) - (1 if 0 in rest else 0)
        if not rest or weight >= self.k:
            return None
        support = self._atoms_of(rest)
        return Violation("contained_complement", weight, support) if self.determined_on(support, budget) else None

    def _exhaustive(self, budget: Budget) -> Violation | None:
        """Check 5: the lightest vector of each component of V_s that changed (rows linked by shared atoms; V_s is
        the direct sum of their spans, on disjoint supports, so a vector of minimal support lies in one of them,
        and components that did not change hold only vectors of earlier row spaces, which were checked then).

        Exact when it completes: through the component's circuits when there are at most `CIRCUIT_TESTS`
        choices of d-1 atoms (d its dimension), otherwise by a depth-first search over unions of its atoms
        lighter than k, by rank test, lightest first, for at most `exhaustive_tests` candidates. Past that bound
        a `strict` ledger refuses the set (`search_bound`); otherwise the set is accepted unproven and counted in
        `unproven` (the documented limit)."""
        for pivots, atoms in self._changed_components():
            if math.comb(len(atoms), len(pivots) - 1) <= self.circuit_tests:
                found = self._circuits(pivots, atoms, budget)
            else:
                try:
                    found = self._search(atoms, [], 0, 0, [0], budget)
                except _SearchDone:
                    if self.strict:
                        return Violation("search_bound", sum(self.weight[a] for a in atoms), tuple(sorted(atoms)))
                    self.unproven += 1
                    found = None
            if found is not None:
                return found
        return None

    def _circuits(self, pivots: list[int], atoms: list[int], budget: Budget) -> Violation | None:
        """The lightest vector of a component of V_s of dimension d, through its circuits: a vector of minimal
        support vanishes on d-1 atoms that leave it the only direction (up to scale), so trying every d-1 atoms
        finds every such vector, and the lightest vector is one of them."""
        rows = [self.vrows[p] for p in pivots]
        for zeros in itertools.combinations(atoms, len(rows) - 1):
            budget.spend(len(rows) ** 2)
            budget.check()
            coefficients = kernel_vector([[row.get(z, 0) for z in zeros] for row in rows])
            if coefficients is None:
                continue
            vector: Row = {}
            for coefficient, row in zip(coefficients, rows, strict=True):
                if coefficient:
                    axpy(vector, coefficient, row, budget)
            weight = self.support_weight(vector)
            if vector and weight < self.k:
                return Violation("circuit", weight, tuple(sorted(vector)))
        return None

    def _search(self, atoms: list[int], chosen: list[int], start: int, weight: int, visited: list[int],
                budget: Budget) -> Violation | None:
        """Depth-first over unions of `atoms` (sorted by weight) lighter than k, extending `chosen`."""
        for i in range(start, len(atoms)):
            atom = atoms[i]
            total = weight + self.weight[atom]
            if total >= self.k:
                return None  # atoms are sorted by weight: every later one is at least as heavy
            chosen.append(atom)
            visited[0] += 1
            if visited[0] > self.exhaustive_tests:
                raise _SearchDone
            if any(a in self.vrows for a in chosen) and self.determined_on(tuple(chosen), budget):
                return Violation("exhaustive", total, tuple(sorted(chosen)))
            found = self._search(atoms, chosen, i + 1, total, visited, budget)
            chosen.pop()
            if found is not None:
                return found
        return None

    def _changed_components(self) -> list[tuple[list[int], list[int]]]:
        """The pivots and atoms of each component of V's basis (rows linked by shared atoms) holding a changed row,
        atoms sorted by weight."""
        seen: set[int] = set()
        components: list[tuple[list[int], list[int]]] = []
        for start in sorted(self._changed):
            if start not in self.vrows or start in seen:
                continue
            seen.add(start)
            stack, atoms, pivots = [start], set(), []
            while stack:
                pivot = stack.pop()
                pivots.append(pivot)
                for atom in self.vrows[pivot]:
                    if atom in atoms:
                        continue
                    atoms.add(atom)
                    for other in self.vcolumns.get(atom, ()):
                        if other not in seen:
                            seen.add(other)
                            stack.append(other)
            components.append((pivots, sorted(atoms, key=lambda a: (self.weight[a], a))))
        return components

    def _atoms_of(self, entities: BitMap, *, refined: bool = False) -> tuple[int, ...]:
        members = np.frombuffer(entities.to_array(), dtype=np.uint32).astype(np.int64)
        members = members[members < self.size]
        atoms = np.unique(self.atom_of[members])
        if refined:
            counts = np.bincount(self.atom_of[members], minlength=len(self.weight))
            if len(members) < len(entities) or any(counts[a] != self.count[a] or a == 0 for a in atoms.tolist()):
                raise ValueError("refine every set of a cell before adding the first of them")
        return tuple(atoms.tolist())

    def determined_on(self, support: tuple[int, ...], budget: Budget) -> bool:
        """Rank test: does the row space hold a non-zero vector supported on `support` (a set of small atoms)?

        Such a vector lies in V_s; its coefficient at a pivot of V's basis is the multiple of that pivot's row it
        uses, so it uses only rows pivoted inside `support`, and exists exactly when those rows, restricted to the
        columns outside `support`, are linearly dependent. A support with a large atom is never small.
        """
        if any(not self.small(a) for a in support):
            return False
        inside = set(support)
        rows = [self.vrows[a] for a in support if a in self.vrows]
        restricted = [{a: v for a, v in row.items() if a not in inside} for row in rows]
        budget.spend(sum(len(r) for r in restricted) + 1)
        return rank(restricted, budget) < len(restricted)
