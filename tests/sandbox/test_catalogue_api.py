"""Dataset registration through the API: formats, encodings, refusals, versions, catalogue, certificates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import create_engine, text

CSV = "person_id,district,income,phone,diagnosis\n" + "".join(
    f"p{i},{'城东区' if i % 2 else '城西区'},{1000 + i},1380000{i:04d},flu\n" for i in range(25))


def _count(api, table: str) -> int:  # type: ignore[no-untyped-def]
    engine = create_engine(api.settings.resolved_database_url)
    with engine.connect() as conn:
        n = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(n)


def _steward(api) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return api.actor("provider", "data_steward")  # type: ignore[no-any-return]


def test_steward_registers_a_csv_and_gets_a_certificate(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    ds = api.register(steward, dataset_id="residents", content=CSV, entity_column="person_id",
                      columns={"income": {"constraint": "aggregate", "tags": ["personal"]},
                               "diagnosis": {"tags": ["sensitive_personal"]}})
    assert ds["row_count"] == 25 and ds["version"] == 1
    assert ds["certificate_code"].startswith(f"SLC-{api.clock.now().year}-")
    cols = {c["name"]: c for c in ds["columns"]}
    assert cols["diagnosis"]["constraint"] == "hidden"
    assert cols["person_id"]["constraint"] == "join"
    assert cols["district"]["constraint"] == "open"
    parquet = next((api.settings.resolved_home / "data" / "residents" / "1").glob("*.parquet"))
    detail = api.ok("GET", "/v1/datasets/residents", steward)
    assert detail["versions"][0]["parquet_sha256"] == hashlib.sha256(parquet.read_bytes()).hexdigest()


def test_gbk_csv_registers_with_the_same_content_as_utf8(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    a = api.register(steward, dataset_id="utf8_ds", content=CSV.encode("utf-8"))
    b = api.register(steward, dataset_id="gbk_ds", content=CSV.encode("gbk"), encoding="gbk")
    assert a["row_count"] == b["row_count"] == 25
    va = api.ok("GET", "/v1/datasets/utf8_ds", steward)["versions"][0]
    vb = api.ok("GET", "/v1/datasets/gbk_ds", steward)["versions"][0]
    assert va["parquet_sha256"] == vb["parquet_sha256"]


def test_wrongly_encoded_file_is_refused_with_its_line(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    body = api.register(steward, dataset_id="bad_enc", content=CSV.encode("gbk"), expect=400)
    assert body["code"] == "wrong_encoding" and body["context"]["line"] == 2


def test_malformed_csv_is_refused_and_leaves_nothing_behind(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    bad = CSV + "p99,城东区,1,2,3,EXTRA\n"
    body = api.register(steward, dataset_id="broken", content=bad, expect=400)
    assert body["code"] == "malformed_file" and body["context"]["line"] == 27
    assert not (api.settings.resolved_home / "data" / "broken").exists()  # not even an empty folder
    assert _count(api, "datasets") == 0 and _count(api, "certificates") == 0
    assert not any((api.settings.resolved_home / "uploads").iterdir())
    assert api.call("GET", "/v1/datasets/broken", steward).status_code == 404


def test_jsonl_and_parquet_are_accepted(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    lines = "".join(json.dumps({"route": f"r{i}", "boardings": i}) + "\n" for i in range(12))
    assert api.register(steward, dataset_id="bus_json", content=lines, filename="bus.jsonl")["row_count"] == 12
    parquet = next((api.settings.resolved_home / "data" / "bus_json" / "1").glob("*.parquet")).read_bytes()
    assert api.register(steward, dataset_id="bus_pq", content=parquet, filename="bus.parquet")["row_count"] == 12


def test_null_markers_become_nulls(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    ds = api.register(steward, dataset_id="with_na", content="a,b\n1,NA\n2,3\n", null_markers=["NA", ""])
    cols = {c["name"]: c["type"] for c in ds["columns"]}
    assert cols["b"] in ("BIGINT", "INTEGER")


def test_server_side_path_under_the_import_root_is_accepted(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    src = Path(api.settings.import_root) / "weather.csv"
    src.write_text("district,temp\nA,1.5\nB,2.5\n", "utf-8")
    resp = api.call("POST", "/v1/datasets", steward, data={"metadata": json.dumps({
        "id": "weather", "title": "w", "domain": "meteorology", "update_frequency": "daily", "grade": "general",
        "path": "weather.csv"})})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["row_count"] == 2 and [(c["name"], c["type"]) for c in body["columns"]] == [
        ("district", "VARCHAR"), ("temp", "DOUBLE")]
    assert _rows(api, "weather") == [("A", 1.5), ("B", 2.5)]


def _rows(api, dataset_id: str) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    """The rows a dataset's version 1 stores (its Parquet file), in order."""
    import pyarrow.parquet as pq

    folder = api.settings.resolved_home / "data" / dataset_id / "1"
    table = pq.read_table(next(folder.glob("*.parquet")))
    return [tuple(r.values()) for r in table.to_pylist()]


def test_a_semicolon_separated_file_suggests_the_delimiter_and_leaves_no_folder(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    body = api.register(steward, dataset_id="t_semi", content="district;temp\nA;1.5\nB;2.5\n", expect=400)
    assert body["code"] == "wrong_delimiter" and body["context"]["delimiter"] == ";"
    assert "--delimiter ';'" in body["detail"]
    assert not (api.settings.resolved_home / "data" / "t_semi").exists()
    ok = api.register(steward, dataset_id="t_semi", content="district;temp\nA;1.5\nB;2.5\n", delimiter=";")
    assert ok["row_count"] == 2 and _rows(api, "t_semi") == [("A", 1.5), ("B", 2.5)]


def test_an_import_error_names_the_uploaded_file_not_a_temporary_one(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    body = api.register(steward, dataset_id="sheet", content=b"PK\x03\x04", filename="人口 2026.dat", expect=400)
    assert "'人口 2026.dat'" in body["detail"] and "tmp" not in body["detail"]
    assert not any((api.settings.resolved_home / "uploads").iterdir())


def test_path_outside_the_import_root_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    for path in ("../secret.csv", "/etc/passwd"):
        resp = api.call("POST", "/v1/datasets", steward, data={"metadata": json.dumps({
            "id": "escape", "title": "w", "domain": "other", "update_frequency": "daily", "grade": "general",
            "path": path})})
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == "path_outside_import_root"


def test_operator_cannot_register_datasets(api) -> None:  # type: ignore[no-untyped-def]
    _, op = api.actor("operator", "operator")
    body = api.register(op, dataset_id="nope", expect=403)
    assert body["code"] == "permission_denied"


def test_steward_cannot_register_for_another_provider(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    other = api.org("provider")
    body = api.register(steward, dataset_id="theirs", provider_org_id=other, expect=404)
    assert body["code"] == "not_found_or_not_yours"


def test_unknown_domain_and_grade_are_refused(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    assert api.register(steward, domain="astrology", expect=400)["code"] == "invalid_domain"
    assert api.register(steward, grade="secret", expect=400)["code"] == "invalid_grade"


def test_versions_are_immutable_and_history_is_kept(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    v1 = api.register(steward, dataset_id="hist", content=CSV, entity_column="person_id")
    meta = {"title": "Test data", "domain": "other", "update_frequency": "monthly", "grade": "important",
            "entity_column": "person_id"}
    v2 = api.new_version(steward, "hist", **meta)
    assert v2["version"] == 2 and v2["grade"] == "important"
    assert v2["certificate_code"] and v2["certificate_code"] != v1["certificate_code"]
    old = api.ok("GET", "/v1/datasets/hist/versions/1", steward)
    assert old["grade"] == "general" and old["certificate_code"] == v1["certificate_code"]
    again = api.call("POST", "/v1/datasets/hist/versions", steward, data={"metadata": json.dumps(meta)})
    assert again.status_code == 400 and again.json()["code"] == "no_change"


def test_catalogue_is_public_and_shows_no_values(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    api.register(steward, dataset_id="residents", content=CSV)
    public = api.http.get("/v1/catalogue")
    assert public.status_code == 200
    text_body = public.text
    assert "residents" in text_body and "p1" not in text_body and "13800000" not in text_body
    listing = api.ok("GET", "/v1/datasets", steward)
    assert "13800000" not in json.dumps(listing, ensure_ascii=False)


def test_certificate_verifies_online_and_a_tampered_copy_fails_offline(api) -> None:  # type: ignore[no-untyped-def]
    from sandbox.catalogue.certificates import kid_for, load_public_key_pem, verify_certificate_document

    _, steward = _steward(api)
    code = api.register(steward, dataset_id="certified", content=CSV)["certificate_code"]
    online = api.http.get(f"/v1/certificates/{code}").json()
    assert online["valid"] and online["matches_registry"]
    doc = api.http.get(f"/v1/certificates/{code}/document").content
    pem = next(iter(api.http.get("/v1/keys").json()["certificate"].values()))
    key = load_public_key_pem(pem.encode())
    assert verify_certificate_document(doc, {kid_for(key): key}).valid
    tampered = doc.replace(b'"row_count":25', b'"row_count":26')
    assert tampered != doc
    assert not verify_certificate_document(tampered, {kid_for(key): key}).valid
    qr = api.http.get(f"/v1/certificates/{code}/qr.png")
    assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG")
    assert api.http.get("/v1/certificates/SLC-2000-000001").json()["code"] == "certificate_not_found"


def test_online_verification_flags_a_certificate_tampered_in_the_store(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    code = api.register(steward, dataset_id="stored", content=CSV)["certificate_code"]
    engine = create_engine(api.settings.resolved_database_url)
    with engine.begin() as conn:
        doc = conn.execute(text("SELECT document FROM certificates WHERE code = :c"), {"c": code}).scalar_one()
        conn.execute(text("UPDATE certificates SET document = :d WHERE code = :c"),
                     {"d": doc.replace('"row_count":25', '"row_count":24'), "c": code})
    engine.dispose()
    online = api.http.get(f"/v1/certificates/{code}").json()
    assert online["valid"] is False and online["signature_valid"] is False


def test_online_verification_flags_a_registry_that_no_longer_matches(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = _steward(api)
    code = api.register(steward, dataset_id="drifted", content=CSV)["certificate_code"]
    engine = create_engine(api.settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE dataset_versions SET row_count = 999 WHERE dataset_id = 'drifted'"))
    engine.dispose()
    online = api.http.get(f"/v1/certificates/{code}").json()
    assert online["signature_valid"] is True and online["matches_registry"] is False and online["valid"] is False
