"""An ``update`` command's statements see each other's writes, in order, on the server the tests run
against. Our FerretDB build writes the documents one command modifies together, at its end
(services/mongo/msg_update_pending.go.snippet); these are MongoDB's semantics that it must keep:
a later statement reads what an earlier one wrote, whatever its filter, and a failed statement
leaves the ones before it written and the ones after it not run (ordered). A replacement by ``_id``
is written without reading the document it replaces, and upserts it if it is missing; its reply
names the statement of each upsert (FerretDB v1 numbered them 0, 1, ... whatever their statement).
"""
from __future__ import annotations

import pytest
from pymongo import InsertOne, ReplaceOne, UpdateMany, UpdateOne

pytestmark = pytest.mark.integration


@pytest.fixture
def coll(mongo_db):
    c = mongo_db["update_statements"]
    c.drop()
    c.insert_many([{"_id": f"u:{i}", "n": 0, "tag": "a"} for i in range(600)])
    yield c
    c.drop()


def test_many_updates_in_one_command_all_land(coll):
    result = coll.bulk_write([UpdateMany({"_id": f"u:{i}"}, {"$set": {"n": i + 1}}) for i in range(600)], ordered=False)
    assert (result.matched_count, result.modified_count) == (600, 600)
    assert {d["_id"]: d["n"] for d in coll.find()} == {f"u:{i}": i + 1 for i in range(600)}


def test_a_later_statement_reads_an_earlier_ones_write(coll):
    coll.bulk_write([UpdateOne({"_id": "u:1"}, {"$inc": {"n": 1}}), UpdateOne({"_id": "u:2"}, {"$inc": {"n": 5}}),
                     UpdateOne({"_id": "u:1"}, {"$inc": {"n": 1}}),  # the same _id again
                     UpdateMany({"n": 5}, {"$set": {"tag": "five"}}),  # a filter on a field just written
                     UpdateOne({"_id": {"$in": ["u:1"]}}, {"$inc": {"n": 10}}),  # an _id filter not equal to one id
                     UpdateOne({"_id": "u:3"}, {"$set": {"n": 7}}),
                     UpdateOne({"_id": "new"}, {"$set": {"n": 1}}, upsert=True),  # an insert among the updates
                     UpdateOne({"_id": "new"}, {"$inc": {"n": 1}}),
                     UpdateOne({"_id": "u:3"}, {"$inc": {"n": 1}})], ordered=True)
    got = {d["_id"]: (d["n"], d.get("tag")) for d in coll.find({"_id": {"$in": ["u:1", "u:2", "u:3", "new"]}})}
    assert got == {"u:1": (12, "a"), "u:2": (5, "five"), "u:3": (8, "a"), "new": (2, None)}


def test_a_failed_statement_leaves_earlier_ones_written_and_later_ones_not_run(coll):
    coll.update_one({"_id": "u:9"}, {"$set": {"tag": 3}})  # not a string: `$inc` of a string fails
    # the command itself: FerretDB's reply to a failed statement lacks `nModified`, which pymongo's
    # bulk_write needs to raise its BulkWriteError (a KeyError instead)
    reply = coll.database.command("update", coll.name, ordered=True, updates=[
        {"q": {"_id": "u:8"}, "u": {"$set": {"n": 1}}}, {"q": {"_id": "u:7"}, "u": {"$set": {"n": 2}}},
        {"q": {"_id": "u:9"}, "u": {"$inc": {"tag": "x"}}},  # fails: $inc by a string
        {"q": {"_id": "u:6"}, "u": {"$set": {"n": 3}}}])
    assert reply.get("writeErrors"), reply
    assert {d["_id"]: d["n"] for d in coll.find({"_id": {"$in": ["u:6", "u:7", "u:8"]}})} == {
        "u:8": 1, "u:7": 2, "u:6": 0}


def test_updates_and_inserts_of_one_bulk_keep_their_order(coll):
    coll.bulk_write([UpdateOne({"_id": "u:1"}, {"$set": {"n": 1}}), InsertOne({"_id": "ins", "n": 1}),
                     UpdateOne({"_id": "ins"}, {"$inc": {"n": 1}}), UpdateOne({"_id": "u:1"}, {"$inc": {"n": 1}})])
    assert coll.find_one({"_id": "ins"})["n"] == 2 and coll.find_one({"_id": "u:1"})["n"] == 2


def test_replacements_by_id_upsert_what_is_missing_and_report_each_statement(coll):
    coll.update_one({"_id": "u:2"}, {"$set": {"extra": True}})
    result = coll.bulk_write([ReplaceOne({"_id": "u:1"}, {"n": 10}, upsert=True),
                              ReplaceOne({"_id": "new:1"}, {"_id": "new:1", "n": 11}, upsert=True),
                              ReplaceOne({"_id": "u:2"}, {"n": 12}, upsert=True),  # drops `extra` and `tag`
                              ReplaceOne({"_id": "gone"}, {"n": 13}),  # missing, no upsert: nothing
                              ReplaceOne({"_id": "new:2"}, {"n": 14}, upsert=True),
                              UpdateOne({"_id": "new:2"}, {"$inc": {"n": 1}})], ordered=False)
    assert result.upserted_ids == {1: "new:1", 4: "new:2"}
    assert (result.matched_count, result.upserted_count) == (3, 2)
    docs = {d["_id"]: d for d in coll.find({"_id": {"$in": ["u:1", "u:2", "new:1", "new:2", "gone"]}})}
    assert docs == {"u:1": {"_id": "u:1", "n": 10}, "u:2": {"_id": "u:2", "n": 12}, "new:1": {"_id": "new:1", "n": 11},
                    "new:2": {"_id": "new:2", "n": 15}}
    assert list(docs["u:1"]) == ["_id", "n"]  # `_id` first, as MongoDB stores it


def test_a_replacement_that_changes_the_id_fails_and_writes_nothing_of_itself(coll):
    reply = coll.database.command("update", coll.name, ordered=True, updates=[
        {"q": {"_id": "u:1"}, "u": {"n": 1}}, {"q": {"_id": "u:2"}, "u": {"_id": "other", "n": 2}}])
    assert reply.get("writeErrors"), reply
    assert coll.find_one({"_id": "u:1"}) == {"_id": "u:1", "n": 1}
    assert coll.find_one({"_id": "u:2"})["n"] == 0 and coll.find_one({"_id": "other"}) is None


def test_bulk_upsert_replaces_and_inserts_across_chunks_and_counts_them(coll, mongo_db):
    """``core.mongo.bulk_upsert`` as the loads and the worker use it: a run again writes nothing twice."""
    from core import mongo

    docs = [{"_id": f"u:{i}", "n": -i} for i in range(400, 1100)]  # 200 stored, 500 new; chunks of 300
    assert mongo.bulk_upsert(coll.name, iter(docs), db=mongo_db, chunk=300) == {
        "matched": 200, "upserted": 500, "modified": 200}
    assert coll.count_documents({}) == 1100
    assert {d["_id"]: d for d in coll.find({"_id": {"$in": [d["_id"] for d in docs]}})} == {d["_id"]: d for d in docs}
    again = mongo.bulk_upsert(coll.name, docs, db=mongo_db, chunk=300)
    assert (again["matched"], again["upserted"], coll.count_documents({})) == (700, 0, 1100)


def test_a_bulk_of_single_document_updates_on_existing_documents_completes(settings):
    """FerretDB v1 kept the query of every statement of an ``update`` command open until the
    command ended: 300 ``UpdateOne`` on existing documents exhausted its connection pool, and the
    command (and that database) hung. Our build closes each when its statement ends. Its own
    database and a client with a timeout: on a build without the fix this fails instead of hanging."""
    from pymongo import MongoClient

    client = MongoClient(settings.mongo_uri, socketTimeoutMS=20_000)
    db = client[f"{settings.mongo_db}_bulk_updates"]
    try:
        db.t.insert_many([{"_id": f"d:{i}", "n": 0} for i in range(1_000)])
        result = db.t.bulk_write([UpdateOne({"_id": f"d:{i}"}, {"$set": {"n": i + 1}}) for i in range(1_000)], ordered=False)
        assert (result.matched_count, result.modified_count) == (1_000, 1_000)
        assert db.t.count_documents({"n": {"$gt": 0}}) == 1_000
    finally:
        client.drop_database(db.name)
        client.close()
