"""Incremental and resumable ingestion (issue 12, item 7), on the real Spark, Parquet and MongoDB.

The three bundled categories (Musical Instruments, Digital Music, Gift Cards: each a reviews file
and a metadata file): two are loaded, then the third is added. Only the third is processed by
load, clean and mongo_load, and the counts reconcile over everything; running the same input again
does nothing; a stage that fails half-way is finished by running it again, without redoing the
stages before it and without doubled documents.
"""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from core import mongo, rating_history, trending
from tests.conftest import DEMO_DIR

pytestmark = pytest.mark.integration

FIRST_TWO = [DEMO_DIR / "amazon2014_musical_instruments_5.jsonl.gz",
             DEMO_DIR / "amazon2014_meta_musical_instruments_FIRST100_raw.json",
             DEMO_DIR / "amazon2014_digital_music_5_PARTIAL.jsonl.gz",
             DEMO_DIR / "amazon2014_meta_digital_music_PARTIAL.jsonl.gz"]
THIRD = [DEMO_DIR / "amazon2018_gift_cards_5.jsonl.gz", DEMO_DIR / "amazon2018_meta_gift_cards.jsonl.gz"]


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "incr")


def _files(folder) -> dict[str, float]:
    """Every data file under ``folder`` and its modification time (what a re-write would change)."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}


def _rows(path) -> int:
    return pq.read_table(str(path), columns=["product_id"]).num_rows


def _paths(files) -> list[str]:
    return [str(p) for p in files]


@pytest.mark.timeout(1800)  # three rounds of load, clean and mongo_load on a shared 2-core machine
def test_adding_a_category_processes_only_it(spark, tmp_path, own_db):
    from spark_jobs.clean import clean
    from spark_jobs.load import load
    from spark_jobs.mongo_load import mongo_load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    first = load(spark, _paths(FIRST_TWO), str(raw), "incr-1")
    assert sorted(first["loaded"]) == sorted(p.name for p in FIRST_TWO) and first["balanced"]
    assert clean(spark, str(raw), str(cleaned), "incr-1")["cleaned"] == ["Digital Music", "Musical Instruments"]
    assert mongo_load(spark, str(cleaned), "incr-1")["mode"] == "full"
    before_raw, before_clean = _files(raw), _files(cleaned)
    reviews_before = _held_reviews(own_db)
    rater, rater_history = _rerate_on_the_site(own_db)

    # the third category: only its files and its category are processed
    second = load(spark, _paths(FIRST_TWO + THIRD), str(raw), "incr-2")
    assert sorted(second["loaded"]) == sorted(p.name for p in THIRD)
    assert sorted(second["skipped"]) == sorted(p.name for p in FIRST_TWO)
    assert second["counts_in"]["lines"] == sum(sum(1 for _ in _open(p)) for p in THIRD)
    cleaned_2 = clean(spark, str(raw), str(cleaned), "incr-2")
    assert cleaned_2["cleaned"] == ["Gift Cards"] and cleaned_2["balanced"]
    assert cleaned_2["counts_in"]["reviews"] == second["counts_out"]["reviews"]
    own_db[mongo.POPULAR].delete_one({"_id": trending.MISSED})
    loaded_2 = mongo_load(spark, str(cleaned), "incr-2")
    assert loaded_2["mode"] == "incremental" and loaded_2["categories"] == ["Gift Cards"]
    # trending's stored votes keep each product's category and histories were replaced: the next
    # refresh rebuilds, whether or not a publish job follows
    assert own_db[mongo.POPULAR].find_one({"_id": trending.MISSED}), "the load did not ask trending to rebuild"
    # the other categories' Parquet was neither re-written nor removed
    after_raw, after_clean = _files(raw), _files(cleaned)
    assert {p: t for p, t in after_raw.items() if p in before_raw} == before_raw
    assert {p: t for p, t in after_clean.items() if p in before_clean} == before_clean
    # a shopper the new category does not name keeps their batch reviews and their live rating
    assert rating_history.user_ratings(rater, db=own_db) == rater_history
    # counts reconcile over everything: MongoDB holds every clean review and product once
    n_clean = _rows(cleaned / "reviews")
    gift = loaded_2["counts_in"]["new reviews"]
    assert gift == _rows(cleaned / "reviews" / "category=Gift Cards") > 0
    assert _held_reviews(own_db) == n_clean == reviews_before + gift
    assert own_db[mongo.PRODUCTS].count_documents({}) == loaded_2["counts_in"]["products"]
    gift_user = pq.read_table(str(cleaned / "reviews" / "category=Gift Cards"), columns=["user_id"]).column(0)[0]
    assert own_db[mongo.USER_HISTORY].find_one({"_id": gift_user.as_py()})["ratings"]
    assert own_db[mongo.CATALOG_INDEX].find_one({"_id": "Gift Cards:count"})["n"] > 0

    # the same input again: nothing is processed, nothing written
    again = load(spark, _paths(FIRST_TWO + THIRD), str(raw), "incr-3")
    assert again["loaded"] == [] and len(again["skipped"]) == 6
    assert clean(spark, str(raw), str(cleaned), "incr-3")["cleaned"] == []
    assert mongo_load(spark, str(cleaned), "incr-3")["mode"] == "skipped"
    assert _files(raw) == after_raw and _files(cleaned) == after_clean
    assert _held_reviews(own_db) == n_clean


def _rerate_on_the_site(db) -> tuple[str, dict[str, float]]:
    """A live rating as a worker stores it (in ``ratings`` and the history), by a reviewer of the
    first two categories who has none in the third; it changes one of their batch ratings, so the
    number of reviews held stays what the files give. Returns the user and their history after."""
    import json
    import time
    import uuid

    third = {json.loads(line)["reviewerID"] for line in _open(THIRD[0])}
    rater, history = next((d["_id"], rating_history.history_entries(d)[0])
                          for d in db[mongo.USER_HISTORY].find({}) if d["_id"] not in third and len(d["ratings"]) >= 2)
    product, (stars, _ts) = next(iter(history.items()))
    event = {"event_id": uuid.uuid4().hex, "user_id": rater, "product_id": product, "action": "rate",
             "rating": 1 if stars != 1 else 5, "ts": time.time()}
    db[mongo.RATINGS].insert_one(rating_history.rating_doc(event, state="processed"))
    rating_history.add_to_history(rater, product, event["rating"], event["ts"], db=db)
    return rater, rating_history.user_ratings(rater, db=db)


def _held_reviews(db) -> int:
    """The reviews MongoDB holds, counted twice independently: the products' review counts and the
    entries of the users' histories, which must agree (a live rating here only re-rates a review)."""
    by_products = sum(int(d.get("n_reviews") or 0) for d in db[mongo.PRODUCTS].find({}, {"n_reviews": 1}))
    in_histories = sum(len(d.get("ratings") or []) for d in db[mongo.USER_HISTORY].find({}, {"ratings": 1}))
    assert by_products == in_histories
    return by_products


def _open(path):
    import gzip

    return (gzip.open if path.name.endswith(".gz") else open)(path, "rt", encoding="utf-8")


@pytest.mark.timeout(1800)
def test_a_failed_stage_resumes_without_redoing_or_doubling(spark, tmp_path, own_db, monkeypatch):
    import spark_jobs.clean as clean_job
    import spark_jobs.mongo_load as ml_job
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    load(spark, _paths(FIRST_TWO), str(raw), "resume-1")
    clean_job.clean(spark, str(raw), str(cleaned), "resume-1")
    ml_job.mongo_load(spark, str(cleaned), "resume-1")
    load(spark, _paths(FIRST_TWO + THIRD), str(raw), "resume-2")
    raw_files = _files(raw)

    # clean dies after writing the new category's reviews, before its products and its ledger
    real_write = clean_job._write_partitions
    calls = []

    def dies_on_products(spark_, df, out, column, values, staging):
        calls.append(column)
        if column == "file_category":
            raise RuntimeError("killed mid-stage")
        return real_write(spark_, df, out, column, values, staging)

    monkeypatch.setattr(clean_job, "_write_partitions", dies_on_products)
    with pytest.raises(RuntimeError, match="killed"):
        clean_job.clean(spark, str(raw), str(cleaned), "resume-2")
    monkeypatch.setattr(clean_job, "_write_partitions", real_write)
    # the resume: load has nothing left to do, clean redoes only the unfinished category
    assert load(spark, _paths(FIRST_TWO + THIRD), str(raw), "resume-2")["loaded"] == []
    assert _files(raw) == raw_files
    resumed = clean_job.clean(spark, str(raw), str(cleaned), "resume-2")
    assert resumed["cleaned"] == ["Gift Cards"] and resumed["balanced"]

    # mongo_load dies after upserting the new reviews and products, before the histories
    real_upsert = ml_job.upsert_collection

    def dies_on_history(df, collection):
        if collection == mongo.USER_HISTORY:
            raise RuntimeError("killed mid-stage")
        return real_upsert(df, collection)

    monkeypatch.setattr(ml_job, "upsert_collection", dies_on_history)
    with pytest.raises(RuntimeError, match="killed"):
        ml_job.mongo_load(spark, str(cleaned), "resume-2")
    monkeypatch.setattr(ml_job, "upsert_collection", real_upsert)
    assert own_db[ml_job.INGEST_LEDGER].find_one({"_id": "Gift Cards"}) is None  # not recorded as done
    done = ml_job.mongo_load(spark, str(cleaned), "resume-2")
    assert done["mode"] == "incremental" and done["categories"] == ["Gift Cards"]
    # each review and product once: the upserts of the killed run were replaced, not added again
    assert _held_reviews(own_db) == _rows(cleaned / "reviews")
    assert own_db[mongo.PRODUCTS].count_documents({}) == done["counts_in"]["products"]
    for name in (mongo.PRODUCTS, mongo.USER_HISTORY, mongo.PRODUCT_REVIEWS):
        ids = [d["_id"] for d in own_db[name].find({}, {"_id": 1})]
        assert len(ids) == len(set(ids)), name


def _write_reviews(path, rows) -> None:
    import json

    path.write_text("".join(json.dumps({"overall": r, "verified": True, "reviewerID": u, "asin": p,
                                        "reviewerName": u, "reviewText": f"{u} on {p}", "summary": "ok",
                                        "unixReviewTime": ts}) + "\n" for u, p, r, ts in rows))


def _pairs(cleaned) -> dict[tuple[str, str], tuple[str, float]]:
    t = pq.read_table(str(cleaned / "reviews"), columns=["user_id", "product_id", "category", "rating"]).to_pylist()
    return {(r["user_id"], r["product_id"]): (r["category"], r["rating"]) for r in t}


def test_a_pair_given_up_to_another_category_comes_back_when_that_one_drops_it(spark, tmp_path):
    """A (user, item) pair in two categories stays with the one cleaned first; when that one's file
    changes and no longer has it, the other category is cleaned again and the pair is kept there."""
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    alpha, beta = tmp_path / "amazon2018_alpha.jsonl", tmp_path / "amazon2018_beta.jsonl"
    _write_reviews(alpha, [("u1", "p1", 5.0, 100), ("u2", "p2", 4.0, 100)])
    load(spark, [str(alpha)], str(raw), "pair-1")
    clean(spark, str(raw), str(cleaned), "pair-1")
    _write_reviews(beta, [("u1", "p1", 3.0, 200), ("u3", "p3", 2.0, 100)])
    load(spark, [str(alpha), str(beta)], str(raw), "pair-2")
    second = clean(spark, str(raw), str(cleaned), "pair-2")
    assert second["cleaned"] == ["Beta"] and second["counts_out"]["pairs another category holds"] == 1
    assert _pairs(cleaned)[("u1", "p1")] == ("Alpha", 5.0)

    _write_reviews(alpha, [("u2", "p2", 4.0, 100)])  # alpha's new file no longer has u1's review of p1
    load(spark, [str(alpha), str(beta)], str(raw), "pair-3")
    third = clean(spark, str(raw), str(cleaned), "pair-3")
    assert third["cleaned"] == ["Alpha", "Beta"] and third["balanced"]
    assert _pairs(cleaned) == {("u1", "p1"): ("Beta", 3.0), ("u2", "p2"): ("Alpha", 4.0), ("u3", "p3"): ("Beta", 2.0)}
    # nothing holds a pair of beta's now: changing alpha again redoes alpha alone
    _write_reviews(alpha, [("u2", "p2", 1.0, 300)])
    load(spark, [str(alpha), str(beta)], str(raw), "pair-4")
    assert clean(spark, str(raw), str(cleaned), "pair-4")["cleaned"] == ["Alpha"]


def _write_products(path, rows) -> None:
    import json

    path.write_text("".join(json.dumps({"asin": p, "title": t, "description": [t], "price": "$1.00"}) + "\n"
                            for p, t in rows))


def _products(cleaned) -> dict[str, tuple[str, str]]:
    t = pq.read_table(str(cleaned / "products"), columns=["product_id", "file_category", "title"]).to_pylist()
    return {r["product_id"]: (r["file_category"], r["title"]) for r in t}


def test_a_product_given_up_to_another_category_is_counted_and_comes_back(spark, tmp_path):
    """A product in two categories' metadata stays with the category cleaned first and is counted
    as held there (with its duplicate record in the same file counted apart); when the holder's
    metadata drops it, the other category is cleaned again and keeps it."""
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    files = {name: (tmp_path / f"amazon2018_{name}.jsonl", tmp_path / f"amazon2018_meta_{name}.jsonl")
             for name in ("alpha", "beta")}
    _write_reviews(files["alpha"][0], [("u1", "p1", 5.0, 100)])
    _write_reviews(files["beta"][0], [("u2", "p2", 4.0, 100)])
    _write_products(files["alpha"][1], [("p1", "Alpha one"), ("p9", "Alpha nine")])
    every = [str(p) for pair in files.values() for p in pair]
    load(spark, [str(p) for p in files["alpha"]], str(raw), "prod-1")
    assert clean(spark, str(raw), str(cleaned), "prod-1")["counts_out"]["products"] == 2

    _write_products(files["beta"][1], [("p9", "Beta nine"), ("p9", "Beta nine, longer title"), ("p2", "Beta two")])
    load(spark, every, str(raw), "prod-2")
    second = clean(spark, str(raw), str(cleaned), "prod-2")
    assert second["cleaned"] == ["Beta"] and second["balanced"]
    out = second["counts_out"]
    assert (out["products"], out["duplicate product records"], out["products another category holds"]) == (1, 1, 1)
    assert _products(cleaned)["p9"] == ("Alpha", "Alpha nine")

    _write_products(files["alpha"][1], [("p1", "Alpha one")])  # alpha no longer lists p9
    load(spark, every, str(raw), "prod-3")
    third = clean(spark, str(raw), str(cleaned), "prod-3")
    assert third["cleaned"] == ["Alpha", "Beta"] and third["balanced"]
    assert third["counts_out"]["products another category holds"] == 0
    assert _products(cleaned) == {"p1": ("Alpha", "Alpha one"), "p2": ("Beta", "Beta two"),
                                  "p9": ("Beta", "Beta nine, longer title")}


def test_what_one_run_gave_up_to_another_category_comes_back_when_that_one_drops_it(spark, tmp_path):
    """Two categories cleaned in the same run: a pair and a product both have go to one of them
    (the newer rating, the fuller record), and the other is dropped as a repeat. When the winner's
    files change without them, the other category is cleaned again and keeps its own."""
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    files = {name: (tmp_path / f"amazon2018_{name}.jsonl", tmp_path / f"amazon2018_meta_{name}.jsonl")
             for name in ("alpha", "beta")}
    every = [str(p) for pair in files.values() for p in pair]
    _write_reviews(files["alpha"][0], [("u1", "p1", 5.0, 100), ("u2", "p2", 4.0, 100)])
    _write_reviews(files["beta"][0], [("u1", "p1", 3.0, 200), ("u3", "p3", 2.0, 100)])
    _write_products(files["alpha"][1], [("p1", "Alpha one"), ("p9", "Nine")])
    _write_products(files["beta"][1], [("p3", "Beta three"), ("p9", "Nine, the longer title")])
    load(spark, every, str(raw), "same-1")
    first = clean(spark, str(raw), str(cleaned), "same-1")
    assert first["cleaned"] == ["Alpha", "Beta"] and first["balanced"]
    assert _pairs(cleaned)[("u1", "p1")] == ("Beta", 3.0)
    assert _products(cleaned)["p9"] == ("Beta", "Nine, the longer title")

    _write_reviews(files["beta"][0], [("u3", "p3", 2.0, 100)])  # beta's new files drop both
    _write_products(files["beta"][1], [("p3", "Beta three")])
    load(spark, every, str(raw), "same-2")
    second = clean(spark, str(raw), str(cleaned), "same-2")
    assert second["cleaned"] == ["Alpha", "Beta"] and second["balanced"]
    assert _pairs(cleaned)[("u1", "p1")] == ("Alpha", 5.0)
    assert _products(cleaned)["p9"] == ("Alpha", "Nine")


def _tiny_clean(spark, path, reviews: list[tuple[str, str, str, float]], products: list[tuple[str, str]],
                categories: list[str]) -> str:
    """Clean output as mongo_load reads it (``reviews``: user, product, category, rating; ``products``:
    product with metadata, category), appended to ``path``; the clean ledger names ``categories``."""
    from pyspark.sql import functions as F

    from spark_jobs import units

    spark.createDataFrame(
        [(u, p, c, r, 100.0 + i, 0, f"{u} on {p}", f"{u} on {p}") for i, (u, p, c, r) in enumerate(reviews)],
        "user_id string, product_id string, category string, rating double, ts double, helpful_votes long, "
        "summary string, summary_clean string",
    ).select("*", F.col("user_id").alias("reviewer_name"), F.col("summary").alias("review_text"),
             F.lit(True).alias("verified")).write.mode("append").parquet(f"{path}/reviews")
    spark.createDataFrame(
        [(p, f"Title of {p}", "", 1.0, c, [], "", "", [], c) for p, c in products],
        "product_id string, title string, brand string, price double, category string, categories array<string>, "
        "description string, image string, also_buy array<string>, file_category string",
    ).write.mode("append").parquet(f"{path}/products")
    units.write_ledger(str(path), {"categories": {c: f"fp-{c}" for c in categories}})
    return str(path)


@pytest.mark.timeout(1200)
def test_an_incremental_load_says_how_many_reviewed_products_lack_metadata(spark, tmp_path, own_db, capsys):
    """README: mongo_load's run record and output say how many reviewed products lack metadata; an
    incremental load said nothing of it (only the full load counted them). Counted over every
    product, as a full load counts them: what the shop can show after the load."""
    from spark_jobs.mongo_load import mongo_load

    clean = _tiny_clean(spark, tmp_path / "clean", [("u1", "A1", "a", 5.0)], [("A1", "a")], ["a"])
    assert mongo_load(spark, clean, "cover-1")["mode"] == "full"
    capsys.readouterr()
    # b: B1 reviewed with metadata, B2 reviewed without, B3 metadata without reviews
    _tiny_clean(spark, tmp_path / "clean", [("u2", "B1", "b", 4.0), ("u2", "B2", "b", 3.0)],
                [("B1", "b"), ("B3", "b")], ["a", "b"])
    loaded = mongo_load(spark, clean, "cover-2")
    assert loaded["mode"] == "incremental" and loaded["categories"] == ["b"]
    assert loaded["metadata"] == {"reviewed products": 3, "reviewed products without metadata": 1,
                                  "products with metadata, not reviewed": 1, "generated titles": 1}
    assert "3 reviewed products, 1 of them without metadata" in capsys.readouterr().out
