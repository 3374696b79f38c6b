"""``core.stored_lists.stored_list`` / ``read_list``: a live list is stored as one JSON string and read
back as the same items, in order; a list stored by field or as objects (the formats before, and
every batch list) reads as it was written."""
from __future__ import annotations

import copy

from core import stored_lists


def _doc(items):
    return {"_id": "u1", "items": items, "model_version": "v1", "source_event_id": "e1",
            "updated_at": 1.5, "as_of": 1.25}


def test_a_list_is_stored_as_one_string_and_reads_back_the_same():
    # scores that need all 17 digits, and product ids a field name could not hold
    items = [{"product_id": f"p.{i}$\"", "score": 1.0 / (i + 3), "because": f"q{i}" if i % 2 else None}
             for i in range(20)]
    doc = _doc(items)
    stored = stored_lists.stored_list(copy.deepcopy(doc))

    assert "items" not in stored and isinstance(stored["items_json"], str)
    assert {k: stored[k] for k in ("_id", "model_version", "source_event_id", "updated_at", "as_of")} == \
        {k: doc[k] for k in ("_id", "model_version", "source_event_id", "updated_at", "as_of")}
    assert stored_lists.read_list(copy.deepcopy(stored)) == doc


def test_a_popular_list_keeps_its_extra_fields_and_an_empty_list_stays_empty():
    popular = [{"product_id": "p1", "score": 9.0, "because": None, "title": "Kettle"},
               {"product_id": "p2", "score": 3.0, "because": None, "title": "Mug"}]
    assert stored_lists.read_list(stored_lists.stored_list(_doc(popular)))["items"] == popular
    assert stored_lists.read_list(stored_lists.stored_list(_doc([])))["items"] == []


def test_a_list_stored_by_field_reads_as_it_was_written():
    stored = {**_doc([]), "item_fields": {"product_id": ["p1", "p2"], "score": [2.0, 1.0], "because": [None, "p1"]}}
    del stored["items"]
    assert stored_lists.read_list(stored)["items"] == [{"product_id": "p1", "score": 2.0, "because": None},
                                                       {"product_id": "p2", "score": 1.0, "because": "p1"}]


def test_a_list_stored_as_objects_reads_as_it_is():
    doc = _doc([{"product_id": "p1", "score": 1.0, "because": "p9"}])
    assert stored_lists.read_list(copy.deepcopy(doc)) == doc
    assert stored_lists.read_list(None) is None
