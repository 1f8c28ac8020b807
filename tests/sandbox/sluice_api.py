"""API-level factories: organizations, principals, datasets and grants through the real HTTP API."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from sandbox.clock import ManualClock
from sandbox.config import Settings

_seq = itertools.count(1)

SMALL_CSV = "person_id,district,income,phone\n" + "".join(
    f"p{i:03d},{'东区' if i % 2 else '西区'},{1000 + i},1380000{i:04d}\n" for i in range(40))


@dataclass
class Api:
    """A booted Sluice app plus factories that act through its HTTP API."""

    settings: Settings
    clock: ManualClock
    http: TestClient
    admin_key: str
    platform_org_id: str
    tmp: Path
    keys: dict[str, str] = field(default_factory=dict)

    def as_(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, method: str, path: str, key: str | None, **kw: Any) -> Any:
        return self.http.request(method, path, headers=self.as_(key), **kw)

    def ok(self, method: str, path: str, key: str | None, **kw: Any) -> Any:
        resp = self.call(method, path, key, **kw)
        assert resp.status_code < 400, resp.text
        return resp.json()

    def org(self, kind: str, name: str | None = None) -> str:
        body = {"name": name or f"{kind}-{next(_seq)}", "kind": kind}
        return str(self.ok("POST", "/v1/orgs", self.admin_key, json=body)["id"])

    def principal(self, org_id: str, *roles: str, name: str | None = None, **extra: Any) -> str:
        body = {"org_id": org_id, "name": name or f"p-{next(_seq)}", "roles": list(roles), **extra}
        return str(self.ok("POST", "/v1/principals", self.admin_key, json=body)["api_key"])

    def actor(self, kind: str, *roles: str) -> tuple[str, str]:
        """A new organization of `kind` and a principal in it with `roles`; returns (org_id, key)."""
        org_id = self.org(kind)
        return org_id, self.principal(org_id, *roles)

    def register(self, key: str, *, dataset_id: str | None = None, content: bytes | str = SMALL_CSV,
                 filename: str = "data.csv", expect: int = 201, certify: bool = True, **meta: Any) -> Any:
        """Register a dataset as `key` (a data steward); by default certified at once through the agency admin's
        `certify-now` shortcut, so tests that need a usable dataset skip the workflow. `certify=False` leaves
        the application in state `applied` for workflow tests."""
        body: dict[str, Any] = {
            "id": dataset_id or f"ds_{next(_seq)}", "title": "Test data", "domain": "other",
            "update_frequency": "monthly", "grade": "general", **meta}
        raw = content.encode("utf-8") if isinstance(content, str) else content
        resp = self.call("POST", "/v1/datasets", key, data={"metadata": json.dumps(body)},
                         files={"file": (filename, raw)})
        assert resp.status_code == expect, resp.text
        out = resp.json()
        if expect == 201 and certify:
            return self.certify(out["id"], out["version"])
        return out

    def apply(self, key: str, **kw: Any) -> Any:
        """A registration application left in state `applied` (see `register`)."""
        return self.register(key, certify=False, **kw)

    def new_version(self, key: str, dataset_id: str, *, content: bytes | str | None = None,
                    filename: str = "data.csv", expect: int = 201, certify: bool = True, **meta: Any) -> Any:
        """File a new version (new data, or metadata only when `content` is None); certified by default."""
        body: dict[str, Any] = {"title": "Test data", "domain": "other", "update_frequency": "monthly",
                                "grade": "general", **meta}
        files = None
        if content is not None:
            files = {"file": (filename, content.encode("utf-8") if isinstance(content, str) else content)}
        resp = self.call("POST", f"/v1/datasets/{dataset_id}/versions", key, data={"metadata": json.dumps(body)},
                         files=files)
        assert resp.status_code == expect, resp.text
        out = resp.json()
        if expect == 201 and certify:
            return self.certify(dataset_id, out["version"])
        return out

    def certify(self, dataset_id: str, version: int) -> Any:
        """Certify an application at once (agency admin shortcut); returns the version's metadata."""
        self.ok("POST", f"/v1/registrations/{dataset_id}/{version}/certify-now", self.admin_key,
                json={"reason": "test set-up: certified through the shortcut"})
        return self.ok("GET", f"/v1/datasets/{dataset_id}/versions/{version}", self.admin_key)

    def grant(self, operator_org_id: str, *, expect: int = 201, **body: Any) -> Any:
        payload = {"operator_org_id": operator_org_id, "scope": "whole", "purpose_class": "public_interest",
                   "valid_until": (self.clock.now() + timedelta(days=365)).isoformat(), **body}
        resp = self.call("POST", "/v1/grants", self.admin_key, json=payload)
        assert resp.status_code == expect, resp.text
        return resp.json()
