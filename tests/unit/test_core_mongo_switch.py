"""``core.mongo.replace_collection_finish`` switches readers by one conditional update: a reload
that another load's start replaced between the finish's read of the pointer and its update is
refused, and readers stay on the complete generation (a fake pointer collection stages that
interleaving, which a real server cannot be made to produce on demand; the conditional update
itself runs against FerretDB in tests/integration/test_batch_concurrency.py)."""
from __future__ import annotations

import contextlib
import copy

import pytest

from core import mongo


class Pointers:
    """The pointer collection: ``find_one`` by ``_id``, ``update_one`` by equality on every key of its
    filter. ``after_read`` runs once, right after the first ``find_one``: another job's start."""

    def __init__(self, docs: dict[str, dict], after_read=None) -> None:
        self.docs, self.after_read = docs, after_read

    def find_one(self, query: dict) -> dict | None:
        doc = copy.deepcopy(self.docs.get(query["_id"]))
        if self.after_read:
            self.after_read, run = None, self.after_read
            run(self.docs)
        return doc

    def update_one(self, query: dict, update: dict):
        doc = self.docs.get(query["_id"])
        matched = doc is not None and all(doc.get(k) == v for k, v in query.items() if k != "_id")
        if matched:
            doc.update(update["$set"])
        return type("Result", (), {"matched_count": int(matched)})()

    def replace_one(self, query: dict, doc: dict, upsert: bool = False) -> None:
        self.docs[query["_id"]] = doc


def _with(monkeypatch, pointers: Pointers) -> None:
    monkeypatch.setattr(mongo, "raw_collection", lambda db, name: pointers)
    monkeypatch.setattr(mongo, "drop_retired", lambda db=None: [])
    # the pointer's lock is a document in the real server (tests/integration/test_batch_concurrency.py)
    monkeypatch.setattr(mongo, "_pointer_lock", lambda name, db: contextlib.nullcontext(lambda: None))  # its fence


def test_a_start_between_the_read_and_the_switch_is_not_switched_over(monkeypatch):
    def another_start(docs):  # drops "mine" and begins its own generation
        docs["widgets"]["staging"] = "widgets__g3"

    pointers = Pointers({"widgets": {"_id": "widgets", "physical": "widgets__g1", "staging": "widgets__g2"}},
                        after_read=another_start)
    _with(monkeypatch, pointers)
    with pytest.raises(RuntimeError, match="widgets__g2 was replaced by another \\(widgets__g3\\)"):
        mongo.replace_collection_finish("widgets", db=object(), staging="widgets__g2")
    assert pointers.docs["widgets"] == {"_id": "widgets", "physical": "widgets__g1", "staging": "widgets__g3"}


def test_the_reload_in_progress_is_switched_and_the_old_generation_retired(monkeypatch):
    pointers = Pointers({"widgets": {"_id": "widgets", "physical": "widgets__g1", "staging": "widgets__g2"}})
    _with(monkeypatch, pointers)
    assert mongo.replace_collection_finish("widgets", db=object()) == "widgets__g2"
    assert pointers.docs["widgets"]["physical"] == "widgets__g2" and pointers.docs["widgets"]["staging"] is None
    assert pointers.docs["retired:widgets__g1"]["of"] == "widgets"
    with pytest.raises(RuntimeError, match="no reload of widgets in progress"):
        mongo.replace_collection_finish("widgets", db=object())


def test_only_ascii_digits_make_a_generation_name():
    """``str.isdigit`` takes "²", which ``int`` refuses: such a name made every drop_retired raise,
    also the one inside a finish, after its switch."""
    assert mongo._GENERATION.fullmatch("products__g1796545112031")[1] == "products"
    assert mongo._GENERATION.fullmatch("products__g²") is None
    assert mongo._GENERATION.fullmatch("products__v3") is None


def test_an_error_while_dropping_orphans_is_logged_not_raised(monkeypatch, caplog):
    """The orphan sweep is cleanup run after a finish's switch: a load that switched must not fail for it."""
    def broken(db, names):
        raise RuntimeError("listing failed")
    monkeypatch.setattr(mongo, "_orphans", broken)
    assert mongo._drop_orphans(object()) == []
    assert "dropping orphaned generations stopped (RuntimeError: listing failed)" in caplog.text
