"""The batch side of the shopper controls, with the real batch jobs (Spark) on the bundled demo file.

"Delete my account" of a demo account linked to a reviewer of the data: the next model version is
trained without that reviewer. A rating removed on the site stays removed when the batch load
rebuilds the histories. The load and clean jobs run once for the module; the deletion and the
trainings run in a database and artifacts directory of this module's own. An account deleted while
an incremental load runs: two small category files of that test's own, loaded one after the other.
"""
from __future__ import annotations

import json
import time

import pytest

from core import artifacts, erasure, mongo, rating_history
from core.events import NOT_INTERESTED, UNRATE, RatingEvent
from realtime_support import reset_core_caches
from tests.conftest import DEMO_FILE
from tests.site_catalog import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(scope="module")
def demo_clean(spark, tmp_path_factory) -> str:
    """The demo file through the real load and clean jobs; returns the clean Parquet folder."""
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    work = tmp_path_factory.mktemp("controls-batch")
    load(spark, [str(DEMO_FILE)], str(work / "raw"), "it-controls")
    clean(spark, str(work / "raw"), str(work / "clean"), "it-controls")
    return str(work / "clean")


@pytest.fixture
def own_db(settings, mongo_db, kafka_topics, site_cache, tmp_path, monkeypatch):
    """A database and artifacts directory of this test's own (dropped afterwards)."""
    name = f"{settings.mongo_db}_ctrltrain"[:60]
    monkeypatch.setenv("MONGO_DB", name)
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_core_caches()
    try:
        yield mongo.get_db()
    finally:
        mongo.get_client().drop_database(name)
        monkeypatch.undo()
        reset_core_caches()


def _reviewers(spark, clean_dir: str) -> list[tuple[str, int]]:
    """(reviewer, number of clean reviews), most reviews first."""
    rows = spark.read.parquet(f"{clean_dir}/reviews").groupBy("user_id").count().collect()
    return sorted(((r["user_id"], int(r["count"])) for r in rows), key=lambda x: (-x[1], x[0]))


def _users_listed(models_dir, version: str) -> set[str]:
    return {doc["_id"] for doc in artifacts.serving_list_docs(models_dir / version / artifacts.TOPN_LISTS)}


@pytest.mark.timeout(1800)  # a whole training run (with its Spark baselines) on a shared 2-core machine
def test_deleted_linked_reviewer_is_left_out_of_the_next_training(demo_clean, spark, own_db, client, make_user):
    from accounts.models import AccountDeletion
    from spark_jobs.train import train

    db = own_db
    reviewers = _reviewers(spark, demo_clean)
    reviewer, n_reviews = reviewers[0]  # the most active reviewer: the pipeline's first demo account

    user = make_user(reviewer_id=reviewer)
    client.force_login(user)
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200
    assert AccountDeletion.objects.get().kind == "linked_reviewer"
    assert rating_history.deleted_user_ids(db=db) == {reviewer}

    record = train(spark, demo_clean, "it-controls-after", engine="ease")
    counts = record["metrics"]["counts"]
    assert counts["deleted_users_left_out"] == 1
    assert counts["users"] == len(reviewers) - 1
    assert counts["interactions"] == sum(n for _, n in reviewers) - n_reviews
    listed = _users_listed(artifacts.models_dir(), record["version"])
    assert reviewer not in listed and len(listed) == len(reviewers) - 1


def test_batch_reload_keeps_removed_ratings_removed(demo_clean, spark, own_db):
    from spark_jobs.mongo_load import live_ratings, user_history_docs

    db = own_db
    reviews = spark.read.parquet(f"{demo_clean}/reviews")
    reviewer = _reviewers(spark, demo_clean)[1][0]
    batch = {r.product_id: r.rating for r in reviews.where(reviews.user_id == reviewer).collect()}
    dropped, kept = sorted(batch)[:2]
    now = time.time()
    events = [RatingEvent(user_id=reviewer, product_id=dropped, rating=0, ts=now - 5, action=UNRATE),
              RatingEvent(user_id=reviewer, product_id=kept, rating=1, ts=now - 4),
              RatingEvent(user_id="site-x", product_id=kept, rating=5, ts=now - 3),
              RatingEvent(user_id="site-x", product_id=kept, rating=0, ts=now - 2, action=UNRATE),
              RatingEvent(user_id="site-x", product_id=kept, rating=3, ts=now - 1),  # rated again
              RatingEvent(user_id="site-x", product_id=dropped, rating=0, ts=now, action=NOT_INTERESTED)]
    for e in events:
        assert rating_history.store_rating(e.to_dict(), db=db)
    docs = {r["_id"]: rating_history.history_entries(r.asDict(recursive=True))[0] for r in user_history_docs(reviews, live_ratings(spark)).where(
        "_id in ('%s', 'site-x')" % reviewer).collect()}
    want = {p: float(r) for p, r in batch.items() if p != dropped}
    want[kept] = 1.0
    assert {p: v[0] for p, v in docs[reviewer].items()} == want
    assert {p: v[0] for p, v in docs["site-x"].items()} == {kept: 3.0}  # "not interested" is no rating


def _pages(db, product_id: str) -> list[dict]:
    """Every review on a product's pages, in page order (most helpful, then newest)."""
    items, page, n_pages = [], 1, 1
    while page <= n_pages:
        doc = db[mongo.PRODUCT_REVIEWS].find_one({"_id": f"{product_id}:{page}"})
        if not doc:
            break
        items, n_pages, page = items + doc["items"], int(doc["pages"]), page + 1
    return items


def _next_quoted(items: list[dict], without: str) -> tuple[dict | None, bool]:
    """The review a product would be quoted by without ``without``'s, and whether the load's choice
    is certain: no other non-empty summary shares its helpful votes and time (the load breaks such
    a tie arbitrarily, the pages by reviewer id)."""
    said = [r for r in items if r["user_id"] != without and (r.get("summary") or "").strip()]
    if not said:
        return None, True
    key = (said[0]["helpful_votes"], said[0]["ts"])
    return said[0], all((r["helpful_votes"], r["ts"]) != key for r in said[1:])


def _listed(db, word: str, product_id: str) -> str | None:
    """The tier ``product_id`` is listed with under the search key ``word``, None if it is not."""
    doc = db[mongo.SEARCH_INDEX].find_one({"_id": word}) or {"ids": "", "tiers": ""}
    ids = doc["ids"].split(" ") if doc["ids"] else []
    return doc["tiers"][ids.index(product_id)] if product_id in ids else None


@pytest.mark.timeout(1800)  # two loads of the demo file on a shared 2-core machine
def test_deleting_a_quoted_reviewer_leaves_the_catalog_as_the_next_reload_does(demo_clean, spark, own_db, client,
                                                                               make_user):
    """A linked reviewer whose summary titles a product (the demo file has no metadata: every title
    is generated) deletes the account: right away, the titles, counts and search keys of the
    products they reviewed are what a full reload without them writes, and that reload (the raw
    and clean files still hold the reviews) does not bring the reviews back."""
    from accounts.models import AccountDeletion
    from core import catalog, search
    from spark_jobs.mongo_load import mongo_load

    db = own_db
    mongo_load(spark, demo_clean, "it-erase-before")
    products = {d["_id"]: d for d in db[mongo.PRODUCTS].find({})}
    # the most active reviewer quoted by a product that another review can title unambiguously
    # (pages whole, at most 50 reviews: all of them feed its search words)
    quoted = {}
    for pid, d in products.items():
        items = _pages(db, pid)
        if not d["title_generated"] or not 2 <= d["n_reviews"] == len(items) <= 50:
            continue
        first = next((r for r in items if (r.get("summary") or "").strip()), None)
        nxt, certain = _next_quoted(items, first["user_id"]) if first else (None, False)
        if first and first["summary"] == d["sample_summary"] and nxt and certain:
            quoted.setdefault(first["user_id"], []).append(pid)
    by_activity = dict(_reviewers(spark, demo_clean))
    reviewer = max(quoted, key=lambda u: (by_activity[u], u))
    rated = sorted(rating_history.user_ratings(reviewer, db=db))
    pages_before = {pid: _pages(db, pid) for pid in rated}
    mine = {pid: next(r for r in items if r["user_id"] == reviewer) for pid, items in pages_before.items()}
    assert quoted[reviewer] and all(p in rated for p in quoted[reviewer])
    words = {pid: set(search.words(mine[pid].get("summary") or "")) for pid in rated}
    only_theirs = {(w, p) for p in quoted[reviewer] for w in words[p]
                   if _listed(db, w, p) == search.REVIEW
                   and not any(w in search.words(r.get("summary") or "") for r in pages_before[p] if r is not mine[p])}
    assert only_theirs  # words the search finds their quoted products by, said by nobody else

    user = make_user(reviewer_id=reviewer)
    client.force_login(user)
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200
    erased = {pid: db[mongo.PRODUCTS].find_one({"_id": pid}) for pid in rated}
    for pid in quoted[reviewer]:  # the title quotes the next most helpful review, by the load's own rule
        nxt = _next_quoted(pages_before[pid], reviewer)[0]
        assert erased[pid]["sample_summary"] == nxt["summary"] != mine[pid]["summary"]
        assert erased[pid]["n_reviews"] == products[pid]["n_reviews"] - 1
        assert erased[pid]["title"] == catalog.fallback_title([], products[pid]["category"], "", nxt["summary"])
    assert not [(w, p) for w, p in only_theirs if _listed(db, w, p)]
    counts = AccountDeletion.objects.get().counts
    assert counts["products"] == len(rated) and counts["search_postings"] >= len(only_theirs)
    listed = {(w, p): _listed(db, w, p) for p in rated for w in words[p]}

    # The next reload leaves the reviewer out (deleted_users) and writes the same catalog.
    record = mongo_load(spark, demo_clean, "it-erase-after", force=True)
    assert record["mode"] == "full" and record["deleted_users_left_out"] == 1
    reloaded = {pid: db[mongo.PRODUCTS].find_one({"_id": pid}) for pid in rated}
    fields = ("n_reviews", "avg_rating", "rating_hist")
    for pid in rated:
        if reloaded[pid] is None:  # its only review was theirs: a reload drops the product
            assert erased[pid]["n_reviews"] == 0 and products[pid]["n_reviews"] == 1
            continue
        assert {f: erased[pid][f] for f in fields} == {f: reloaded[pid][f] for f in fields}, pid
        nxt, certain = _next_quoted(pages_before[pid], reviewer)
        if certain:
            assert (erased[pid]["title"], erased[pid]["sample_summary"]) == \
                (reloaded[pid]["title"], reloaded[pid]["sample_summary"]), pid
        assert all(r["user_id"] != reviewer for r in _pages(db, pid))
    for (w, p), tier in listed.items():
        if len(pages_before[p]) <= 50 and reloaded[p] is not None:
            assert _listed(db, w, p) == tier, (w, p)
    assert rating_history.user_ratings(reviewer, db=db) == {}
    assert reviewer not in {u for u, _ in catalog.most_active_users(limit=100, db=db)}


def _deleted_after_the_read(live_ratings, client, user):
    """mongo_load's ``live_ratings``, after which ``user`` deletes the account on the site: the
    load has read ``deleted_users`` and the live ratings, and has more collections to write."""
    def read(spark_session):
        live = live_ratings(spark_session)
        client.force_login(user)
        assert client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 200
        return live
    return read


def _gone_everywhere(db, reviewer: str) -> None:
    """What the load wrote of ``reviewer`` is erased: history, top-users entry, review pages."""
    from core import catalog

    assert rating_history.is_deleted_user(reviewer, db=db)
    assert db[mongo.USER_HISTORY].find_one({"_id": reviewer}) is None, "the deleted account's history is back"
    assert reviewer not in {u for u, _ in catalog.most_active_users(limit=100, db=db)}
    assert not [d["_id"] for d in db[mongo.PRODUCT_REVIEWS].find({}, {"items.user_id": 1})
                if any(r.get("user_id") == reviewer for r in d.get("items") or [])]


@pytest.mark.timeout(1800)  # a full load of the demo file on a shared 2-core machine
def test_an_account_deleted_while_the_load_runs_stays_deleted(demo_clean, spark, own_db, client, make_user,
                                                             monkeypatch):
    """The load reads ``deleted_users`` and the live ratings when it starts; the linked reviewer
    deletes the account after that, while the load runs (the site erases what is live then). The
    load's later collections (the histories, the search and catalog indexes) were built from what
    it had read: after it, the account's history, pages and top-users entry must still be gone."""
    import spark_jobs.mongo_load as job

    db = own_db
    reviewer = _reviewers(spark, demo_clean)[0][0]  # the most active: among the top users
    monkeypatch.setattr(job, "live_ratings", _deleted_after_the_read(job.live_ratings, client,
                                                                     make_user(reviewer_id=reviewer)))
    record = job.mongo_load(spark, demo_clean, "it-delete-during", force=True)
    assert record["mode"] == "full" and record["deleted_users_left_out"] == 0  # read before the deletion
    _gone_everywhere(db, reviewer)
    assert record["collections"][mongo.USER_HISTORY]["deleted_accounts_erased"] == 1


def _write_reviews(path, rows) -> None:
    """A small 2018-format reviews file: (reviewer, product, rating) per line."""
    path.write_text("".join(json.dumps({"reviewerID": u, "asin": p, "overall": r, "unixReviewTime": 100,
                                        "summary": f"{u} on {p}"}) + "\n" for u, p, r in rows))


@pytest.mark.timeout(1800)  # three loads into MongoDB on a shared 2-core machine
def test_an_account_deleted_while_an_incremental_load_runs_stays_deleted(spark, own_db, client, make_user,
                                                                         monkeypatch, tmp_path):
    """The incremental load (a new category) reads ``deleted_users`` and the live ratings when it
    starts, like the full one; a linked reviewer with reviews in the loaded category and in the new
    one deletes the account after that. The load then upserts their history (from both categories)
    and the new category's products and pages with their reviews, and rebuilds the catalog's top
    users: after it, all of that must still be gone, and the load succeeds, though the deletion
    took reviews it had loaded off the counts. Then the same during a full reload, of a reviewer
    whose history MongoDB held already (the deletion erases from the new generations at once)."""
    import spark_jobs.mongo_load as job
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    db = own_db
    raw, cleaned = str(tmp_path / "raw"), str(tmp_path / "clean")
    alpha, beta = tmp_path / "amazon2018_alpha.jsonl", tmp_path / "amazon2018_beta.jsonl"
    _write_reviews(alpha, [("r1", "a1", 5.0), ("r2", "a1", 4.0), ("r2", "a2", 3.0)])
    _write_reviews(beta, [("r1", "b1", 4.0), ("r3", "b1", 2.0)])
    load(spark, [str(alpha)], raw, "it-incr-1")
    clean(spark, raw, cleaned, "it-incr-1")
    assert job.mongo_load(spark, cleaned, "it-incr-1")["mode"] == "full"
    load(spark, [str(beta)], raw, "it-incr-2")
    clean(spark, raw, cleaned, "it-incr-2")
    real_live_ratings = job.live_ratings

    monkeypatch.setattr(job, "live_ratings", _deleted_after_the_read(real_live_ratings, client,
                                                                     make_user(reviewer_id="r1")))
    record = job.mongo_load(spark, cleaned, "it-incr-delete-during")
    assert record["mode"] == "incremental" and record["categories"] == ["Beta"]
    assert record["deleted_users_left_out"] == 0  # read before the deletion
    _gone_everywhere(db, "r1")
    counts = {d["_id"]: d["n_reviews"] for d in db[mongo.PRODUCTS].find({}, {"n_reviews": 1})}
    assert counts == {"a1": 1, "a2": 1, "b1": 1}  # without r1's reviews
    # "r1" is a word of r1's summaries only: the search index, rebuilt from what the load read, had
    # listed a1 under it again (its category loaded before: pages not rewritten, erased by the site)
    assert [p for p in ("a1", "b1") if _listed(db, "r1", p)] == []
    assert _listed(db, "on", "a1") and _listed(db, "r2", "a1")  # r2's words ("r2 on a1") stay
    assert record["collections"][mongo.USER_HISTORY]["deleted_accounts_erased"] == 1

    monkeypatch.setattr(job, "live_ratings", _deleted_after_the_read(real_live_ratings, client,
                                                                     make_user(reviewer_id="r2")))
    record = job.mongo_load(spark, cleaned, "it-full-delete-during", force=True)
    assert record["mode"] == "full" and record["deleted_users_left_out"] == 1  # r1, deleted before it
    _gone_everywhere(db, "r2")
    counts = {d["_id"]: d["n_reviews"] for d in db[mongo.PRODUCTS].find({}, {"n_reviews": 1})}
    assert counts == {"a1": 0, "a2": 0, "b1": 1}  # r3's alone; r2's products stay listed, without reviews
    # the site's deletion found r2's reviews on the new pages and unlisted their words from the old
    # search index; the new one, written after it, listed them again
    assert [p for p in ("a1", "a2") if _listed(db, "r2", p)] == []


def _deleted_before_writing(written: str, real, client, user):
    """mongo_load's ``reload_collection``/``upsert_collection``, which once, just before it writes
    the collection ``written``, lets ``user`` delete the account on the site. Before the review
    pages: the load's products (counting the account's reviews) are live, the pages live are still
    the previous load's."""
    done = []

    def write(df, collection, *args, **kwargs):
        if collection == written and not done:
            client.force_login(user)
            assert client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"}).status_code == 200
            done.append(user)
        return real(df, collection, *args, **kwargs)
    return write


def _counts_and_pages(db) -> tuple[dict[str, int], dict[str, int]]:
    """Each product's review count, and how many reviews its pages hold (all of them, here)."""
    counts = {d["_id"]: d["n_reviews"] for d in db[mongo.PRODUCTS].find({}, {"n_reviews": 1})}
    return counts, {pid: len(_pages(db, pid)) for pid in counts}


def _stamp_on_products_and_pages_with_none_listed(db):
    """The load's stamp, which a1's document and its review page carry; no product still listed
    for a recount (``core.mongo.RECOUNTS``: the eraser recounted every one)."""
    stamp = db[mongo.PRODUCTS].find_one({"_id": "a1"})[erasure.LOAD_STAMP]
    assert isinstance(stamp, int) and db[mongo.PRODUCT_REVIEWS].find_one({"_id": "a1:1"})[erasure.LOAD_STAMP] == stamp
    assert list(db[mongo.RECOUNTS].find({})) == []
    return stamp


@pytest.mark.timeout(1800)  # three loads into MongoDB on a shared 2-core machine
def test_an_account_deleted_between_the_products_and_the_pages_is_subtracted_once(spark, own_db, client, make_user,
                                                                                  monkeypatch, tmp_path):
    """The load writes the products, then the review pages. An account deleted in between is erased
    by the site from the previous pages and the load's products (which count its reviews), which it
    lists for a recount; the load's eraser erases it from the load's pages and recounts its products: its reviews
    come off once (they came off twice: a1 at 1 of 2). Incremental (r1: a product reviewed in the
    loaded category and the new one), then full (r2). One more account (r4) is deleted before the
    incremental load writes the products: the load's products count it again, and the eraser's
    recount leaves it out. Each load's reconciliation passes (it raises), each load's stamp is on
    its products and their pages, and no product is still listed for a recount."""
    import spark_jobs.mongo_load as job
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    db = own_db
    raw, cleaned = str(tmp_path / "raw"), str(tmp_path / "clean")
    alpha, beta = tmp_path / "amazon2018_alpha.jsonl", tmp_path / "amazon2018_beta.jsonl"
    _write_reviews(alpha, [("r1", "a1", 5.0), ("r2", "a1", 4.0), ("r2", "a2", 3.0), ("r4", "a1", 1.0)])
    _write_reviews(beta, [("r1", "b1", 4.0), ("r3", "b1", 2.0), ("r3", "a1", 2.0)])  # a1 again: touched
    load(spark, [str(alpha)], raw, "it-twice-1")
    clean(spark, raw, cleaned, "it-twice-1")
    assert job.mongo_load(spark, cleaned, "it-twice-1")["mode"] == "full"
    stamps = {_stamp_on_products_and_pages_with_none_listed(db)}
    load(spark, [str(beta)], raw, "it-twice-2")
    clean(spark, raw, cleaned, "it-twice-2")
    real_upsert, real_reload = job.upsert_collection, job.reload_collection

    before_products = _deleted_before_writing(mongo.PRODUCTS, real_upsert, client, make_user(reviewer_id="r4"))
    monkeypatch.setattr(job, "upsert_collection", _deleted_before_writing(
        mongo.PRODUCT_REVIEWS, before_products, client, make_user(reviewer_id="r1")))
    record = job.mongo_load(spark, cleaned, "it-twice-incremental")
    assert record["mode"] == "incremental" and record["deleted_users_left_out"] == 0
    _gone_everywhere(db, "r1")
    _gone_everywhere(db, "r4")
    counts, on_pages = _counts_and_pages(db)
    assert counts == on_pages == {"a1": 2, "a2": 1, "b1": 1}  # r2 and r3 on a1, r2 on a2, r3 on b1
    stamps.add(_stamp_on_products_and_pages_with_none_listed(db))

    monkeypatch.setattr(job, "upsert_collection", real_upsert)
    monkeypatch.setattr(job, "reload_collection", _deleted_before_writing(mongo.PRODUCT_REVIEWS, real_reload, client,
                                                                          make_user(reviewer_id="r2")))
    record = job.mongo_load(spark, cleaned, "it-twice-full", force=True)
    assert record["mode"] == "full" and record["deleted_users_left_out"] == 2  # r1, r4
    _gone_everywhere(db, "r2")
    counts, on_pages = _counts_and_pages(db)
    assert counts == on_pages == {"a1": 1, "a2": 0, "b1": 1}  # r3's alone
    stamps.add(_stamp_on_products_and_pages_with_none_listed(db))
    assert len(stamps) == 3  # each load's own
