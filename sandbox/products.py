"""Data products and services: publishing, the product lifecycle (one state enum, one transition function),
parameter sets and grids, and the public view of listed products (docs/products.md).

A product is backed by one approved job of its operator: calling it runs the job's frozen SQL through the same
governed path as a run (sandbox/app/governed.py). Customers set only the parameters the product declares, each
within an enumerated set or a grid; any other value is refused (`parameter_not_allowed`), so a customer cannot
single anyone out by sweeping a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metering.money import text
from sandbox.billing import prices
from sandbox.errors import Conflict, InvalidInput, Refused
from sandbox.jobs import JobState, check_grant_usable
from sandbox.runs import coerce_params
from sandbox.store.models import DatasetVersion, Grant, Job, Organization, PriceListEntry, Product
from sandbox.store.types import new_id

GRID_TYPES = ("INTEGER", "BIGINT", "DOUBLE", "DECIMAL")
MAX_VALUES = 1000
MAX_GRID_POINTS = 100_000


class ProductState(StrEnum):
    """Where a product is in its life; only `listed` products are in the public catalogue and can be called."""

    DRAFT = "draft"
    PENDING_REVIEW = "pending_review"
    LISTED = "listed"
    WITHDRAWN = "withdrawn"  # by the operator
    DELISTED = "delisted"  # by the agency, with a reason


class ProductAction(StrEnum):
    SUBMIT = "submit"  # the operator asks the agency to list it
    APPROVE = "approve"  # the agency lists it
    REJECT = "reject"  # the agency sends it back to draft, with a reason
    WITHDRAW = "withdraw"  # the operator takes it off (any state before the end)
    DELIST = "delist"  # the agency takes a listed product off, with a reason


# (state, action) -> new state; anything else is refused with `invalid_product_transition`.
_MOVES: dict[tuple[ProductState, ProductAction], ProductState] = {
    (ProductState.DRAFT, ProductAction.SUBMIT): ProductState.PENDING_REVIEW,
    (ProductState.PENDING_REVIEW, ProductAction.APPROVE): ProductState.LISTED,
    (ProductState.PENDING_REVIEW, ProductAction.REJECT): ProductState.DRAFT,
    (ProductState.DRAFT, ProductAction.WITHDRAW): ProductState.WITHDRAWN,
    (ProductState.PENDING_REVIEW, ProductAction.WITHDRAW): ProductState.WITHDRAWN,
    (ProductState.LISTED, ProductAction.WITHDRAW): ProductState.WITHDRAWN,
    (ProductState.LISTED, ProductAction.DELIST): ProductState.DELISTED,
}
_REASON_REQUIRED = frozenset({ProductAction.REJECT, ProductAction.DELIST})


@dataclass(frozen=True)
class ParamSpec:
    """What a customer may set for one parameter: an enumerated set of values, or a numeric grid."""

    name: str
    type: str
    values: tuple[Any, ...] | None = None
    grid: tuple[Decimal, Decimal, Decimal] | None = None  # min, max, step

    def to_json(self) -> dict[str, Any]:
        """The stored (and shown) form; values as JSON scalars, grid bounds as decimal strings."""
        out: dict[str, Any] = {"type": self.type}
        if self.values is not None:
            out["values"] = [_jsonable(v) for v in self.values]
        if self.grid is not None:
            out["grid"] = {"min": text(self.grid[0]), "max": text(self.grid[1]), "step": text(self.grid[2])}
        return out

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any]) -> ParamSpec:
        grid = raw.get("grid")
        return cls(name=name, type=raw["type"],
                   values=tuple(coerce_params({name: raw["type"]}, {name: v})[name] for v in raw["values"])
                   if raw.get("values") is not None else None,
                   grid=(Decimal(grid["min"]), Decimal(grid["max"]), Decimal(grid["step"])) if grid else None)

    def allows(self, value: Any) -> bool:
        """Whether a coerced value is in the set, or on the grid."""
        if self.values is not None:
            return value in self.values
        if self.grid is None or value is None or isinstance(value, bool):
            return False
        lo, hi, step = self.grid
        try:
            v = Decimal(str(value))
        except InvalidOperation:
            return False
        return lo <= v <= hi and (v - lo) % step == 0

    def describe(self) -> str:
        if self.values is not None:
            return "one of " + ", ".join(str(_jsonable(v)) for v in self.values)
        assert self.grid is not None
        lo, hi, step = self.grid
        return f"from {text(lo)} to {text(hi)} in steps of {text(step)}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return text(value)
    return value


def _decimal(raw: Any, what: str) -> Decimal:
    if isinstance(raw, bool | float):
        raise InvalidInput(f"{what} must be an integer or a decimal string (never a float)",
                           code="invalid_parameter_spec")
    try:
        out = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidInput(f"{what} is not a number: {raw!r}", code="invalid_parameter_spec") from None
    if not out.is_finite():
        raise InvalidInput(f"{what} must be finite", code="invalid_parameter_spec")
    return out


def parse_specs(declared: dict[str, str], given: dict[str, dict[str, Any]]) -> dict[str, ParamSpec]:
    """Check a product's parameter specs against its job's declared parameters; every parameter needs a set or a
    grid (refused with `invalid_parameter_spec` otherwise)."""
    missing = sorted(set(declared) - set(given))
    extra = sorted(set(given) - set(declared))
    if missing or extra:
        raise InvalidInput("a product declares every parameter of its job and no other"
                           + (f"; missing: {', '.join(missing)}" if missing else "")
                           + (f"; not in the job: {', '.join(extra)}" if extra else ""),
                           code="invalid_parameter_spec", missing=missing, extra=extra)
    out = {}
    for name in sorted(declared):
        typ, raw = declared[name], given[name]
        unknown = sorted(set(raw) - {"type", "values", "grid"})
        if unknown:
            raise InvalidInput(f"parameter {name}: unknown fields {', '.join(unknown)}", code="invalid_parameter_spec")
        if raw.get("type") is not None and str(raw["type"]).upper() != typ:
            raise InvalidInput(f"parameter {name} is {typ} in the job, not {raw['type']}",
                               code="invalid_parameter_spec", parameter=name)
        values, grid = raw.get("values"), raw.get("grid")
        if (values is None) == (grid is None):
            raise InvalidInput(f"parameter {name}: give either `values` (an enumerated set) or `grid` "
                               "({min, max, step})", code="invalid_parameter_spec", parameter=name)
        if values is not None:
            if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
                raise InvalidInput(f"parameter {name}: `values` is a list of 1 to {MAX_VALUES} values",
                                   code="invalid_parameter_spec", parameter=name)
            try:
                coerced = tuple(dict.fromkeys(coerce_params({name: typ}, {name: v})[name] for v in values))
            except InvalidInput as exc:
                raise InvalidInput(f"parameter {name}: {exc.message}", code="invalid_parameter_spec",
                                   parameter=name) from None
            if any(v is None for v in coerced):
                raise InvalidInput(f"parameter {name}: null is not a value", code="invalid_parameter_spec")
            out[name] = ParamSpec(name, typ, values=coerced)
            continue
        if typ.split("(")[0] not in GRID_TYPES or not isinstance(grid, dict) or set(grid) != {"min", "max", "step"}:
            raise InvalidInput(f"parameter {name}: a grid is {{min, max, step}} over a numeric parameter "
                               f"({', '.join(GRID_TYPES)})", code="invalid_parameter_spec", parameter=name)
        lo, hi, step = (_decimal(grid[k], f"parameter {name}: grid {k}") for k in ("min", "max", "step"))
        if step <= 0 or hi < lo or (hi - lo) % step != 0:
            raise InvalidInput(f"parameter {name}: a grid needs min <= max, step > 0 and max on the grid",
                               code="invalid_parameter_spec", parameter=name)
        if (hi - lo) / step + 1 > MAX_GRID_POINTS:
            raise InvalidInput(f"parameter {name}: a grid has at most {MAX_GRID_POINTS} points",
                               code="invalid_parameter_spec", parameter=name)
        out[name] = ParamSpec(name, typ, grid=(lo, hi, step))
    return out


def specs_of(product: Product) -> dict[str, ParamSpec]:
    """The product's stored parameter specs."""
    return {name: ParamSpec.from_json(name, raw) for name, raw in product.parameters.items()}


def check_call_params(product: Product, job: Job, given: dict[str, Any]) -> dict[str, Any]:
    """Bind a call's parameters (typed like a run's) and refuse any value outside its set or grid."""
    params = coerce_params(job.parameters, given)
    for name, spec in sorted(specs_of(product).items()):
        if not spec.allows(params.get(name)):
            raise Refused(f"parameter {name} must be {spec.describe()}; other values are not allowed, so that no "
                          "one can be singled out by varying a parameter", code="parameter_not_allowed",
                          parameter=name)
    return params


# --- the lifecycle ---------------------------------------------------------------------------------------------

def check_callable_basis(session: Session, product: Product, now: datetime) -> tuple[Job, Grant]:
    """The job is approved, the grant usable and the price active: what listing and calling both need."""
    job = session.get(Job, product.job_id)
    grant = session.get(Grant, product.grant_id)
    assert job is not None and grant is not None
    if job.state != JobState.APPROVED:
        raise Refused(f"job {job.id} behind the product is {job.state}" + (f": {job.stopped_reason}"
                                                                           if job.stopped_reason else ""),
                      code="job_not_approved" if job.state != JobState.STOPPED else "job_stopped", job_id=job.id)
    check_grant_usable(grant, now)
    prices.require_active_price(session, product.entry_id, now)
    return job, grant


def transition(session: Session, product: Product, action: ProductAction, *, reason: str, now: datetime) -> None:
    """The one function that changes a product's state (listing re-checks its job, grant and price)."""
    current = ProductState(product.status)
    target = _MOVES.get((current, action))
    if target is None:
        raise Conflict(f"product {product.id} is {current.value}; `{action.value}` is not possible from there",
                       code="invalid_product_transition", status=current.value, action=action.value)
    if action in _REASON_REQUIRED and not reason.strip():
        raise InvalidInput(f"{action.value} needs a reason", code="reason_required")
    if target in (ProductState.PENDING_REVIEW, ProductState.LISTED):
        check_callable_basis(session, product, now)
    product.status = target.value
    product.status_reason = reason.strip()
    product.updated_at = now
    if target == ProductState.LISTED:
        product.listed_at = now
    session.flush()


def publish(session: Session, *, job: Job, entry: PriceListEntry, name: str, description: str,
            parameters: dict[str, dict[str, Any]], now: datetime, actor: str) -> Product:
    """A new product in `draft`, backed by an approved job and priced by a price-list entry of its operator."""
    if job.state != JobState.APPROVED or not job.frozen_sql:
        raise Conflict(f"job {job.id} is {job.state}; only approved jobs back products", code="job_not_approved",
                       state=job.state)
    grant = session.get(Grant, job.grant_id)
    assert grant is not None
    check_grant_usable(grant, now)
    if entry.operator_org_id != job.operator_org_id:
        raise InvalidInput("the price-list entry belongs to another operator", code="price_entry_not_yours")
    if entry.product_id is not None:
        raise Conflict(f"price-list entry {entry.id} already prices product {entry.product_id}",
                       code="price_entry_in_use", product_id=entry.product_id)
    prices.require_active_price(session, entry.id, now)
    specs = parse_specs(job.parameters, parameters)
    if session.scalar(select(Product.id).where(Product.operator_org_id == job.operator_org_id,
                                               Product.name == name)) is not None:
        raise Conflict(f"the operator already has a product named {name!r}", code="product_exists")
    product = Product(id=new_id("prd"), operator_org_id=job.operator_org_id, job_id=job.id, grant_id=grant.id,
                      entry_id=entry.id, name=name, description=description,
                      parameters={n: s.to_json() for n, s in specs.items()}, status=ProductState.DRAFT.value,
                      status_reason="", created_at=now, created_by=actor, updated_at=now)
    session.add(product)
    entry.product_id = product.id
    session.flush()
    return product


# --- views -----------------------------------------------------------------------------------------------------

def _datasets(session: Session, job: Job) -> list[dict[str, Any]]:
    out = []
    for dataset_id, version in sorted(job.dataset_versions.items()):
        v = session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id,
                                                        DatasetVersion.version == version))
        out.append({"id": dataset_id, "version": version, "title": v.title if v else None,
                    "certificate_code": v.certificate_code if v else None})
    return out


def _price(session: Session, product: Product, now: datetime) -> dict[str, Any]:
    entry = session.get(PriceListEntry, product.entry_id)
    assert entry is not None
    current, status = prices.price_in_force(session, entry.id, now)
    return {"entry_id": entry.id, "category": entry.category, "basis": entry.basis, "unit": entry.unit,
            "unit_price": text(current.unit_price) if current else None,
            "tiers": [{"up_to": None if t.up_to is None else text(t.up_to), "unit_price": text(t.unit_price)}
                      for t in current.tiers] if current else [],
            "package": None if current is None or current.package is None else
            {"quantity": text(current.package.quantity), "price": text(current.package.price)},
            "status": status.status, "cap": None if status.cap is None else text(status.cap)}


def public_out(session: Session, product: Product, now: datetime) -> dict[str, Any]:
    """A listed product as the public catalogue shows it: operator, datasets (by name and certificate code),
    charging basis and price, and the parameters a customer may set. No SQL, no values."""
    job = session.get(Job, product.job_id)
    operator = session.get(Organization, product.operator_org_id)
    assert job is not None and operator is not None
    return {"id": product.id, "name": product.name, "description": product.description,
            "operator": {"id": operator.id, "name": operator.name}, "datasets": _datasets(session, job),
            "price": _price(session, product, now), "parameters": product.parameters,
            "listed_at": product.listed_at.isoformat() if product.listed_at else None}


def product_out(session: Session, product: Product, now: datetime) -> dict[str, Any]:
    """A product's full record (its operator, the agency and regulators): the public view plus its lifecycle."""
    return {**public_out(session, product, now), "status": product.status, "status_reason": product.status_reason,
            "job_id": product.job_id, "grant_id": product.grant_id, "created_at": product.created_at.isoformat(),
            "created_by": product.created_by, "updated_at": product.updated_at.isoformat()}


def list_products(session: Session, *, operator_org_id: str | None = None,
                  statuses: Sequence[str] | None = None) -> list[Product]:
    """Products in creation order, optionally of one operator and in some states (the Python interface that
    disclosure reports and the load test use)."""
    q = select(Product).order_by(Product.created_at, Product.id)
    if operator_org_id is not None:
        q = q.where(Product.operator_org_id == operator_org_id)
    if statuses:
        q = q.where(Product.status.in_(list(statuses)))
    return list(session.scalars(q))
