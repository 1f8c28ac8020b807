"""A request's session (`deps.RequestSession`, shared by `db_session` and the run POST's `DirectRoute`): committed
when the request succeeds, rolled back with its cleanups when it raises or its commit fails, always closed and its
`db_slots` slot freed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sluice_api import Api
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sandbox.app.deps import AppState, RequestSession, on_rollback
from sandbox.store.models import Organization


def _state(api: Api) -> AppState:
    state: AppState = api.http.app.state.sluice  # type: ignore[attr-defined]
    return state


def _org(name: str, ident: str = "org_rs_1") -> Organization:
    return Organization(id=ident, name=name, kind="operator", created_at=datetime(2026, 1, 1, tzinfo=UTC))


def _names(api: Api) -> list[str]:
    with _state(api).sessions() as s:
        return list(s.scalars(select(Organization.name).order_by(Organization.name)))


def _free_slots(api: Api) -> int:
    slots = _state(api).db_slots
    assert slots is not None
    return slots._value  # the semaphore's free count


def test_a_request_that_succeeds_is_committed_and_frees_its_slot(api: Api) -> None:
    free, cleanups = _free_slots(api), []

    async def request() -> None:
        async with RequestSession(_state(api)) as session:
            assert _free_slots(api) == free - 1
            session.add(_org("Kept"))
            on_rollback(session, lambda: cleanups.append("ran"))

    api.http.portal.call(request)  # type: ignore[union-attr]
    assert "Kept" in _names(api) and cleanups == [] and _free_slots(api) == free


def test_a_request_that_raises_is_rolled_back_with_its_cleanups(api: Api) -> None:
    free, cleanups = _free_slots(api), []

    async def request() -> None:
        async with RequestSession(_state(api)) as session:
            session.add(_org("Dropped"))
            on_rollback(session, lambda: cleanups.append("ran"))
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        api.http.portal.call(request)  # type: ignore[union-attr]
    assert "Dropped" not in _names(api) and cleanups == ["ran"] and _free_slots(api) == free


def test_a_request_whose_commit_fails_is_rolled_back_with_its_cleanups(api: Api) -> None:
    free, cleanups = _free_slots(api), []
    taken = _names(api)[0]

    async def request() -> None:
        async with RequestSession(_state(api)) as session:
            session.add(_org(taken, "org_rs_2"))  # a unique name already in use: the commit fails
            on_rollback(session, lambda: cleanups.append("ran"))

    with pytest.raises(IntegrityError):
        api.http.portal.call(request)  # type: ignore[union-attr]
    assert cleanups == ["ran"] and _free_slots(api) == free
