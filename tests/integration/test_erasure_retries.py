"""An account deletion stopped at any write and run again ends where one uninterrupted deletion
ends: the product's counts, quoted summary, generated title and search words without the account.

A lock lost or held too long (``core.locking.LeaseLost``) stops ``delete_user_data`` before its
next write, and Celery's sweep (or the worker's ``delete_account``) runs it again
(recsite/accounts/deletion.py). Here the
stop is injected at each fenced write in turn (every write under a product's or search key's lock
calls its fence just before it), and the deletion is then run again to the end.
"""
from __future__ import annotations

import pytest

from core import erasure, locking, mongo, rating_history
from core.erasure import LOAD_STAMP

pytestmark = pytest.mark.integration

STAMP = 1_000_001  # the load that wrote the products and pages
REAL_FENCE = locking.fence
WORKING = (mongo.PRODUCTS, mongo.PRODUCT_REVIEWS, mongo.SEARCH_INDEX, mongo.USER_HISTORY, mongo.DELETED_USERS,
           mongo.EVENT_CLAIMS, mongo.RECOUNTS)


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "erasure_retries")


def _review(user: str, rating: float, summary: str, helpful: int) -> dict:
    return {"user_id": user, "rating": rating, "summary": summary, "helpful_votes": helpful, "ts": 1_300_000_000}


def _key(word: str, postings: list[tuple[str, str]]) -> dict:
    """A search key as mongo_load writes it (tier "0": a review's word, "1": the product's own)."""
    return {"_id": word, "n": len(postings), "ids": " ".join(p for p, _ in postings),
            "tiers": "".join(t for _, t in postings), "ranks": " ".join(str(i) for i in range(len(postings))),
            "cats": ["Music"], "cat": " ".join("0" for _ in postings)}


def _write_shop(db) -> None:
    """P: no metadata, titled by u's summary; Q: two review pages, u's review on the second."""
    for name in WORKING:
        db[mongo.physical_name(db, name)].delete_many({})
    mongo.bulk_upsert(mongo.PRODUCTS, [
        {"_id": "P", "title": "Music – “Zyzzyva quasar strings”", "title_generated": True, "category": "Music",
         "categories": ["Music"], "brand": "", "n_reviews": 3, "avg_rating": 3.333,
         "rating_hist": {"1": 1, "2": 0, "3": 0, "4": 1, "5": 1}, "sample_summary": "Zyzzyva quasar strings",
         LOAD_STAMP: STAMP},
        {"_id": "Q", "title": "Quasar Tuner", "title_generated": False, "category": "Music", "categories": [],
         "brand": "RT", "n_reviews": 3, "avg_rating": 3.667, "rating_hist": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1},
         "sample_summary": "Tunes fast", LOAD_STAMP: STAMP}], db=db)
    mongo.bulk_upsert(mongo.PRODUCT_REVIEWS, [
        {"_id": "P:1", "pages": 1, LOAD_STAMP: STAMP, "items": [
            _review("u", 1.0, "Zyzzyva quasar strings", 9), _review("a", 5.0, "Bright strings", 3),
            _review("b", 4.0, "", 0)]},
        {"_id": "Q:1", "pages": 2, LOAD_STAMP: STAMP, "items": [
            _review("a", 4.0, "Tunes fast", 5), _review("c", 5.0, "Solid", 2)]},
        {"_id": "Q:2", "pages": 2, LOAD_STAMP: STAMP, "items": [_review("u", 2.0, "Quasar junk", 1)]}], db=db)
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(
        "u", {"P": (1.0, 1.3e9), "Q": (2.0, 1.3e9)}, {})], db=db)
    mongo.bulk_upsert(mongo.SEARCH_INDEX, [
        _key("zyzzyva", [("P", "0")]), _key("quasar", [("Q", "1"), ("X", "1"), ("P", "0")]),
        _key("strings", [("P", "0")]), _key("junk", [("Q", "0")]), _key("tunes", [("Q", "0")]),
        _key("bright", [("P", "0")])], db=db)
    erasure.record_deleted_user("u", db=db)


def _write_shop_with_second_reviewer(db, user: str, summary: str) -> None:
    """The shop of :func:`_write_shop`, P also reviewed by ``user`` (2 stars, helpful 7: the quote
    after u's), who is marked deleted."""
    _write_shop(db)
    items = [_review("u", 1.0, "Zyzzyva quasar strings", 9), _review(user, 2.0, summary, 7),
             _review("a", 5.0, "Bright strings", 3), _review("b", 4.0, "", 0)]
    db[mongo.physical_name(db, mongo.PRODUCT_REVIEWS)].update_one({"_id": "P:1"}, {"$set": {"items": items}})
    db[mongo.physical_name(db, mongo.PRODUCTS)].update_one({"_id": "P"}, {"$set": {
        "n_reviews": 4, "avg_rating": 3.0, "rating_hist": {"1": 1, "2": 1, "3": 0, "4": 1, "5": 1}}})
    mongo.bulk_upsert(mongo.USER_HISTORY, [rating_history.history_doc(user, {"P": (2.0, 1.3e9)}, {})], db=db)
    erasure.record_deleted_user(user, db=db)


def _state(db) -> dict:
    """What the shop shows and keeps: products, review pages, search keys, locks, recount listings."""
    return {name: sorted(db[mongo.physical_name(db, name)].find({}), key=lambda d: str(d["_id"]))
            for name in (mongo.PRODUCTS, mongo.PRODUCT_REVIEWS, mongo.SEARCH_INDEX, mongo.EVENT_CLAIMS, mongo.RECOUNTS)}


def _stopping_at(call: int, calls: list[int]):
    """``locking.fence`` whose fences raise ``LeaseLost`` at the ``call``-th check overall (0:
    never), counting every check in ``calls``."""
    def fence(*args, **kwargs):
        check = REAL_FENCE(*args, **kwargs)

        def counted() -> None:
            calls.append(1)
            if len(calls) == call:
                raise locking.LeaseLost("stopped here by the test")
            check()
        return counted
    return fence


def test_a_deletion_stopped_at_any_write_and_run_again_leaves_nothing_of_the_account(own_db, monkeypatch):
    db = own_db
    _write_shop(db)
    calls: list[int] = []
    monkeypatch.setattr(locking, "fence", _stopping_at(0, calls))
    done = erasure.delete_user_data("u", db=db)
    expected, writes = _state(db), len(calls)

    products = {d["_id"]: d for d in expected[mongo.PRODUCTS]}
    assert products["P"]["sample_summary"] == "Bright strings"
    assert products["P"]["title"] == "Music – “Bright strings”"
    assert (products["P"]["n_reviews"], products["P"]["avg_rating"]) == (2, 4.5)
    assert (products["Q"]["n_reviews"], products["Q"]["avg_rating"]) == (2, 4.5)
    assert all(set(d) <= set(products["Q"]) | {"title"} for d in products.values())  # no field of the erasure left
    keys = {d["_id"]: d["ids"] for d in expected[mongo.SEARCH_INDEX]}
    assert keys == {"quasar": "Q X", "strings": "P", "tunes": "Q", "bright": "P"}
    assert writes >= 4  # pages of P and Q, their documents, the search keys

    for stop in range(1, writes + 1):
        _write_shop(db)
        calls.clear()
        monkeypatch.setattr(locking, "fence", _stopping_at(stop, calls))
        with pytest.raises(locking.LeaseLost):
            erasure.delete_user_data("u", db=db)
        monkeypatch.setattr(locking, "fence", _stopping_at(0, calls))
        again = erasure.delete_user_data("u", db=db)  # the sweep's run
        assert _state(db) == expected, f"stopped at write {stop} of {writes}"
        assert again["products"] == done["products"]  # a marked product counts as changed


def test_another_deletion_between_the_stop_and_the_retry_leaves_no_quote_of_the_account(own_db, monkeypatch):
    """u's deletion stops after P's document (P then quotes v's summary) and before P's page; v's
    deletion then picks P's next quote from the page, which still holds u's review, but not u's
    (marked deleted). The retry finds P marked (not subtracted again): as u then v uninterrupted."""
    db = own_db

    def shop() -> None:
        _write_shop_with_second_reviewer(db, "v", "Vivid")

    shop()
    for user in ("u", "v"):
        erasure.delete_user_data(user, db=db)
    expected = _state(db)
    assert {d["_id"]: d["sample_summary"] for d in expected[mongo.PRODUCTS]}["P"] == "Bright strings"

    shop()
    calls: list[int] = []
    monkeypatch.setattr(locking, "fence", _stopping_at(2, calls))  # P's document written, not its page
    with pytest.raises(locking.LeaseLost):
        erasure.delete_user_data("u", db=db)
    monkeypatch.setattr(locking, "fence", REAL_FENCE)
    erasure.delete_user_data("v", db=db)
    assert db[mongo.PRODUCTS].find_one({"_id": "P"})["sample_summary"] == "Bright strings"  # not u's again
    again = erasure.delete_user_data("u", db=db)
    assert _state(db) == expected
    assert again["products"] == 2  # P (done by the stopped run) counts as changed


def test_a_retry_keeps_a_word_another_review_says_now(own_db):
    """A mark's words were worked out from the pages of its run; a load's pages since (same stamp:
    a retried task) have another review saying one of them: the retry does not unlist it."""
    db = own_db
    _write_shop(db)
    mark = erasure.ERASING + erasure.erasure_token("u", db=db)
    products = db[mongo.physical_name(db, mongo.PRODUCTS)]
    products.update_one({"_id": "P"}, {"$set": {mark: {"s": STAMP, "w": ["quasar", "zyzzyva"]}}})
    db[mongo.physical_name(db, mongo.PRODUCT_REVIEWS)].update_one({"_id": "P:1"}, {"$set": {"items": [
        _review("a", 5.0, "Bright strings", 3), _review("c", 4.0, "Quasar glow", 2)]}})
    erasure.delete_user_data("u", db=db)

    keys = {d["_id"]: d["ids"] for d in db[mongo.SEARCH_INDEX].find({})}
    assert "P" in keys["quasar"].split(" ") and "zyzzyva" not in keys
    assert mark not in products.find_one({"_id": "P"})


def test_a_stopped_deletion_nobody_runs_again_is_finished_by_the_sweep(own_db, monkeypatch):
    """The site deleted the account and left the rest to Celery: ``finish_erasures`` runs the
    erasure again once the mark is older than its age, and ends where one uninterrupted deletion
    ends; a finished erasure is not run again."""
    db = own_db
    _write_shop(db)
    erasure.delete_user_data("u", db=db)
    expected = _state(db)

    _write_shop(db)
    monkeypatch.setattr(locking, "fence", _stopping_at(2, []))  # P's document written, not its page
    with pytest.raises(locking.LeaseLost):
        erasure.delete_user_data("u", db=db)
    monkeypatch.setattr(locking, "fence", REAL_FENCE)
    assert erasure.finish_erasures(3600, db=db) == {"finished": 0, "stopped": 0}  # too recent
    assert erasure.finish_erasures(0, db=db) == {"finished": 1, "stopped": 0}
    assert _state(db) == expected
    assert erasure.finish_erasures(0, db=db) == {"finished": 0, "stopped": 0}


def test_a_retry_unlists_the_words_of_a_mark_a_load_made_stale(own_db):
    """Stopped after P's pages, before the search keys; an incremental load then rewrote P's
    document (a new stamp, the mark kept) and failed before its search index went live: the retry
    finds nothing of the account on the pages and a mark of another stamp, and still unlists the
    mark's words (no other review says them)."""
    db = own_db
    _write_shop(db)
    mark = erasure.ERASING + erasure.erasure_token("u", db=db)
    db[mongo.physical_name(db, mongo.PRODUCTS)].update_one({"_id": "P"}, {"$set": {
        LOAD_STAMP: STAMP + 1, mark: {"s": STAMP, "w": ["zyzzyva"]}}})
    db[mongo.physical_name(db, mongo.PRODUCT_REVIEWS)].update_one({"_id": "P:1"}, {"$set": {
        LOAD_STAMP: STAMP + 1, "items": [_review("a", 5.0, "Bright strings", 3), _review("b", 4.0, "", 0)]}})
    erasure.delete_user_data("u", db=db)

    assert db[mongo.SEARCH_INDEX].find_one({"_id": "zyzzyva"}) is None
    assert mark not in db[mongo.PRODUCTS].find_one({"_id": "P"})


def test_a_retry_never_quotes_another_deleted_accounts_review(own_db, monkeypatch):
    """u's and c's deletions both stop on P after its document, before its page, each replacing a
    quote of its own: by the next review of an account not deleted, never by the other's, which is
    still on the page until that deletion runs again."""
    db = own_db
    _write_shop_with_second_reviewer(db, "c", "Cheery cello")
    for user in ("u", "c"):
        monkeypatch.setattr(locking, "fence", _stopping_at(2, []))  # P's document written, not its page
        with pytest.raises(locking.LeaseLost):
            erasure.delete_user_data(user, db=db)
    monkeypatch.setattr(locking, "fence", REAL_FENCE)
    erasure.delete_user_data("u", db=db)

    p = db[mongo.PRODUCTS].find_one({"_id": "P"})
    assert (p["sample_summary"], p["n_reviews"]) == ("Bright strings", 2)


def test_a_sweep_erases_at_most_its_limit_the_longest_deleted_first(own_db):
    """The first sweep after the deploy that began noting finished erasures finds every older
    deletion unfinished, and ran them all in one task (each scans the ratings by user); it takes
    at most its limit, the longest deleted first, and the next sweeps the rest."""
    db = own_db
    for i, user in enumerate(["c", "a", "b"]):  # deleted in this order: c first
        erasure.record_deleted_user(user, db=db)
        db[mongo.DELETED_USERS].update_one({"_id": user}, {"$set": {"deleted_at": 1000.0 + i}})
    assert erasure.finish_erasures(0, db=db, limit=2) == {"finished": 2, "stopped": 0}
    assert erasure.unfinished_erasures(0, 10, db=db) == ["b"]
    assert erasure.finish_erasures(0, db=db, limit=2) == {"finished": 1, "stopped": 0}


def test_an_erasure_that_fails_part_way_still_changes_the_catalog_revision(own_db, monkeypatch):
    """An erasure that stopped on an error of any kind (here MongoDB dropping the connection after
    the product documents were rewritten) has changed what the site's cached pages show: it changes
    the catalog's revision anyway (``core.catalog_revision``), not only when it ends. The sweep that
    ran it changed the revision only after all its erasures, and an error skipped it."""
    from pymongo.errors import AutoReconnect

    from core import catalog_revision

    _write_shop(own_db)
    before = catalog_revision.current()

    def dropped(*args, **kwargs):
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(erasure, "_unlist_words", dropped)
    with pytest.raises(AutoReconnect):
        erasure.delete_user_data("u", db=own_db)
    assert own_db[mongo.PRODUCTS].find_one({"_id": "P"})["n_reviews"] == 2  # P was rewritten before the error
    assert catalog_revision.current() != before


def test_a_run_again_after_a_run_killed_before_its_revision_change_makes_it(own_db, monkeypatch):
    """A run killed (SIGKILL: no ``except``, no ``finally`` runs) after it rewrote the product
    documents and before it changed the catalog's revision left pages cached before it showing the
    erased review, and the run again (the worker's redelivered ``delete_account``) found nothing
    left to change there, so it changed nothing either. Run as a rerun, it does."""
    from core import catalog_revision

    class Killed(BaseException):
        pass

    def killed():
        raise Killed()

    _write_shop(own_db)
    erasure.record_deleted_user("u", db=own_db)
    with monkeypatch.context() as patched:
        patched.setattr(catalog_revision, "bump", killed)  # killed as it was about to change it
        with pytest.raises(Killed):
            erasure.delete_user_data("u", db=own_db)
    assert own_db[mongo.PRODUCTS].find_one({"_id": "P"})["n_reviews"] == 2  # rewritten by the killed run
    before = catalog_revision.current()
    assert erasure.delete_user_data("u", db=own_db, rerun=True)["products"] == 0  # nothing left there
    assert catalog_revision.current() != before


def test_a_reload_of_the_search_index_during_a_deletion_keeps_what_it_loaded(own_db, monkeypatch):
    """A deletion read the search keys it unlists words from, then wrote them back by the
    collection's name: a reload that moved the index's pointer in between got the old keys back,
    what it listed meanwhile (a new product under the word) lost until the next full load."""
    def reload(docs: list[dict]) -> None:
        staging = mongo.replace_collection_start(mongo.SEARCH_INDEX, db=own_db)
        mongo.insert_docs(staging, docs, db=own_db)
        mongo.replace_collection_finish(mongo.SEARCH_INDEX, db=own_db)

    _write_shop(own_db)
    docs = list(own_db[mongo.SEARCH_INDEX].find({}))
    reload(docs)  # the index in a generation, as every load leaves it
    reloaded_docs = [d if d["_id"] != "strings" else _key("strings", [("P", "0"), ("NEW", "1")]) for d in docs]
    find_by_ids, reloaded = mongo.find_by_ids, []

    def read_then_reload(collection, ids, *args, **kwargs):
        out = find_by_ids(collection, ids, *args, **kwargs)
        if collection.split("__g")[0] == mongo.SEARCH_INDEX and not reloaded:
            reloaded.append(True)
            reload(reloaded_docs)
            mongo.forget_pointers()
        return out

    monkeypatch.setattr(mongo, "find_by_ids", read_then_reload)
    erasure._unlist_words({"strings": {"P"}}, own_db)
    assert reloaded
    live = own_db[mongo.SEARCH_INDEX].find_one({"_id": "strings"})
    assert live is not None and "NEW" in live["ids"].split(" "), live
    mongo.drop_retired(wait=True, db=own_db)
