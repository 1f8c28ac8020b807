"""The release decision in the API process: audit a run's cells against every earlier release, under a lock.

The locked worker cannot read the store, so it returns a result over entity data as a `PendingRelease` (cells that
passed k and dominance, with their entity sets). Here, for each population the run reads:

1. take the population's lock (a `threading.Lock` in this process, and across processes a PostgreSQL advisory
   lock on a dedicated connection, or an exclusive `flock` on `SLUICE_HOME/locks/release-<population>.lock` with
   SQLite), always in sorted population order;
2. bring the in-memory ledger up to date with cells other processes committed since it was last read (ledger rows
   have increasing ids within a population, since they are only written under its lock);
3. audit the cells (policy/release_audit.py; in stages with OFFSET / LIMIT, policy/release_stages.py, so that the
   cells of rows the limit drops are neither audited nor recorded), NULL the suppressed ones, add the marker
   column, write the result;
4. hand the ledger rows to the caller, which commits them in the same transaction as the run record and its audit
   row; only then are the locks released and the result readable (the run is visible only once committed).

If the commit fails, the in-memory ledgers of those populations are dropped and re-read from the store next time.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pyroaring import BitMap
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from metering.metrics import Metrics
from policy.output import Reason, finish
from policy.release_audit import DEFAULT_BUDGET, AuditCell, AuditPart, PopulationAudit
from policy.release_stages import staged_audit
from policy.sql_release import ReleasePlan
from sandbox import release_snapshot
from sandbox.executor import PendingRelease, RunOutcome
from sandbox.executor.results import write_result
from sandbox.release_snapshot import Fingerprint
from sandbox.run_inputs import AnyGrant, AnyJob
from sandbox.run_record import RunRecord
from sandbox.store.models import Base, ReleaseCell, ReleaseSet, ReleaseThreshold


@dataclass
class _Population:
    """A population's ledgers in this process, and how far into the store they have read."""

    audit: PopulationAudit
    last_cell: int = 0
    operators: set[str] = field(default_factory=set)
    bitmaps: dict[str, BitMap] = field(default_factory=dict)
    fingerprint: Fingerprint = field(default_factory=Fingerprint)  # of the ledger rows read (release_snapshot)
    snapshot_cells: int = 0  # ledger cells in the last snapshot written or read


class ReleaseService:
    """Per-population ledgers, locks and the release decision for runs over entity data."""

    def __init__(self, sessions: sessionmaker[Session], engine: Engine, home: Path, *, budget: int = DEFAULT_BUDGET,
                 strict: bool = False, metrics: Metrics | None = None) -> None:
        self.sessions = sessions
        self.engine = engine
        self.home = home
        self.budget = budget
        self.strict = strict  # SLUICE_AUDIT_STRICT: refuse past the search bound instead of releasing unproven
        self.metrics = metrics
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._populations: dict[str, _Population] = {}

    # --- the decision -------------------------------------------------------------------------------------------
    @contextmanager
    def releasing(self, run: RunRecord, job: AnyJob, grant: AnyGrant, outcome: RunOutcome, now: datetime
                  ) -> Iterator[list[Base]]:
        """Audit and write a pending result; yields the ledger rows to commit with the run (locks held)."""
        pending = outcome.pending
        release = job.analysis.get("release")
        if pending is None or not release:
            yield []
            return
        plan = ReleasePlan.from_dict(release)
        populations = plan.populations
        with ExitStack() as stack:
            for population in populations:
                stack.enter_context(self._locked(population))
            started = time.perf_counter()
            try:
                state = {p: self._refresh(p, grant.min_group_size) for p in populations}
                cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures)
                                                            for p in c.parts)) for c in pending.cells]
                decision = staged_audit({p: s.audit for p, s in state.items()}, pending.table, pending.marks, cells,
                                        plan, budget=self.budget)
                rows = self._rows(state, decision.accepted, run, grant, now)
                self._write(run, pending, dict(decision.suppressed), plan)
                self._observe(state, decision.suppressed, outcome.suppression, job, time.perf_counter() - started)
            except BaseException:
                self._forget(populations)
                raise
            try:
                yield rows
            except BaseException:
                self._forget(populations)
                if run.result_path:
                    (self.home / run.result_path).unlink(missing_ok=True)
                raise
            for population in populations:
                cells_in = sorted((r.id, r.measure, r.digest) for r in rows
                                  if isinstance(r, ReleaseCell) and r.population == population)
                if cells_in:
                    state[population].last_cell = max(state[population].last_cell, cells_in[-1][0])
                    state[population].fingerprint.update(cells_in)
                state[population].operators.add(grant.operator_org_id)
                self._maybe_snapshot(population, state[population])

    def _write(self, run: RunRecord, pending: PendingRelease, suppressed: dict[Any, Reason], plan: ReleasePlan) -> None:
        table = finish(pending.table, pending.marks, suppressed, plan)
        path = self.home / "results" / f"{run.id}.parquet"
        written = write_result(table, path)
        run.result_path = str(path.relative_to(self.home))
        run.result_sha256, run.result_rows, run.result_bytes = written.sha256, written.rows, written.bytes
        counts = dict(run.suppression or {})
        for reason in suppressed.values():
            counts[reason.value] = counts.get(reason.value, 0) + 1
        run.suppression = counts
        run.suppressed_cells = sum(counts.values())

    def _rows(self, state: dict[str, _Population], accepted: Sequence[Any], run: RunRecord, grant: AnyGrant,
              now: datetime) -> list[Base]:
        rows: list[Base] = []
        for population, entry in state.items():
            if grant.min_group_size > entry.audit.stored_k:
                rows.append(ReleaseThreshold(population=population, k=grant.min_group_size, grant_id=grant.id,
                                             created_at=now))
                entry.audit.stored_k = grant.min_group_size
        fresh: dict[tuple[str, str], ReleaseSet] = {}
        for item in accepted:
            entry = state[item.population]
            blob = item.entities.serialize()
            digest = hashlib.sha256(blob).hexdigest()
            if digest not in entry.bitmaps and (item.population, digest) not in fresh:
                fresh[(item.population, digest)] = ReleaseSet(population=item.population, digest=digest,
                                                              entities=len(item.entities), bitmap=blob,
                                                              created_at=now)
            entry.bitmaps[digest] = item.entities
            cell = ReleaseCell(population=item.population, measure=item.measure, digest=digest, run_id=run.id,
                               grant_id=grant.id, operator_org_id=grant.operator_org_id, k=entry.audit.k,
                               created_at=now)
            if (item.population, digest) in fresh:
                cell.entity_set = fresh[(item.population, digest)]
            rows.append(cell)
        return [*fresh.values(), *rows]

    def _observe(self, state: dict[str, _Population], suppressed: dict[Any, Reason], worker: Mapping[str, int],
                 job: AnyJob, seconds: float) -> None:
        if self.metrics is None:
            return
        self.metrics.audit_seconds.observe(seconds)
        for reason in suppressed.values():
            self.metrics.suppressed_cells.labels(reason.value).inc()
        for reason_name, count in worker.items():
            self.metrics.suppressed_cells.labels(reason_name).inc(count)
        for population, entry in state.items():
            self.metrics.ledger_cells.labels(population).set(entry.audit.cells)
            others = entry.operators - {job.operator_org_id}
            audited = sum(1 for r in suppressed.values() if r == Reason.DIFFERENCE_AUDIT)
            if others and audited:
                self.metrics.cross_operator_suppressions.labels(population).inc(audited)

    # --- ledgers ----------------------------------------------------------------------------------------------
    def _refresh(self, population: str, k: int) -> _Population:
        """(Caller holds the population's lock.) The population's ledgers, with every committed cell applied."""
        entry = self._populations.get(population)
        with self.sessions() as session:
            stored_k = session.scalar(select(func.max(ReleaseThreshold.k))
                                      .where(ReleaseThreshold.population == population)) or 0
            target = max(stored_k, k)
            if entry is None:
                entry = self._restore(session, population, target) or _Population(
                    PopulationAudit(population, target, strict=self.strict))
                entry.audit.strict = self.strict  # a snapshot keeps the mode it was written under
                self._populations[population] = entry
            entry.audit.stored_k = stored_k
            if target > entry.audit.k:
                entry.audit.raise_k(target)
            new = session.execute(
                select(ReleaseCell.id, ReleaseCell.measure, ReleaseCell.digest, ReleaseCell.operator_org_id)
                .where(ReleaseCell.population == population, ReleaseCell.id > entry.last_cell)
                .order_by(ReleaseCell.id)).all()
            missing = sorted({digest for _, _, digest, _ in new if digest not in entry.bitmaps})
            for start in range(0, len(missing), 500):
                for digest, blob in session.execute(select(ReleaseSet.digest, ReleaseSet.bitmap).where(
                        ReleaseSet.population == population, ReleaseSet.digest.in_(missing[start:start + 500]))):
                    entry.bitmaps[digest] = BitMap.deserialize(blob)
        entry.audit.replay((measure, entry.bitmaps[digest]) for _, measure, digest, _ in new)
        if new:
            entry.last_cell = new[-1][0]
            entry.operators.update(operator for _, _, _, operator in new)
            entry.fingerprint.update((cell_id, measure, digest) for cell_id, measure, digest, _ in new)
        return entry

    def _restore(self, session: Session, population: str, k: int) -> _Population | None:
        """The population's snapshot (sandbox/release_snapshot.py), if it matches the store's ledger rows."""
        snapshot = release_snapshot.load(self.home, population)
        if snapshot is None or snapshot.audit.k > k:
            return None
        fingerprint = Fingerprint().update((cell_id, measure, digest) for cell_id, measure, digest in session.execute(
            select(ReleaseCell.id, ReleaseCell.measure, ReleaseCell.digest)
            .where(ReleaseCell.population == population, ReleaseCell.id <= snapshot.last_cell)
            .order_by(ReleaseCell.id)))
        if fingerprint.hexdigest() != snapshot.fingerprint:
            return None
        return _Population(snapshot.audit, snapshot.last_cell, snapshot.operators, snapshot.bitmaps, fingerprint,
                           snapshot.audit.cells)

    def _maybe_snapshot(self, population: str, entry: _Population) -> None:
        """(Lock held, ledger rows committed.) Write a snapshot once enough cells were added since the last one."""
        if entry.audit.cells - entry.snapshot_cells < release_snapshot.SNAPSHOT_EVERY:
            return
        try:
            release_snapshot.save(self.home, release_snapshot.Snapshot(
                population, entry.last_cell, entry.fingerprint.hexdigest(), entry.audit, entry.operators,
                entry.bitmaps))
        except OSError:
            return  # a cache: the next start replays from the store instead
        entry.snapshot_cells = entry.audit.cells

    def _forget(self, populations: Sequence[str]) -> None:
        for population in populations:
            self._populations.pop(population, None)

    # --- locks ------------------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, population: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(population, threading.Lock())
        with lock, self._across_processes(population):
            yield

    @contextmanager
    def _across_processes(self, population: str) -> Iterator[None]:
        if self.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(f"sluice.release.{population}".encode()).digest()[:8], "big",
                                 signed=True)
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
            return
        folder = self.home / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"release-{population}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
