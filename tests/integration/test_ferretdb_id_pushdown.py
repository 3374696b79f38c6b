"""Reads by ``_id`` and by ``_id`` ``$in`` a list use the ``_id`` index on the server the tests run
against (FerretDB on SQLite, built by bin/services with the patches in services/mongo/), and
``core.mongo.find_by_ids`` returns exactly the documents that exist, however many ids it is given.
"""
from __future__ import annotations

import pytest

from core import mongo

pytestmark = pytest.mark.integration


@pytest.fixture
def pages(mongo_db):
    coll = mongo_db["id_pushdown_pages"]
    coll.drop()
    coll.insert_many([{"_id": f"u:{i}", "n": i, "items": ["x"] * 3} for i in range(2_500)])
    yield coll
    coll.drop()


def _plan(coll, filter: dict) -> str:
    """The server's plan of a find, as text (FerretDB's explain returns its backend's plan)."""
    return str(coll.database.command("explain", {"find": coll.name, "filter": filter}).get("queryPlanner"))


def test_find_by_ids_returns_what_exists_across_chunks(pages, mongo_db):
    ids = [f"u:{i}" for i in range(0, 2_600, 2)] + ["u:4", "nope"]  # 1,302 distinct ids: two `$in` queries
    found = mongo.find_by_ids(pages.name, ids, {"n": 1}, db=mongo_db)
    assert sorted(found) == sorted(f"u:{i}" for i in range(0, 2_500, 2))
    assert found["u:8"] == {"_id": "u:8", "n": 8}
    assert mongo.find_by_ids(pages.name, [], db=mongo_db) == {}
    many = mongo.find_by_ids_many([(pages.name, ["u:1", "u:2"], {"_id": 1}), (pages.name, ["zz"], None)], db=mongo_db)
    assert many == [{"u:1": {"_id": "u:1"}, "u:2": {"_id": "u:2"}}, {}]
    # the queries run concurrently: each answer still lands with its own request, whole across its chunks
    many = mongo.find_by_ids_many([(pages.name, ids, {"n": 1}), (pages.name, [], None), (pages.name, ["u:3"], None),
                                   (pages.name, ids[:5], {"_id": 1})], db=mongo_db)
    assert many[0] == found and many[1] == {} and many[2] == {"u:3": {"_id": "u:3", "n": 3, "items": ["x"] * 3}}
    assert many[3] == {f"u:{i}": {"_id": f"u:{i}"} for i in range(0, 10, 2)}


def test_id_reads_use_the_index(pages):
    if "ferretdbVersion" not in pages.database.client.admin.command("buildInfo"):
        pytest.skip("MongoDB's planner uses its _id index for both on its own")
    for filter in ({"_id": "u:7"}, {"_id": {"$in": ["u:7", "u:8"]}},  # alone, and beside another condition
                   {"_id": "u:7", "n": 7}, {"_id": {"$in": ["u:7", "u:8"]}, "n": 8}):  # (a lock's release)
        plan = _plan(pages, filter)
        assert "USING INDEX" in plan or "Index Scan" in plan, (filter, plan)  # SQLite's words, PostgreSQL's
    # what the patch leaves to FerretDB's own path still gives the right answer
    assert sorted(d["_id"] for d in pages.find({"_id": {"$in": ["u:1", 5, "u:3"]}})) == ["u:1", "u:3"]
    assert [d["_id"] for d in pages.find({"_id": {"$in": ["u:1", "u:2"]}, "n": 2})] == ["u:2"]
    assert pages.find_one({"_id": "u:7", "n": 8}) is None
    assert pages.count_documents({"_id": {"$in": [f"u:{i}" for i in range(1_200)]}}) == 1_200  # above 1,000: not pushed down
    assert pages.delete_many({"_id": {"$in": ["u:1", "u:2", "nope"]}}).deleted_count == 2
    assert pages.update_many({"_id": {"$in": ["u:3", "u:4"]}}, {"$set": {"n": -1}}).modified_count == 2
    assert pages.count_documents({"n": -1}) == 2 and pages.count_documents({}) == 2_498
    assert pages.delete_one({"_id": "u:6", "n": 7}).deleted_count == 0  # the other condition still holds
    assert pages.delete_many({"_id": {"$in": ["u:5", "u:6"]}, "n": 6}).deleted_count == 1
    assert pages.count_documents({}) == 2_497
