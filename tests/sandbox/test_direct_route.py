"""The run POST is served without FastAPI's dependency solving (`sandbox/app/direct.py`), and answers and audits
every request exactly as FastAPI's own handler of the same route does."""

from __future__ import annotations

import asyncio
import json
import re
from functools import partial
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Header, Query
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.routing import APIRoute, APIRouter
from pydantic import Field
from pydantic_core import PydanticUndefined
from sqlalchemy import select
from starlette.requests import Request

from sandbox.app.deps import require
from sandbox.app.direct import DirectDispatch, DirectRoute, check_direct_routes
from sandbox.app.schemas import StrictModel
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent
from tests.sandbox import test_jobs_api
from tests.sandbox.test_jobs_api import WEATHER, submit

city_files = test_jobs_api.city_files  # the city data and the health operator's world, as fixtures here too
world = test_jobs_api.world

JSON = {"content-type": "application/json"}
# name -> (request, served directly?)
REQUESTS: dict[str, tuple[dict[str, Any], bool]] = {
    "well formed": ({"json": {"params": {}}}, True),
    "no body": ({}, True),
    "with its result": ({"json": {"params": {}, "result": "arrow"}}, True),
    "with an Idempotency-Key": ({"json": {"params": {}}, "headers": {"Idempotency-Key": "again"}}, True),
    "replayed by its Idempotency-Key": ({"json": {"params": {}}, "headers": {"Idempotency-Key": "again"}}, True),
    "without a key": ({"json": {"params": {}}, "key": None}, True),
    "with an unknown key": ({"json": {"params": {}}, "key": "sk_nope_0123456789abcdef0123456789abcdef"}, True),
    "by a caller who may not run jobs": ({"json": {"params": {}}, "key": "steward"}, True),
    "of another organization's job": ({"json": {"params": {}}, "key": "other_key"}, True),
    "of a job that does not exist": ({"json": {"params": {}}, "job": "job_0000000000000000"}, True),
    "with an unknown field": ({"json": {"params": {}, "parms": {}}}, False),
    "with a result format that does not exist": ({"json": {"result": "xml"}}, False),
    "with params that are not an object": ({"json": {"params": [1]}}, False),
    "with a truncated JSON body": ({"content": b'{"params": ', "headers": JSON}, False),
    "with a JSON null body": ({"content": b"null", "headers": JSON}, False),
    "with a JSON list body": ({"content": b"[]", "headers": JSON}, False),
    "with a text/plain body": ({"content": b'{"params": {}}', "headers": {"content-type": "text/plain"}}, False),
    "with a charset in the content type": ({"content": b'{"params": {}}',
                                            "headers": {"content-type": "application/json; charset=utf-8"}}, False),
    "with an Idempotency-Key over 200 characters": ({"json": {}, "headers": {"Idempotency-Key": "k" * 201}}, False),
}
_IDS = re.compile(r"\b(run|job)_[0-9a-f]{16}\b|\b[0-9a-f]{32}\b|\b[0-9a-f]{64}\b")


def _normal(value: Any) -> Any:
    """`value` with what differs between two identical requests (run and job ids, trace ids, hashes, measured
    times) masked."""
    def timeless(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: "*" if k.endswith("_ms") else timeless(v) for k, v in node.items()}
        return [timeless(v) for v in node] if isinstance(node, list) else node

    return timeless(json.loads(_IDS.sub("*", json.dumps(value, sort_keys=True, default=str))))


def _send(api: Any, world: dict[str, Any], job_id: str, name: str) -> dict[str, Any]:
    """Send the request `name` and return what it answered and the audit records it wrote, normalized."""
    spec, _ = REQUESTS[name]
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        last = s.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0
    key = spec.get("key", "key")
    token = world.get(key, key) if key else None
    headers = spec.get("headers", {})
    kwargs = {k: v for k, v in spec.items() if k in ("json", "content")}
    resp = api.http.post(f"/v1/jobs/{spec.get('job', job_id)}/runs", headers={**api.as_(token), **headers}, **kwargs)
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(AuditEvent).where(AuditEvent.id > last).order_by(AuditEvent.id)))
    engine.dispose()
    body = resp.json() if resp.headers["content-type"].endswith("json") else len(resp.content) > 0
    headers_sent = {k: v for k, v in resp.headers.items() if k not in ("x-trace-id", "content-length", "date")}
    records = [{c.name: getattr(r, c.name) for c in AuditEvent.__table__.columns if c.name not in ("id", "seq")}
               for r in rows]
    return _normal({"status": resp.status_code, "headers": headers_sent, "body": body, "records": records})


def test_every_run_request_is_answered_and_audited_as_fastapi_answers_it(api, world,  # type: ignore[no-untyped-def]
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = {side: submit(api, world["key"], world["domain"], WEATHER)["id"] for side in "ab"}  # one per side
    fallbacks: list[str] = []
    fastapi_handle = APIRoute.handle

    async def counted(self: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        fallbacks.append(scope["path"])
        await fastapi_handle(self, scope, receive, send)

    routed: list[str] = []  # requests that reached the route through FastAPI's router, not the dispatch
    direct_handle = DirectRoute.handle

    async def through_router(self: DirectRoute, scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await direct_handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)
    monkeypatch.setattr(DirectRoute, "handle", through_router)
    direct = {}
    for name, (_, served_directly) in REQUESTS.items():
        fallbacks.clear()
        routed.clear()
        direct[name] = _send(api, world, jobs["a"], name)
        assert bool(fallbacks) != served_directly, f"{name}: served directly {not fallbacks}"
        assert bool(routed) != served_directly, f"{name}: dispatched {not routed}"  # what FastAPI decides: routed
    monkeypatch.setattr(DirectRoute, "handle", fastapi_handle)  # the same route, through FastAPI's handler,

    async def through(self: DirectDispatch, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    monkeypatch.setattr(DirectDispatch, "__call__", through)  # middleware and router
    for name in REQUESTS:
        by_fastapi = _send(api, world, jobs["b"], name)
        assert direct[name] == by_fastapi, name
        assert direct[name]["records"], f"{name}: not audited"
    statuses = {name: direct[name]["status"] for name in REQUESTS}
    assert statuses["well formed"] == statuses["with a JSON null body"] == 201
    assert statuses["without a key"] == 401 and statuses["by a caller who may not run jobs"] == 403
    assert statuses["with an unknown field"] == statuses["with a truncated JSON body"] == 422


def test_a_run_route_refuses_what_it_would_not_solve() -> None:
    router = APIRouter()

    def extra() -> int:
        return 1

    def endpoint(job_id: str, guard: Any = require("run", "create"), n: int = Depends(extra)) -> None:
        """A route with a dependency the direct path does not solve."""

    with pytest.raises(TypeError, match="only the gate"):
        router.add_api_route("/x/{job_id}", endpoint, methods=["POST"], route_class_override=DirectRoute)

    def gated(job_id: str, guard: Any = require("run", "create")) -> None:
        """A route the direct path serves."""

    router.add_api_route("/x/{job_id}", gated, methods=["POST"], route_class_override=DirectRoute)
    app = FastAPI()
    app.include_router(router, dependencies=[Depends(extra)])
    with pytest.raises(RuntimeError, match="router-level dependencies"):
        check_direct_routes(app)


def test_the_thread_hop_keeps_the_context_and_outlives_a_cancellation() -> None:
    import asyncio
    import contextvars
    import threading
    import time

    from sandbox.app.direct import in_thread

    request_id = contextvars.ContextVar("request_id", default="none")
    ended = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        ended.set()
        return request_id.get()

    async def main() -> tuple[str, bool]:
        request_id.set("r1")
        seen = await in_thread(slow)
        ended.clear()
        task = asyncio.create_task(in_thread(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen, ended.is_set()  # the cancellation went on only once the call had ended

    assert asyncio.run(main()) == ("r1", True)


def test_the_openapi_document_describes_the_run_route_as_declared(api) -> None:  # type: ignore[no-untyped-def]
    operation = api.http.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/runs"]["post"]
    assert operation["operationId"] == "run_job_v1_jobs__job_id__runs_post" and operation["tags"] == ["jobs"]
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("job_id", "path", True), ("Idempotency-Key", "header", False)]
    assert {"type": "string", "maxLength": 200} in operation["parameters"][1]["schema"]["anyOf"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/RunIn"} in body["anyOf"] and "201" in operation["responses"]


class _Body(StrictModel):
    params: dict[str, Any] = Field(default_factory=dict)
    limit: int = 10


def _planned_route(endpoint: Any) -> DirectRoute:
    return DirectRoute("/x/{job_id}", endpoint, methods=["POST"])


def _fastapi_arguments(route: DirectRoute, request: Request, received: Any) -> dict[str, Any] | None:
    """What FastAPI's own functions make of the request's parameters (None when they refuse any)."""
    dependant, values, errors = route.dependant, {}, []
    for fields, source in ((dependant.path_params, request.path_params), (dependant.query_params,
                           request.query_params), (dependant.header_params, request.headers),
                           (dependant.cookie_params, request.cookies)):
        found, refused = request_params_to_args(fields, source)
        values.update(found)
        errors += refused
    if dependant.body_params:
        found, refused = asyncio.run(request_body_to_args(dependant.body_params, received, route._embed_body_fields))
        values.update(found)
        errors += refused
    return None if errors else values


def _request(path_params: dict[str, str], headers: dict[str, str], query: bytes = b"") -> Request:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/x", "headers": raw, "query_string": query,
                    "path_params": path_params})


def test_the_run_routes_parameters_are_validated_as_fastapi_validates_them() -> None:
    def endpoint(job_id: str, body: _Body | None = None, guard: Any = require("run", "create"),
                 key: str | None = Header(None, alias="Idempotency-Key", max_length=5),
                 page: int = Query(3, ge=1), tries: int = Header("2", validate_default=True),
                 max_rows: int = Header(1)) -> None:
        """Simple parameters of every kind: each one planned."""

    route = _planned_route(endpoint)
    assert route._plans is not None and route._body_plan is not None  # planned: the plans decide below
    bodies: list[Any] = [PydanticUndefined, {}, {"params": {"a": 1}}, {"limit": "7"}, {"limit": "x"},
                         {"params": [1]}, {"other": 1}, {"params": {}, "limit": None}]
    requests = [({"job_id": "j1"}, {}, b""), ({"job_id": "j1"}, {"Idempotency-Key": "abc"}, b"page=2"),
                ({"job_id": "j1"}, {"Idempotency-Key": "abcdef"}, b""), ({}, {}, b""),
                ({"job_id": "j1"}, {}, b"page=0"), ({"job_id": "j1"}, {}, b"page=x"),
                ({"job_id": "j1"}, {"tries": "5"}, b""), ({"job_id": "j1"}, {"tries": "no"}, b""),
                ({"job_id": "j1"}, {"max-rows": "4"}, b""), ({"job_id": "j1"}, {"max-rows": "four"}, b"")]
    seen = set()
    for path_params, headers, query in requests:
        for received in bodies:
            request = _request(path_params, headers, query)
            planned = route._planned(request, received)
            assert planned == _fastapi_arguments(route, _request(path_params, headers, query), received), (
                path_params, headers, query, received)
            seen.add(planned is None)
    assert seen == {True, False}  # both accepted and refused requests were compared


def test_a_parameter_with_several_values_is_left_to_fastapi() -> None:
    def endpoint(job_id: str, tags: list[str] = Query([]), guard: Any = require("run", "create")) -> None:
        """A sequence parameter: FastAPI reads all its values, which a plan would not."""

    route = _planned_route(endpoint)
    assert route._plans is None
    request = _request({"job_id": "j1"}, {}, b"tags=a&tags=b")
    values = asyncio.run(route._arguments(request, b""))
    assert values == {"job_id": "j1", "tags": ["a", "b"]}


def test_calls_handed_over_together_each_get_a_thread_and_their_own_outcome(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from sandbox.app import direct

    hops = direct.Hops(limit=40, name="test-hop")
    monkeypatch.setattr(direct, "HOPS", hops)

    def meet(barrier: threading.Barrier, i: int) -> tuple[int, str]:
        barrier.wait()  # broken (raises) unless all the calls run at once
        if i == 0:
            raise ValueError("the first call fails")
        return i, threading.current_thread().name

    async def together(n: int) -> list[Any]:
        barrier = threading.Barrier(n, timeout=10)
        return await asyncio.gather(*(direct.in_thread(partial(meet, barrier, i)) for i in range(n)),
                                    return_exceptions=True)

    first = asyncio.run(together(6))
    deadline = time.monotonic() + 10
    while hops._idle < 6 and time.monotonic() < deadline:  # a thread counts itself idle just after handing back
        time.sleep(0.01)
    second = asyncio.run(together(7))  # over the first's six idle threads
    assert isinstance(first[0], ValueError) and isinstance(second[0], ValueError)
    assert [i for i, _ in first[1:]] == [1, 2, 3, 4, 5] and [i for i, _ in second[1:]] == [1, 2, 3, 4, 5, 6]
    assert len({name for _, name in first[1:] + second[1:]}) <= 7 and hops._threads == 7  # one thread more


def test_calls_beyond_the_thread_limit_wait_their_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from sandbox.app import direct

    monkeypatch.setattr(direct, "HOPS", direct.Hops(limit=2, name="test-hop"))

    def call(i: int) -> tuple[int, str]:
        time.sleep(0.02)
        return i, threading.current_thread().name

    async def together() -> list[tuple[int, str]]:
        return await asyncio.gather(*(direct.in_thread(partial(call, i)) for i in range(5)))

    outcomes = asyncio.run(together())
    assert [i for i, _ in outcomes] == [0, 1, 2, 3, 4] and len({name for _, name in outcomes}) == 2


def _dispatched_app(earlier: bool = False) -> FastAPI:
    router = APIRouter(prefix="/v1")

    def gated(job_id: str, guard: Any = require("run", "create")) -> None:
        """A route the direct path serves."""

    router.add_api_route("/x/{job_id}", gated, methods=["POST"], route_class_override=DirectRoute)
    app = FastAPI()
    if earlier:
        @app.post("/v1/x/{name}")
        def first(name: str) -> str:
            return "the route before"
    app.include_router(router)
    app.add_middleware(DirectDispatch, router=app.router)
    return app


def test_the_dispatch_gives_the_run_route_the_scope_fastapis_router_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient
    from starlette.responses import PlainTextResponse

    seen: list[dict[str, Any]] = []

    async def captured(self: DirectRoute, scope: Any, receive: Any, send: Any, fallback: Any) -> None:
        seen.append({**scope, "fastapi": dict(scope["fastapi"])})
        await PlainTextResponse("served")(scope, receive, send)

    monkeypatch.setattr(DirectRoute, "serve", captured)
    client = TestClient(_dispatched_app())
    assert client.post("/v1/x/j1").text == "served"
    passed = DirectDispatch.__call__

    async def through(self: DirectDispatch, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    monkeypatch.setattr(DirectDispatch, "__call__", through)  # FastAPI's middleware and router
    assert client.post("/v1/x/j1").text == "served"
    direct, routed = seen
    assert set(routed) - set(direct) == {"fastapi_middleware_astack"}  # the exit stack for uploaded files
    assert {k: v for k, v in routed.items() if k != "fastapi_middleware_astack"} == direct
    assert direct["route"].path == "/v1/x/{job_id}" and direct["path_params"] == {"job_id": "j1"}
    monkeypatch.setattr(DirectDispatch, "__call__", passed)
    assert client.get("/v1/x/j1").status_code == 405 and len(seen) == 2  # not dispatched: FastAPI answers


def test_a_route_the_router_tries_first_is_served_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    served: list[str] = []

    async def captured(self: DirectRoute, scope: Any, receive: Any, send: Any, fallback: Any) -> None:
        served.append(scope["path"])

    monkeypatch.setattr(DirectRoute, "serve", captured)
    response = TestClient(_dispatched_app(earlier=True)).post("/v1/x/j1")
    assert response.json() == "the route before" and served == []
