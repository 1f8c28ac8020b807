"""Migration 0006 maps stored versions into the registration workflow without breaking their certificates."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.orm import Session

from sandbox.catalogue import registry
from sandbox.store.db import alembic_config, make_engine, upgrade
from sandbox.store.models import Dataset, DatasetVersion, Organization

OLD_FREQUENCIES = {"a": "每月", "b": "Daily ", "c": "whenever", "d": "quarterly"}
EXPECTED = {"a": "monthly", "b": "daily", "c": "irregular", "d": "quarterly"}
HEX = "ab" * 32


def _downgrade_to_before_0006(url: str) -> None:
    cfg = alembic_config()
    before = ScriptDirectory.from_config(cfg).get_revision("0006").down_revision
    engine = make_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, str(before))
    engine.dispose()


def test_stored_versions_become_certified_with_an_enum_frequency_and_keep_what_they_signed(store_url: str) -> None:
    _downgrade_to_before_0006(store_url)
    engine = make_engine(store_url)
    at = datetime(2026, 5, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO organizations (id, name, kind, is_platform, created_at) "
                          "VALUES ('org_p', 'P', 'provider', false, :at)"), {"at": at})
        for i, (ds, freq) in enumerate(OLD_FREQUENCIES.items(), start=1):
            conn.execute(text("INSERT INTO datasets (id, provider_org_id, latest_version, created_at) "
                              "VALUES (:id, 'org_p', 1, :at)"), {"id": ds, "at": at})
            conn.execute(text(
                "INSERT INTO dataset_versions (dataset_id, version, title, description, domain, update_frequency, "
                "grade, entity_column, columns, row_count, byte_size, source_sha256, source_bytes, parquet_sha256, "
                "source_name, storage_path, certificate_code, created_at, created_by) VALUES (:ds, 1, 't', '', "
                "'other', :f, 'general', NULL, '[]', 1, 1, :h, 1, :h, 's', 'p', :code, :at, 'prn_x')"),
                {"ds": ds, "f": freq, "h": HEX, "code": f"SLC-2026-00000{i}", "at": at})
    engine.dispose()
    engine = make_engine(store_url)
    upgrade(engine)
    with Session(engine) as s:
        provider = s.get(Organization, "org_p")
        assert provider is not None
        for ds, freq in OLD_FREQUENCIES.items():
            v = registry.get_version(s, ds, 1)
            assert v.update_frequency == EXPECTED[ds]
            assert v.update_frequency_legacy == (None if freq == EXPECTED[ds] else freq)
            assert (v.registration_state, v.registration_path) == ("certified", "migrated")
            assert v.applied_at == at and v.certified_at == at and v.quality == {} and v.expectations == []
            signed = registry.certificate_metadata(v, provider)
            assert signed["dataset"]["update_frequency"] == freq and "registration" not in signed
            assert registry.latest_certified_version(s, ds) is not None
        assert s.get(Dataset, "a") is not None and s.query(DatasetVersion).count() == 4
    engine.dispose()
