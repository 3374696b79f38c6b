"""An account's reviews come off a product's counts once, whichever pages and product document a
deletion meets while a load writes them.

A load (spark_jobs/mongo_load.py) writes the products, then the review pages, both with its
``load_stamp``, then its eraser erases again every account deleted meanwhile and recounts their
products (and those a deletion listed in ``recounts``: it read pages older than the document) with the
load's own code, then reconciles. Here the load's writes are made directly, as it makes them (a
new generation switched in, or an upsert by ``_id``); the eraser and reconciliation are the load's,
on the reviews it loaded. A load's write landing inside a deletion is injected by wrapping
pymongo's ``Collection`` methods.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import pytest
from pymongo.collection import Collection

from core import erasure, mongo, rating_history
from core.erasure import LOAD_STAMP

pytestmark = pytest.mark.integration

Review = tuple[str, float, float]  # (user, rating, ts)
S0, S1, S2 = 1_000_000, 1_000_001, 1_000_002  # three loads' stamps


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
    """An incremental load's write: every field set by ``_id``."""
    mongo.set_by_ids(collection, {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in docs}, db=db)


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
    erasure.record_deleted_user(user, db=db)
    erasure.delete_user_data(user, db=db)


def _frames(spark, loaded: dict[str, list[Review]]):
    """The load's reviews and product metadata, as Spark read them."""
    reviews = spark.createDataFrame(
        [(u, pid, "c", r, t, 0, f"{u} on {pid}", f"{u} on {pid}") for pid, rs in loaded.items() for u, r, t in rs],
        "user_id string, product_id string, category string, rating double, ts double, helpful_votes long, "
        "summary string, summary_clean string")
    products = spark.createDataFrame(
        [(pid, pid, "", 0.0, "c", [], "", "", []) for pid in loaded],
        "product_id string, title string, brand string, price double, category string, categories array<string>, "
        "description string, image string, also_buy array<string>")
    return reviews, products


def _erase(spark, loaded: dict[str, list[Review]], since: float, stamp: int = S2) -> int:
    """The load's eraser (``erase_accounts_deleted_since``) on the reviews it loaded."""
    from spark_jobs.mongo_load import erase_accounts_deleted_since

    return erase_accounts_deleted_since(since, *_frames(spark, loaded), stamp)


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


def _listed(db) -> list:
    """The products a deletion listed for the load's recount (``recounts``)."""
    return sorted(d["_id"] for d in db[mongo.RECOUNTS].find({}))


def _erased(db, spark, loaded: dict[str, list[Review]], since: float, *users: str) -> None:
    """The eraser's outcome: each product's counts as a load without ``users``' reviews writes them,
    none listed for a recount, reconciliation exact (each product short by exactly ``users``' reviews of it)."""
    assert _counts(db, loaded) == _without(loaded, *users)
    assert _listed(db) == []
    load_fields = set(_product("P", S2, [])) | {"_id"}  # nothing else, of the account or its ratings
    assert all(set(d) <= load_fields for d in db[mongo.PRODUCTS].find({}))
    erased = sum(1 for reviews in loaded.values() for u, _, _ in reviews if u in users)
    assert _reconciles(spark, loaded, since).get("reviews_erased_by_deletions", 0) == erased


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
    the site takes the reviews of the previous pages off the load's products and lists them for a
    recount; the eraser takes the load's pages' reviews off and recounts the products: a second
    review of the account only the load's pages hold comes off once too, and the listing goes."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)], "R": [("u", 4.0, 70.0), ("c", 1.0, 80.0)]}
    _before(db, _reload, before, "u")
    started = time.time()
    loaded = {"P": before["P"] + [("u", 4.0, 300.0)], "R": before["R"] + [("d", 5.0, 90.0)]}

    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    assert _listed(db) == ["P", "R"]  # the only trace, until the eraser
    _load(db, _reload, S2, loaded, "pages")
    _erase(spark, loaded, started)

    _erased(db, spark, loaded, started, "u")
    _delete(db, "u")  # again (the worker's delete_account): nothing left to take off
    assert _counts(db, loaded) == _without(loaded, "u")


def test_deletions_before_during_and_after_an_incremental_load_are_each_subtracted_once(spark, own_db):
    """Incremental load (upserts by ``_id``), each product once:
    - P: ``u``'s deletion reaches it before the load's products (the old document and pages);
    - Q: the same deletion, still running, reaches it after the load's products, before its pages
      (the load's document, the old pages: listed for a recount);
    - S: ``v`` deletes the account after the load's pages (the load's document and pages);
    - a repeated deletion of both changes nothing.
    """
    from core.erasure import ERASING, _erase_reviews  # delete_user_data's step, one product each

    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)], "Q": [("u", 1.0, 20.0), ("b", 4.0, 21.0)],
              "S": [("v", 3.0, 30.0), ("c", 4.0, 31.0), ("d", 4.0, 32.0)]}
    _before(db, _upsert, before, "u", "v")
    started = time.time()
    loaded = {p: r + [(f"new-{p}", 5.0, 40.0)] for p, r in before.items()}  # each touched by the new category

    erasure.record_deleted_user("u", db=db)
    mark = ERASING + erasure.erasure_token("u", db=db)
    _erase_reviews("P", "u", db, mark=mark)
    _load(db, _upsert, S2, loaded, "products")
    _erase_reviews("Q", "u", db, mark=mark)
    _load(db, _upsert, S2, loaded, "pages")
    _delete(db, "v")
    _erase(spark, loaded, started)

    _erased(db, spark, loaded, started, "u", "v")
    _delete(db, "u")
    _delete(db, "v")
    assert _counts(db, loaded) == _without(loaded, "u", "v")


def test_a_deletion_stopped_after_the_product_update_leaves_nothing_to_subtract_twice(spark, own_db, monkeypatch):
    """The listing for a recount is written before the product's update: stopped right after that
    update (here by an exception; the process killed there alike), the eraser still takes the
    review off once."""
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
    erasure.record_deleted_user("u", db=db)
    with pytest.raises(SystemExit):
        erasure.delete_user_data("u", db=db)
    monkeypatch.setattr(Collection, "update_one", original)  # (not undo(): own_db's environment is on it too)
    _load(db, _reload, S2, before, "pages")
    _erase(spark, before, started)

    _erased(db, spark, before, started, "u")


@pytest.mark.parametrize("others, expected", [
    ([("a", 3.0, 50.0), ("b", 2.0, 60.0)], (2, {"1": 0, "2": 1, "3": 1, "4": 0, "5": 0}, 2.5)),
    # v2 re-based this one from the rounded average: 1.666
    ([("a", 1.0, 50.0), ("b", 2.0, 60.0), ("c", 2.0, 61.0)], (3, {"1": 1, "2": 2, "3": 0, "4": 0, "5": 0}, 1.667)),
], ids=["counts", "average"])
def test_a_review_changed_between_the_loads_comes_off_with_the_values_the_load_counted(spark, own_db, others,
                                                                                       expected):
    """Clean keeps one review per account and product, its latest: here ``u`` re-rated P (5 stars
    at 100, then 4 at 300). Deleted between the load's products and pages, the site takes the old
    review off the new document, which counts the new one; the eraser's recount leaves out the
    new one: the counts and average of the load without ``u``."""
    db = own_db
    before, loaded = {"P": [("u", 5.0, 100.0), *others]}, {"P": [("u", 4.0, 300.0), *others]}
    _before(db, _reload, before, "u")
    started = time.time()
    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    _load(db, _reload, S2, loaded, "pages")
    _erase(spark, loaded, started)

    assert _without(loaded, "u") == {"P": expected}
    _erased(db, spark, loaded, started, "u")


@pytest.mark.parametrize("write", [_upsert, _reload], ids=["incremental", "full"])
def test_a_load_writing_products_between_the_deletions_read_and_write_is_not_overwritten(spark, own_db, write):
    """The load does not take the product's lock: its write of P lands between the deletion's read
    of the document and its write. Incremental (an upsert): the deletion's write, conditional on
    the stamp it read, misses; it reads the load's document and takes the review off it by the old
    pages. Full (a new generation switched in, this process's pointer with it): the deletion writes
    into the generation it read, now retired. Either way the eraser's recount leaves the review
    out once."""
    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)]}
    loaded = {"P": before["P"] + [("new", 5.0, 40.0), ("new2", 1.0, 41.0)]}
    _before(db, write, before, "u")
    started = time.time()
    with _once("find_one", _product_read, lambda: _load(db, write, S2, loaded, "products")) as fired:
        _delete(db, "u")
    assert fired
    _load(db, write, S2, loaded, "pages")
    _erase(spark, loaded, started)

    _erased(db, spark, loaded, started, "u")


def test_an_incremental_page_upsert_between_the_deletions_read_and_write_is_read_again(spark, own_db):
    """The load upserts P's page between the deletion's read of it and its rewrite: the rewrite,
    conditional on the page's stamp, misses, and the page is read again: the load's new review
    stays on it, the account's is off."""
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
    _erase(spark, loaded, started)

    assert [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]] == ["a", "new"]
    _erased(db, spark, loaded, started, "u")


def test_a_deletion_with_no_load_running_leaves_nothing_of_the_account(own_db):
    """No load runs: the pages are of the products' own write, so the deletion
    lists no product for a recount and keeps nothing of the account, in the product documents or
    anywhere else."""
    db = own_db
    before = {"P": [("u", 2.0, 10.0), ("a", 5.0, 11.0)], "Q": [("u", 4.0, 12.0)]}
    _before(db, _reload, before, "u")
    collections = set(db.list_collection_names())
    _delete(db, "u")

    assert _counts(db, before) == _without(before, "u")
    assert _listed(db) == []
    assert set(db.list_collection_names()) - collections <= {mongo.DELETED_USERS, mongo.EVENT_CLAIMS}
    assert db[mongo.EVENT_CLAIMS].count_documents({}) == 0


def test_a_deletion_during_the_first_load_that_stamps_pages_is_subtracted_once(spark, own_db):
    """A database loaded before pages carried a stamp: product documents with a hex one (or none),
    pages without. The first load that stamps both writes its products; an account deleted then
    finds its review on the unstamped pages, which are older than the load's document: listed, and
    the eraser's recount leaves the review out once."""
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
    _erase(spark, loaded, started)

    _erased(db, spark, loaded, started, "u")


def test_an_account_deleted_before_the_load_and_erased_between_its_products_and_pages_is_recounted(spark, own_db):
    """``u`` was recorded deleted before the load began (the load left its reviews out), its
    erasure still to run (a retry, the worker's ``delete_account``); it lands between the load's
    products and pages and takes ``u``'s review of the previous pages off a document that never
    counted it. The eraser, which does not erase ``u`` again, recounts the listed product (v2: P
    at (1, 0.0) of 2, reconciliation failed, ``u``'s rating kept in the document)."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)]}
    _before(db, _reload, before, "u")
    erasure.record_deleted_user("u", db=db)
    time.sleep(0.01)
    started = time.time()
    loaded = {"P": [("a", 3.0, 50.0), ("b", 2.0, 60.0)]}
    _load(db, _reload, S2, loaded, "products")
    erasure.delete_user_data("u", db=db)
    _load(db, _reload, S2, loaded, "pages")
    assert _erase(spark, loaded, started) == 0

    _erased(db, spark, loaded, started)


def test_an_incremental_load_touching_a_product_without_writing_its_pages_leaves_no_listing(spark, own_db):
    """The load upserts P's document (no review left: no page written), the old page still holds
    ``u``'s review: the deletion lists the product, the eraser recounts it and the listing goes (v2
    kept ``u``'s rating in the document)."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0)], "Q": [("u", 2.0, 10.0), ("a", 4.0, 11.0)]}
    _before(db, _upsert, before, "u")
    started = time.time()
    erasure.record_deleted_user("u", db=db)
    loaded = {"P": [], "Q": before["Q"]}
    _upsert(db, mongo.PRODUCTS, [_product(p, S2, r) for p, r in loaded.items()])
    erasure.delete_user_data("u", db=db)
    _erase(spark, loaded, started)

    assert _counts(db, loaded) == {"P": (0, {str(s): 0 for s in range(1, 6)}, 0.0), **_without({"Q": loaded["Q"]}, "u")}
    assert _listed(db) == []


def _page(pid: str, n: int, stamp: int, reviews: list[Review]) -> dict:
    return {**_pages(pid, stamp, reviews), "_id": f"{pid}:{n}", "pages": 2}


def test_a_deletion_repeated_between_two_partitions_of_an_incremental_page_upsert_is_subtracted_once(spark, own_db):
    """P has two pages; the site's deletion lands between the load's products and pages, the
    worker's repeat between the upserts of page 1 and page 2 (each subtracts what it finds, lists
    P); the eraser recounts P (v2 subtracted ``v``'s review twice)."""
    db = own_db
    before = {"P": [("v", 5.0, 100.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0)]}
    _upsert(db, mongo.PRODUCTS, [_product("P", S1, before["P"])])
    _upsert(db, mongo.PRODUCT_REVIEWS, [_page("P", 1, S1, before["P"][:2]), _page("P", 2, S1, before["P"][2:])])
    _history(db, "v", before)
    started = time.time()
    loaded = {"P": [("v", 4.0, 300.0), ("a", 3.0, 50.0), ("b", 2.0, 60.0), ("n", 1.0, 70.0)]}
    _upsert(db, mongo.PRODUCTS, [_product("P", S2, loaded["P"])])
    _delete(db, "v")
    _upsert(db, mongo.PRODUCT_REVIEWS, [_page("P", 1, S2, loaded["P"][:2])])
    _history(db, "v", loaded)  # the load's history upsert of v
    erasure.delete_user_data("v", db=db)
    _upsert(db, mongo.PRODUCT_REVIEWS, [_page("P", 2, S2, loaded["P"][2:])])
    _erase(spark, loaded, started)

    _erased(db, spark, loaded, started, "v")


def test_a_page_rewritten_by_a_task_retry_with_the_same_stamp_is_subtracted_once(spark, own_db):
    """The site's deletion lands after the load's page of P (its document's stamp: a plain
    subtraction); a retry of the task writes the page again, ``u``'s review back on it: the eraser
    takes it off again and recounts (v2 subtracted twice: a negative average)."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 3.0, 50.0)]}
    _before(db, _upsert, before, "u")
    started = time.time()
    loaded = {"P": before["P"] + [("new", 1.0, 40.0)]}
    _load(db, _upsert, S2, loaded, "products")
    _load(db, _upsert, S2, loaded, "pages")
    _delete(db, "u")
    _history(db, "u", loaded)  # the load's history upsert of u
    _load(db, _upsert, S2, loaded, "pages")  # the retry
    _erase(spark, loaded, started)

    _erased(db, spark, loaded, started, "u")
    assert [r["user_id"] for r in db[mongo.PRODUCT_REVIEWS].find_one({"_id": "P:1"})["items"]] == ["a", "new"]


def test_an_account_deleted_while_the_eraser_recounts_is_excluded_on_its_next_pass(spark, own_db, monkeypatch):
    """``w`` is deleted by the site after the eraser read ``deleted_users``, before its recount of
    P is written: the recount counts ``w`` again; the eraser reads the deletions again and
    recounts without ``w``."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("w", 2.0, 10.0), ("a", 4.0, 11.0)]}
    _before(db, _reload, before, "u", "w")
    started = time.time()
    loaded = {"P": before["P"] + [("n", 3.0, 40.0)]}
    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    _load(db, _reload, S2, loaded, "pages")
    original, fired = erasure.write_recount, []

    def w_deleted_first(*args, **kwargs):  # the site's deletion of w, just before the first recount's write
        if not fired:
            fired.append(1)
            _delete(db, "w")
        return original(*args, **kwargs)
    monkeypatch.setattr(erasure, "write_recount", w_deleted_first)
    _erase(spark, loaded, started)
    monkeypatch.setattr(erasure, "write_recount", original)  # (not undo(): own_db's environment)
    assert fired

    _erased(db, spark, loaded, started, "u", "w")


def test_accounts_without_reviews_deleted_during_each_pass_end_the_eraser(spark, own_db, monkeypatch):
    """Most site accounts have no loaded reviews: one deleted during each pass made every pass find
    a "new" account, and after ERASER_PASSES the load failed (its counts were right)."""
    db = own_db
    before = {"P": [("u", 5.0, 100.0), ("a", 4.0, 11.0)]}
    _before(db, _reload, before, "u")
    started = time.time()
    loaded = {"P": before["P"] + [("n", 3.0, 40.0)]}
    _load(db, _reload, S2, loaded, "products")
    _delete(db, "u")
    _load(db, _reload, S2, loaded, "pages")
    original, shoppers = rating_history.deleted_user_ids, []

    def a_shopper_deleted_before_each_read(*args, **kwargs):  # an account with no reviews, each pass
        if len(shoppers) < 2 * 5:  # (ERASER_PASSES: the eraser failed after 5)
            shoppers.append(f"shopper-{len(shoppers)}")
            erasure.record_deleted_user(shoppers[-1], db=db)
        return original(*args, **kwargs)
    monkeypatch.setattr(rating_history, "deleted_user_ids", a_shopper_deleted_before_each_read)
    try:
        _erase(spark, loaded, started)
    finally:
        monkeypatch.setattr(rating_history, "deleted_user_ids", original)  # (not undo(): own_db's environment)
    assert shoppers
    _erased(db, spark, loaded, started, "u")


def test_the_recount_files_a_product_under_the_category_its_kept_reviews_give_it(spark):
    """A product without metadata takes its category from its most helpful review: deleted ``u``'s
    (X) filed it under X, and the recount, which rewrote its title from ``a``'s review (Y), kept X."""
    from spark_jobs.mongo_load import recounts

    reviews = spark.createDataFrame(
        [("u", "R", "X", 5.0, 100.0, 9, "u likes it", "u likes it"), ("a", "R", "Y", 3.0, 50.0, 0, "a is ok", "a is ok")],
        "user_id string, product_id string, category string, rating double, ts double, helpful_votes long, "
        "summary string, summary_clean string")
    metadata = spark.createDataFrame([], "product_id string, title string, brand string, price double, "
                                         "category string, categories array<string>, description string, "
                                         "image string, also_buy array<string>")
    fields = recounts(metadata, reviews, ["u"], {"R"})["R"]
    assert (fields["n_reviews"], fields["category"]) == (1, "Y") and "a is ok" in fields["title"]


def test_listings_of_earlier_loads_go_once_their_product_was_rewritten(spark, own_db):
    """``recounts`` rows an earlier load's eraser never handled (that load killed before it, or its
    eraser gave up after ERASER_PASSES; each eraser read only its own stamp's, so they stayed for
    good): P's listing is of load S0, and load S1 rewrote P since; G's product is gone (a full
    reload without it). Q's is of S1, which Q still carries: its counts are still S1's. The eraser
    of load S2 (which wrote neither), no account deleted meanwhile, drops P's and G's listings and
    keeps Q's."""
    db = own_db
    before = {"P": [("a", 5.0, 1.0)], "Q": [("b", 4.0, 2.0)]}
    _before(db, _upsert, before)  # products and pages of load S1
    db[mongo.RECOUNTS].insert_many([{"_id": "P", "stamp": S0}, {"_id": "G", "stamp": S0}, {"_id": "Q", "stamp": S1}])
    assert _erase(spark, before, time.time()) == 0

    assert _listed(db) == ["Q"]
    assert _counts(db, before) == _without(before)


def _clean_dir(spark, path, loaded: dict[str, list[Review]]) -> str:
    """A clean folder of ``loaded``, all of category ``c`` (the columns mongo_load reads; no ledger)."""
    from pyspark.sql import functions as F

    reviews, _ = _frames(spark, loaded)
    reviews.select("*", F.col("user_id").alias("reviewer_name"), F.col("summary").alias("review_text"),
                   F.lit(True).alias("verified")).write.parquet(f"{path}/reviews")
    spark.createDataFrame(
        [(pid, pid, "", 0.0, "c", [], "", "", [], "c") for pid in loaded],
        "product_id string, title string, brand string, price double, category string, categories array<string>, "
        "description string, image string, also_buy array<string>, file_category string"
    ).write.parquet(f"{path}/products")
    return str(path)


def _only_c_is_new(db, clean: str) -> None:
    """What makes the load of ``_clean_dir`` incremental: the clean ledger holds categories ``b``
    and ``c``, MongoDB ``b`` (and a product of it)."""
    from spark_jobs import units
    from spark_jobs.mongo_load import INGEST_LEDGER

    units.write_ledger(clean, {"categories": {"b": "fp-b", "c": "fp-c"}})
    db[INGEST_LEDGER].insert_one({"_id": "b", "fingerprint": "fp-b"})
    _load(db, _upsert, S1, {"O": [("o", 3.0, 1.0)]}, "products")


@pytest.mark.parametrize("mode, writer", [("full", "reload_collection"), ("incremental", "upsert_collection")])
def test_a_load_failing_after_its_products_went_live_still_erases(spark, own_db, monkeypatch, tmp_path, capsys,
                                                                   mode, writer):
    """The load's products are live (counting ``u``, whose summary P quotes, the most recent
    review) when ``u`` deletes the account (the site finds no page of theirs yet), then its review
    pages' write fails. The load fails with that error, and its eraser still takes ``u``'s review
    off the products, and prints how many accounts it erased (it ran only after the steps that
    follow the last write: P counted and quoted ``u`` until a re-run)."""
    import spark_jobs.mongo_load as job

    db = own_db
    loaded = {"P": [("a", 4.0, 10.0), ("u", 1.0, 50.0)], "R": [("u", 2.0, 20.0), ("b", 5.0, 30.0)]}
    clean = _clean_dir(spark, tmp_path / "clean", loaded)
    if mode == "incremental":
        _only_c_is_new(db, clean)
    real = getattr(job, writer)

    def pages_fail(df, collection, *args, **kwargs):
        if collection == mongo.PRODUCT_REVIEWS:
            assert _counts(db, loaded) == _without(loaded)  # the load's products, live
            _delete(db, "u")
            raise RuntimeError("the review pages' write failed")
        return real(df, collection, *args, **kwargs)
    monkeypatch.setattr(job, writer, pages_fail)
    with pytest.raises(RuntimeError, match="review pages' write failed"):
        job.mongo_load(spark, clean, f"it-fails-after-products-{mode}")

    assert _counts(db, loaded) == _without(loaded, "u")
    assert [db[mongo.PRODUCTS].find_one({"_id": p})["sample_summary"] for p in loaded] == ["a on P", "b on R"]
    assert _listed(db) == []
    printed = capsys.readouterr()
    assert f"mongo_load: {mode}: " in printed.out
    assert "the eraser erased 1 accounts deleted during the load" in printed.err
