"""core.catalog.search_ids against the real server's search index (a scratch database)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch(mongo_db, settings):
    from core import mongo

    db = mongo.get_client()[f"{settings.mongo_db}_search"]
    yield db
    mongo.get_client().drop_database(db.name)


def test_a_long_word_finds_products_while_it_is_being_typed(scratch):
    """Title words are indexed by their prefixes up to MAX_PREFIX characters and whole: a word typed
    past that length, not finished yet, is looked up by its indexed prefix."""
    from core import catalog, mongo, search

    word = "interchangeability"  # 18 letters
    doc = {"ids": "p1", "tiers": search.PRIMARY, "ranks": "0", "cats": ["Tools"], "cat": "0"}
    scratch[mongo.SEARCH_INDEX].insert_many([{**doc, "_id": word[:n]} for n in range(1, search.MAX_PREFIX + 1)]
                                            + [{**doc, "_id": word}])
    for typed in (word[:search.MAX_PREFIX], word[:search.MAX_PREFIX + 2], word):
        assert catalog.search_ids(typed, db=scratch) == ["p1"], typed
    assert catalog.search_ids("interchangeablx", db=scratch) == []  # within the prefixes: looked up exactly
