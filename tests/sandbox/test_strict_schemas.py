"""Input schemas forbid unknown fields, and the error names the field and the nearest valid one."""

from __future__ import annotations

import importlib
import json
import pkgutil
from types import ModuleType

import pytest
from pydantic import BaseModel

import sandbox.app
from sandbox.app import routes_catalogue, routes_grants
from sandbox.app.schemas import StrictModel, describe_error, fields_at


def _route_modules() -> list[ModuleType]:
    """Every `sandbox.app.routes_*` module, so that a new one is checked without being listed here."""
    names = sorted(m.name for m in pkgutil.iter_modules(sandbox.app.__path__) if m.name.startswith("routes_"))
    return [importlib.import_module(f"sandbox.app.{name}") for name in names]


def _input_models() -> list[type[BaseModel]]:
    out = []
    for module in _route_modules():
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__name__.endswith("In") \
                    and value.__module__ == module.__name__:
                out.append(value)
    return out


def test_the_input_schemas_of_every_route_module_are_checked() -> None:
    modules = {m.__name__.rsplit(".", 1)[1] for m in _route_modules()}
    assert {"routes_jobs", "routes_products", "routes_prices", "routes_billing"} <= modules
    checked = {m.__name__ for m in _input_models()}
    assert {"JobIn", "ProductIn", "PriceIn", "CapsIn", "BillIn", "InvokeIn"} <= checked


@pytest.mark.parametrize("model", _input_models(), ids=lambda m: m.__name__)
def test_every_input_schema_forbids_unknown_fields(model: type[BaseModel]) -> None:
    assert issubclass(model, StrictModel) and model.model_config.get("extra") == "forbid"


def test_nested_fields_are_found_through_dicts_and_optionals() -> None:
    assert "constraint" in fields_at(routes_catalogue.DatasetIn, ["columns", "income"])
    assert "data_used" in fields_at(routes_grants.GrantIn, ["scenario"])


def test_a_typo_names_the_nearest_field() -> None:
    error = {"loc": ("body", "colums"), "type": "extra_forbidden", "msg": "Extra inputs are not permitted"}
    assert describe_error(error, routes_catalogue.DatasetIn) == "colums: unknown field (did you mean `columns`?)"


@pytest.mark.store
def test_a_metadata_typo_that_would_open_a_hidden_column_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = api.actor("provider", "data_steward")
    resp = api.call("POST", "/v1/datasets", steward, data={"metadata": json.dumps({
        "id": "typo_ds", "title": "t", "domain": "other", "update_frequency": "monthly", "grade": "general",
        "columns": {"phone": {"constrant": "hidden"}}})}, files={"file": ("d.csv", "phone\n1\n")})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "invalid_metadata"
    assert "columns.phone.constrant: unknown field (did you mean `constraint`?)" in body["detail"]
    assert api.call("GET", "/v1/datasets/typo_ds", steward).status_code == 404


@pytest.mark.store
def test_a_grant_typo_is_refused_with_the_nearest_field(api) -> None:  # type: ignore[no-untyped-def]
    op, _ = api.actor("operator", "operator")
    resp = api.grant(op, expect=422, column_overides={"x": {"y": "hidden"}})
    assert resp["code"] == "validation_error"
    assert resp["detail"] == "column_overides: unknown field (did you mean `column_overrides`?)"


@pytest.mark.store
def test_a_bad_value_names_the_field_and_the_rule(api) -> None:  # type: ignore[no-untyped-def]
    op, _ = api.actor("operator", "operator")
    resp = api.grant(op, expect=422, max_result_rows=0)
    assert resp["detail"].startswith("max_result_rows: ") and "greater than or equal to 1" in resp["detail"]
    assert "errors.pydantic.dev" not in json.dumps(resp)
