"""An account's reviews come off a product's counts once, whichever pages and product document a
deletion meets while a load writes them (core.shopper_controls._without_reviews).

A load (spark_jobs/mongo_load.py) writes the products, then the review pages, both with its
``load_stamp``, then erases again every account deleted meanwhile. A deletion in between finds the
account's reviews on the previous pages (an older stamp) and takes them off the load's products,
which count them, remembering their ratings in the document; the eraser finds them again on the
load's pages (the document's stamp), takes those off and adds back what was remembered. Here the
load's writes are made directly, as it makes them (a new generation switched in, or an upsert by
``_id``), without Spark; its reconciliation runs on the reviews it loaded. A load's write landing
inside a deletion is injected by wrapping pymongo's ``Collection`` methods.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import pytest
from pymongo.collection import Collection

from core import catalog, mongo, rating_history, shopper_controls
from core.shopper_controls import ERASED, LOAD_STAMP

pytestmark = pytest.mark.integration

Review = tuple[str, float, float]  # (user, rating, ts)
S1, S2 = 1_000_001, 1_000_002  # two loads' stamps


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "erase_counts")


def _product(pid: str, stamp: int, reviews: list[Review]) -> dict:
    """The product document a load writes from ``reviews`` (no quoted summary: counts only)."""
    n = len(reviews)
    return {"_id": pid, "title": pid, "category": "c", "categories": [], "brand": "", "title_generated": False,
            "sample_summary": "", "n_reviews": n, "avg_rating": round(sum(r for _, r, _ in reviews) / n, 3) if n else 0.0,
            "rating_hist": {str(s): sum(1 for _, r, _ in reviews if r == s) for s in range(1, 6)}, LOAD_STAMP: stamp}


def _pages(pid: str, stamp: int, reviews: list[Review]) -> dict:
    return {"_id": f"{pid}:1", "pages": 1, LOAD_STAMP: stamp, "items": [
        {"user_id": u, "rating": r, "ts": t, "summary": f"{u} on {pid}", "helpful_votes": 0} for u, r, t in reviews]}


def _reload(db, collection: str, docs: list[dict]) -> None:
    """A full load's write: a new generation, switched in (core.mongo)."""
    staging = mongo.replace_collection_start(collection, db=db)
    mongo.raw_collection(db, staging).insert_many(docs)
    mongo.replace_collection_finish(collection, db=db, staging=staging)


def _upsert(db, collection: str, docs: list[dict]) -> None:
    """An incremental load's write: every field set by ``_id``, ``erased`` removed (mongo_load
    writes it null: ``_stored``'s ``UNSET``)."""
    mongo.set_by_ids(collection, {d["_id"]: {**{k: v for k, v in d.items() if k != "_id"},
                                             **({ERASED: mongo.UNSET} if collection == mongo.PRODUCTS else {})}
                                  for d in docs}, db=db)


def _load(db, write, stamp: int, loaded: dict[str, list[Review]], what: str) -> None:
    """The load's products or pages (``what``) of ``loaded``, written by ``write`` (_reload, _upsert)."""
    make, collection = (_product, mongo.PRODUCTS) if what == "products" else (_pages, mongo.PRODUCT_REVIEWS)
    write(db, collection, [make(p, stamp, r) for p, r in loaded.items()])


def _history(db, user: str, loaded: dict[str, list[Review]]) -> None:
    ratings = [{"p": pid, "r": r, "t": t} for pid, reviews in loaded.items() for u, r, t in reviews if u == user]
    db[mongo.USER_HISTORY].replace_one({"_id": user}, {"_id": user, "ratings": ratings}, upsert=True)


def _before(db, write, before: dict[str, list[Review]], *users: str) -> None:
    """What the previous load (stamp S1) left: products, pages, the users' histories."""
    _load(db, write, S1, before, "products")
    _load(db, write, S1, before, "pages")
    for user in users:
        _history(db, user, before)


def _delete(db, user: str) -> None:
    """The site's deletion: recorded, then erased (recsite/accounts/deletion.py)."""
    rating_history.record_deleted_user(user, db=db)
    shopper_controls.delete_user_data(user, db=db)


def _erase(db, loaded: dict[str, list[Review]], since: float) -> None:
    """The load's eraser (``erase_accounts_deleted_since``): each account deleted since ``since``,
    with the products the load had its reviews of."""
    for user in sorted(rating_history.deleted_user_ids(db=db, since=since)):
        shopper_controls.delete_user_data(user, db=db, indexed={
            pid: [f"{user} on {pid}"] for pid, reviews in loaded.items() if any(u == user for u, _, _ in reviews)})


def _reconciles(spark, loaded: dict[str, list[Review]], since: float) -> dict:
    """The load's reconciliation (raises when a product falls short by more than the deleted
    accounts' reviews of it)."""
    from spark_jobs.mongo_load import reconcile, review_totals

    rows = [(u, pid) for pid, reviews in loaded.items() for u, _, _ in reviews]
    reviews = spark.createDataFrame(rows, "user_id string, product_id string")
    return reconcile(reviews, *review_totals(reviews), len(loaded), since)


def _counts(db, pids) -> dict[str, tuple]:
    return {p: (d["n_reviews"], d["rating_hist"], d["avg_rating"])
            for p in pids for d in [db[mongo.PRODUCTS].find_one({"_id": p})]}


def _without(loaded: dict[str, list[Review]], *users: str) -> dict[str, tuple]:
    """The counts a load without ``users``' reviews writes."""
    return {p: (d["n_reviews"], d["rating_hist"], d["avg_rating"]) for p, reviews in loaded.items()
            for d in [_product(p, 0, [x for x in reviews if x[0] not in users])]}


def _remembered(db) -> list:
    """Every ``erased`` entry the product documents hold."""
    return [e for d in db[mongo.PRODUCTS].find({}) for e in d.get(ERASED) or []]


@contextmanager
def _once(method: str, when, then) -> Iterator[list]:
    """Run ``then()`` once, right after the first call of ``Collection.<method>`` that ``when(self,
    args)`` accepts (a load's write landing between a deletion's read and its write); yields a list
    that holds 1 once it ran."""
    original, fired = getattr(Collection, method), []

    def wrapped(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if not fired and when(self, args):
            fired.append(1)
            then()
        return out
    setattr(Collection, method, wrapped)
    try:
        yield fired
    finally:
        setattr(Collection, method, original)


def _product_read(self, args) -> bool:
    """The deletion's read of a product document (its projection names the stamp)."""
    return self.name.startswith(mongo.PRODUCTS) and LOAD_STAMP in (args[1] if len(args) > 1 else {})


def test_a_deletion_between_the_products_and_the_pages_is_subtracted_once(spark, own_db):
    """Full load. The account is deleted after the load's products went live, before its pages:
    the site finds its reviews on the previous pages and takes them off the load's products
    (remembering their ratings there, which the site's product page does not read); the eraser then
    finds them on the load's pages, takes those off and adds back the remembered ones: a second
    review of the account only the load's pages hold comes off once too, and nothing stays
    remembered."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)], "R": [("u", 4.0, 70.0), ("c", 1.0, 80.0)]}
    _before(db, _reload, before, "u")
    started = time.time()
    loaded = {"P": before["P"] + [("u", 4.0, 300.0)], "R": before["R"] + [("d", 5.0, 90.0)]}

    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    assert ERASED in db[mongo.PRODUCTS].find_one({"_id": "P"})  # until the eraser; never shown by the site:
    assert ERASED not in catalog.get_product("P", db=db)
    _load(db, _reload, S2, loaded, "pages")
    assert _reconciles(spark, loaded, started)["reviews_erased_by_deletions"] == 2  # as the site took off
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u")
    assert _remembered(db) == []
    _delete(db, "u")  # again (the worker's delete_account): nothing left to take off
    assert _counts(db, loaded) == _without(loaded, "u")


def test_deletions_before_during_and_after_an_incremental_load_are_each_subtracted_once(spark, own_db):
    """Incremental load (upserts by ``_id``), each product once:
    - P: ``u``'s deletion reaches it before the load's products (the old document and pages):
      the eraser takes off everything it finds on the load's pages;
    - Q: the same deletion, still running, reaches it after the load's products, before its pages
      (the load's document, the old pages): the eraser takes off nothing more;
    - S: ``v`` deletes the account after the load's pages: the site takes its review off the load's
      document by the load's pages, and the eraser finds nothing;
    - a repeated deletion of both changes nothing.
    """
    from core.shopper_controls import _erase_reviews  # delete_user_data's step, one product each

    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)], "Q": [("u", 1.0, 20.0), ("b", 4.0, 21.0)],
              "S": [("v", 3.0, 30.0), ("c", 4.0, 31.0), ("d", 4.0, 32.0)]}
    _before(db, _upsert, before, "u", "v")
    started = time.time()
    loaded = {p: r + [(f"new-{p}", 5.0, 40.0)] for p, r in before.items()}  # each touched by the new category

    rating_history.record_deleted_user("u", db=db)
    _erase_reviews("P", "u", db)
    _load(db, _upsert, S2, loaded, "products")
    _erase_reviews("Q", "u", db)
    _load(db, _upsert, S2, loaded, "pages")
    _delete(db, "v")
    assert _reconciles(spark, loaded, started)["reviews_erased_by_deletions"] == 2  # Q's and S's
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u", "v")
    assert _remembered(db) == []
    _delete(db, "u")
    _delete(db, "v")
    assert _counts(db, loaded) == _without(loaded, "u", "v")


def test_a_deletion_stopped_after_the_product_update_leaves_nothing_to_subtract_twice(own_db, monkeypatch):
    """What the deletion remembers is written in the product's update itself: stopped right after
    it (here by an exception; the process killed there alike), nothing is half-done, and the
    eraser takes the account's review off once (main wrote its record of the subtraction after the
    update: killed in between, the eraser subtracted again, P at 0 of 1)."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0)]}
    _before(db, _reload, before, "u")
    started = time.time()
    _load(db, _reload, S2, before, "products")
    original = Collection.update_one

    def killed_after_the_product_update(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.name.startswith(mongo.PRODUCTS):
            raise SystemExit("killed after the product update")
        return out
    monkeypatch.setattr(Collection, "update_one", killed_after_the_product_update)
    rating_history.record_deleted_user("u", db=db)
    with pytest.raises(SystemExit):
        shopper_controls.delete_user_data("u", db=db)
    monkeypatch.setattr(Collection, "update_one", original)  # (not undo(): own_db's environment is on it too)
    _load(db, _reload, S2, before, "pages")
    _erase(db, before, started)

    assert _counts(db, before) == _without(before, "u")
    assert _remembered(db) == []


def test_a_review_changed_between_the_loads_comes_off_with_the_values_the_load_counted(own_db):
    """Clean keeps one review per account and product, its latest: here ``u`` re-rated P (5 stars
    at 100, then 4 at 300). Deleted between the load's products and pages, the site takes the old
    review off the new document, which counts the new one; the eraser finds the new one on the
    load's pages, takes it off and adds back the old one (main matched reviews by rating and time,
    found none, and took the new one off too: P at (1, avg 0.0) instead of (2, 2.5))."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)]}
    loaded = {"P": [("u", 4.0, 300.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)]}
    _before(db, _reload, before, "u")
    started = time.time()
    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    _load(db, _reload, S2, loaded, "pages")
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u") == {"P": (2, {"1": 0, "2": 1, "3": 1, "4": 0, "5": 0}, 2.5)}
    assert _remembered(db) == []


@pytest.mark.parametrize("write", [_upsert, _reload], ids=["incremental", "full"])
def test_a_load_writing_products_between_the_deletions_read_and_write_is_not_overwritten(own_db, write):
    """The load does not take the product's lock: its write of P lands between the deletion's read
    of the document and its write. Incremental (an upsert): the deletion's write, conditional on
    the stamp it read, misses; it reads the load's document and takes the review off it by the old
    pages. Full (a new generation switched in, this process's pointer with it): the deletion writes
    into the generation it read, now retired. Either way the eraser then takes the review off the
    load's document once (main wrote the old counts over the load's, or into its generation, and
    the eraser took the review off again: P at (0, avg 0.0) of 3)."""
    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)]}
    loaded = {"P": before["P"] + [("new", 5.0, 40.0), ("new2", 1.0, 41.0)]}
    _before(db, write, before, "u")
    started = time.time()
    with _once("find_one", _product_read, lambda: _load(db, write, S2, loaded, "products")) as fired:
        _delete(db, "u")
    assert fired
    _load(db, write, S2, loaded, "pages")
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u")
    assert _remembered(db) == []


def test_an_incremental_page_upsert_between_the_deletions_read_and_write_is_read_again(own_db):
    """The load upserts P's page between the deletion's read of it and its rewrite: the rewrite,
    conditional on the page's stamp, misses, and the page is read again: the load's new review
    stays on it, the account's is off (main wrote the old page over the load's: the new review
    was gone from the page)."""
    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)]}
    loaded = {"P": before["P"] + [("new", 5.0, 40.0)]}
    _before(db, _upsert, before, "u")
    started = time.time()
    _load(db, _upsert, S2, loaded, "products")
    with _once("find_one", lambda self, args: self.name.startswith(mongo.PRODUCT_REVIEWS),
               lambda: _load(db, _upsert, S2, loaded, "pages")) as fired:
        _delete(db, "u")
    assert fired
    _erase(db, loaded, started)

    assert [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]] == ["a", "new"]
    assert _counts(db, loaded) == _without(loaded, "u")
    assert _remembered(db) == []


def test_a_deletion_with_no_load_running_leaves_nothing_of_the_account(own_db):
    """No load runs: the pages are of the products' own write, so the deletion remembers nothing,
    in the product documents or anywhere else (main kept every deleted account's ratings and times
    in a collection until the next load's eraser)."""
    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)], "Q": [("u", 4.0, 12.0)]}
    _before(db, _reload, before, "u")
    collections = set(db.list_collection_names())
    _delete(db, "u")

    assert _counts(db, before) == _without(before, "u")
    assert _remembered(db) == []
    assert set(db.list_collection_names()) - collections <= {mongo.DELETED_USERS, mongo.LOCKS}
    assert db[mongo.LOCKS].count_documents({}) == 0


def test_a_deletion_during_the_first_load_that_stamps_pages_is_subtracted_once(own_db):
    """A database loaded before pages carried a stamp: product documents with a hex one (or none),
    pages without. The first load that stamps both writes its products; an account deleted then
    finds its review on the unstamped pages, which are older than the load's document: remembered,
    and the eraser takes the review off once (taken for the document's own pages, it came off
    twice: P at 1 of 2)."""
    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)], "Q": [("u", 4.0, 12.0), ("b", 3.0, 13.0)]}
    unstamped = [{k: v for k, v in _pages(p, S1, r).items() if k != LOAD_STAMP} for p, r in before.items()]
    _reload(db, mongo.PRODUCTS, [{**_product(p, S1, r), LOAD_STAMP: "9f" * 16} for p, r in before.items()])
    _reload(db, mongo.PRODUCT_REVIEWS, unstamped)
    _history(db, "u", before)
    started = time.time()
    loaded = {p: r + [("new", 5.0, 40.0)] for p, r in before.items()}
    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    _load(db, _reload, S2, loaded, "pages")
    _erase(db, loaded, started)

    assert _counts(db, loaded) == _without(loaded, "u")
    assert _remembered(db) == []
