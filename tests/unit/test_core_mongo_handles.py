"""``core.mongo.get_db`` keeps its database and collection objects (no server needed: pymongo
connects lazily, and ``ratings`` is neither reloaded nor kept per model version)."""
from __future__ import annotations

import gc
import weakref

from core import mongo


def test_the_database_and_its_collections_are_built_once_per_client_and_name():
    db = mongo.get_db(name="handles_a")
    assert mongo.get_db(name="handles_a") is db
    assert mongo.get_db(name="handles_b") is not db
    assert db[mongo.RATINGS] is db[mongo.RATINGS]
    assert db[mongo.RATINGS].full_name == "handles_a.ratings"


def test_a_new_client_gets_a_new_database_and_the_old_one_is_let_go():
    mongo.get_client.cache_clear()  # a client only this test holds (earlier tests' fixtures may keep theirs)
    db = mongo.get_db(name="handles_c")
    old_client = weakref.ref(db.client)
    mongo.get_client.cache_clear()  # what the tests do after a server restart
    again = mongo.get_db(name="handles_c")
    assert again is not db and again.client is mongo.get_client(None)
    old_client().close()
    del db
    gc.collect()
    assert old_client() is None  # not kept alive by get_db


def test_a_reloaded_collection_resolves_to_its_live_generation_on_every_access(monkeypatch):
    db = mongo.get_db(name="handles_d")
    live = {"products": "products__g1"}
    monkeypatch.setattr(mongo, "_pointers", lambda _db: {"live": live})
    assert db[mongo.PRODUCTS].name == "products__g1"
    live["products"] = "products__g2"  # a reload switched the pointer
    assert db[mongo.PRODUCTS].name == "products__g2"
