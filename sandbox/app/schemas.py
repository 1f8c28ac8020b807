"""Input schemas: every request body forbids unknown fields, and validation errors say which field and why.

A silently dropped typo once left a column meant to be hidden open (`"constrant": "hidden"`), so no input model
accepts a field it does not know; the error names the nearest valid field.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every input schema: unknown fields are an error, never ignored."""

    model_config = ConfigDict(extra="forbid")


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Optional/Union/Annotated removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg) if t is not type(None)]
    return [annotation]


def fields_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str]:
    """The field names valid at `loc` (a pydantic error location without its last element) under `model`."""
    current: list[Any] = [model] if model is not None else []
    for part in loc:
        nxt: list[Any] = []
        for typ in current:
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                field = typ.model_fields.get(str(part))
                if field is not None:
                    nxt += _unwrap(field.annotation)
                continue
            origin, args = typing.get_origin(typ), typing.get_args(typ)
            if origin in (dict, typing.Mapping) and len(args) == 2:
                nxt += _unwrap(args[1])
            elif origin in (list, tuple, typing.Sequence) and args:
                nxt += _unwrap(args[0])
        current = nxt
    names: list[str] = []
    for typ in current:
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            names += [f.alias or name for name, f in typ.model_fields.items()]
    return names


def describe_error(error: Mapping[str, Any], model: type[BaseModel] | None = None) -> str:
    """One line for one validation error: where, and the rule broken (no documentation links)."""
    loc = [p for p in error.get("loc", ()) if p not in ("body",)]
    where = ".".join(str(p) for p in loc) or "request"
    kind = error.get("type", "")
    if kind == "extra_forbidden" and loc:
        known = fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f" (did you mean `{close[0]}`?)" if close else (
            f" (valid fields: {', '.join(sorted(known))})" if known else "")
        return f"{where}: unknown field{hint}"
    if kind == "missing":
        return f"{where}: required field is missing"
    message = str(error.get("msg", "is invalid"))
    return f"{where}: {message}"


def describe_errors(errors: Sequence[Mapping[str, Any]], model: type[BaseModel] | None = None, *,
                    limit: int = 5) -> str:
    """A short summary of validation errors, one clause per error."""
    parts = [describe_error(e, model) for e in errors[:limit]]
    more = len(errors) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
