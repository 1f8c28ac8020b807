"""The control store: migrations match the models and can run twice."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sandbox.store.db import current_revision, head_revision, make_engine, upgrade
from sandbox.store.models import Base


def test_upgrade_twice_is_safe_and_reaches_head(store_url: str) -> None:
    engine = make_engine(store_url)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrations_match_the_models(store_url: str) -> None:
    engine = make_engine(store_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []
