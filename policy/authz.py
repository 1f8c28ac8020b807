"""Authorization with pycasbin: a decision with its rule and reason, never a bare bool. Deny by default."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import casbin
from casbin.persist.adapter import Adapter

MODEL_PATH = Path(__file__).with_name("model.conf")


class Scope(StrEnum):
    """Whose data a request touches, relative to the caller's organization."""

    OWN = "own"
    OTHER = "other"


@dataclass(frozen=True)
class Decision:
    """The outcome of an authorization check: allowed or not, the rule that decided, and why."""

    allowed: bool
    rule: str
    reason: str
    scope: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"allowed": self.allowed, "rule": self.rule, "reason": self.reason, "scope": self.scope}


class _RowsAdapter(Adapter):
    """Loads policy rows handed over by the caller (the control store owns them)."""

    def __init__(self, rows: Iterable[Sequence[str]]) -> None:
        self._rows = [tuple(r) for r in rows]

    def load_policy(self, model: casbin.Model) -> None:
        for row in self._rows:
            ptype, *values = row
            model.model["p" if ptype.startswith("p") else "g"][ptype].policy.append(list(values))


def subjects_for(kind: str, roles: Iterable[str], *, is_platform: bool) -> list[str]:
    """The casbin subjects a principal acts as: `<kind>.<role>` per role, plus `platform.admin`."""
    subs = [f"{kind}.{role}" for role in roles]
    if is_platform and "admin" in roles:
        subs.append("platform.admin")
    return subs


def _in_words(subject: str) -> str:
    if subject == "platform.admin":
        return "the platform agency's admin"
    kind, _, role = subject.partition(".")
    article = "an" if kind[:1] in "aeiou" else "a"
    return f"a {role} of {article} {kind} organization"


class Authorizer:
    """Checks (subjects, object, action, scope) against the permission matrix.

    The rows are fixed for the Authorizer's life, so decisions are memoized: casbin's matcher costs about
    0.2 ms a call, and the run path asks several times per request.
    """

    def __init__(self, rows: Iterable[Sequence[str]]) -> None:
        self._enforcer = casbin.Enforcer(str(MODEL_PATH), _RowsAdapter(rows))
        self._decisions: dict[tuple[tuple[str, ...], str, str, Scope], Decision] = {}
        self._widest: dict[tuple[tuple[str, ...], str, str], Scope | None] = {}

    def decide(self, subjects: Sequence[str], obj: str, act: str, scope: Scope) -> Decision:
        """Allow when any of the caller's subjects has a matching rule; otherwise deny, saying why."""
        key = (tuple(subjects), obj, act, scope)
        found = self._decisions.get(key)
        if found is None:
            found = self._decisions[key] = self._decide(subjects, obj, act, scope)
        return found

    def _decide(self, subjects: Sequence[str], obj: str, act: str, scope: Scope) -> Decision:
        for sub in subjects:
            ok, explain = self._enforcer.enforce_ex(sub, obj, act, scope.value)
            if ok:
                return Decision(True, "p, " + ", ".join(explain), f"{sub} may {act} {obj} ({scope.value})",
                                scope.value)
        wider = self.widest_scope(subjects, obj, act)
        if wider is not None:
            reason = f"{'/'.join(subjects) or 'nobody'} may {act} {obj} only for its own organization"
        else:
            reason = f"no rule lets {'/'.join(subjects) or 'nobody'} {act} {obj}"
        who = self.who_may(obj, act)
        reason += f"; this is done by {' or '.join(who)}" if who else "; no role may do this"
        return Decision(False, "deny-by-default", reason, scope.value)

    def who_may(self, obj: str, act: str) -> list[str]:
        """The principals the matrix lets `act` on `obj`, in words: `a data_steward of a provider organization`."""
        subjects = sorted({row[0] for row in self._enforcer.get_policy() if row[1] == obj and row[2] == act})
        return [_in_words(s) for s in subjects]

    def widest_scope(self, subjects: Sequence[str], obj: str, act: str) -> Scope | None:
        """`OTHER` if the caller may act on any organization's data, `OWN` if only its own, else None."""
        key = (tuple(subjects), obj, act)
        if key not in self._widest:
            self._widest[key] = self._widest_scope(subjects, obj, act)
        return self._widest[key]

    def _widest_scope(self, subjects: Sequence[str], obj: str, act: str) -> Scope | None:
        if any(self._enforcer.enforce(s, obj, act, Scope.OTHER.value) for s in subjects):
            return Scope.OTHER
        if any(self._enforcer.enforce(s, obj, act, Scope.OWN.value) for s in subjects):
            return Scope.OWN
        return None

    def rules(self) -> list[list[str]]:
        """The loaded policy rows, for inspection and tests."""
        return [list(r) for r in self._enforcer.get_policy()]
