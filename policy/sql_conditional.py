"""Conditional aggregates: a CASE / IF inside a safe aggregate is a set of FILTERed cells.

`sum(CASE WHEN c THEN x ELSE 0 END)` is `sum(x) FILTER (WHERE c)` as far as release is concerned: the rows that
contribute are those meeting `c` (and `x` not NULL), and that conditional cell's own entity set must reach k and pass
the audit. A CASE with several branches is one component per branch: branch i contributes where its condition holds
and no earlier one did. A branch whose value is NULL contributes nothing; for `sum`, neither does the literal 0 (it
adds nothing); for count, avg, stddev and variance a 0 is a row like any other.

Only a CASE / IF (or `count_if`) that *is* the aggregate's argument is decomposed, and each branch value must be
plain arithmetic (checked by lineage like any aggregate argument); anything else stays a complex aggregate.
"""

from __future__ import annotations

from sqlglot import exp

from policy.sql_model import aggregate_arguments

Branch = tuple[exp.Expr | None, exp.Expr | None]  # (condition or None for "always", value or None for "a row")


def branches(aggregate: exp.Expr) -> list[Branch] | None:
    """The (condition, value) branches of a conditional aggregate, or None when it is not one."""
    if isinstance(aggregate, exp.CountIf):
        return [(_truth(aggregate.this), None)]
    arguments = aggregate_arguments(aggregate)
    if len(arguments) != 1 or (isinstance(aggregate, exp.Count) and isinstance(aggregate.this, exp.Distinct)):
        return None
    argument = arguments[0].unnest()
    if isinstance(argument, exp.If):
        pairs = [(argument.this, argument.args.get("true"))]
        default = argument.args.get("false")
    elif isinstance(argument, exp.Case):
        subject = argument.this
        pairs = []
        for branch in argument.args.get("ifs") or []:
            condition = branch.this
            if subject is not None:
                condition = exp.EQ(this=exp.paren(subject.copy(), copy=False),
                                   expression=exp.paren(condition.copy(), copy=False))
            pairs.append((condition, branch.args.get("true")))
        default = argument.args.get("default")
    else:
        return None
    out: list[Branch] = []
    earlier: list[exp.Expr] = []
    for condition, value in [*pairs, (None, default)]:
        holds = _truth(condition) if condition is not None else None
        parts = [exp.not_(e.copy()) for e in earlier] + ([holds] if holds is not None else [])
        if holds is not None:
            earlier.append(holds)
        if value is None or _contributes_nothing(value, aggregate):
            continue
        if isinstance(value.unnest(), exp.Case | exp.If):
            return None  # nested conditionals: not decomposed
        out.append((exp.and_(*parts) if parts else None, value))
    return out


def _truth(condition: exp.Expr) -> exp.Expr:
    """`condition` IS TRUE, as a value that is never NULL (so NOT works as "did not hold")."""
    return exp.func("coalesce", exp.paren(condition.copy(), copy=False), exp.false())


def _contributes_nothing(value: exp.Expr, aggregate: exp.Expr) -> bool:
    node = value.unnest()
    if isinstance(node, exp.Null):
        return True
    if isinstance(aggregate, exp.Sum) and isinstance(node, exp.Literal) and node.is_number:
        try:
            return float(node.name) == 0.0
        except ValueError:
            return False
    return False
