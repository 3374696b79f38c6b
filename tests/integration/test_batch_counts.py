"""Honest reconciliation in clean and mongo_load (issue 11, item 13).

A balance is only worth something if it can fail: what was written is counted by reading it back
and what was removed is counted directly, so a job that loses rows says so. The faults are
injected into the real jobs on the session's Spark, real Parquet and the real MongoDB server;
expected numbers come from the test's own rows, counted in Python.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from pyspark.sql import functions as F

from core import mongo
from core.spark_schemas import PRODUCT, REVIEW

pytestmark = pytest.mark.integration


def _review(user: int, item: int, ts: int, text: str = "ok") -> dict:
    line = f"{user}|{item}|{ts}|{text}"
    return {"user_id": f"CU{user}", "product_id": f"CP{item}", "rating": float(1 + (user + item) % 5),
            "ts": ts, "review_text": text, "summary": text, "helpful_votes": 0, "total_votes": 0,
            "verified": True, "reviewer_name": "x", "category": "Drums" if item % 2 else "Guitars",
            "source_format": "2014", "source_file": "f.json", "line_hash": hashlib.sha256(line.encode()).hexdigest()}


def _product(item: int, title: str) -> dict:
    return {"product_id": f"CP{item}", "title": title, "brand": "", "price": 1.0, "category": "Drums",
            "categories": [], "description": "", "image": "", "also_buy": [], "source_file": "m.json"}


@pytest.fixture
def raw(spark, tmp_path):
    """Raw Parquet as load writes it: 40 reviews plus 3 exact duplicate lines and 5 older reviews
    of a pair rated again; 12 products plus 2 duplicate records."""
    reviews = [_review(u, (u * 3 + k) % 12, 1_500_000_000 + u * 100 + k) for u in range(10) for k in range(4)]
    dup_lines = reviews[:3]
    older = [_review(u, (u * 3) % 12, 1_400_000_000 + u, text="older") for u in range(5)]
    products = [_product(i, f"P{i}") for i in range(12)] + [_product(0, ""), _product(5, "")]
    root = tmp_path / "raw"
    spark.createDataFrame(reviews + dup_lines + older, REVIEW).write.parquet(str(root / "reviews"))
    spark.createDataFrame(products, PRODUCT).write.parquet(str(root / "products"))
    return root, {"reviews": len(reviews) + len(dup_lines) + len(older), "kept": len(reviews),
                  "exact duplicate lines": len(dup_lines), "repeated user-item pairs": len(older),
                  "products": len(products), "products kept": 12}


def test_clean_counts_what_it_removed_and_what_it_wrote(spark, raw, tmp_path, settings):
    from spark_jobs.clean import clean

    root, want = raw
    record = clean(spark, str(root), str(tmp_path / "clean"), "it-clean-counts")
    assert record["balanced"] is True
    assert record["counts_in"] == {"reviews": want["reviews"], "products": want["products"]}
    out = record["counts_out"]
    assert out["reviews"] == want["kept"]
    assert out["exact duplicate lines"] == want["exact duplicate lines"]
    assert out["repeated user-item pairs"] == want["repeated user-item pairs"]
    assert out["products"] == want["products kept"]
    assert out["duplicate product records"] == want["products"] - want["products kept"]


def test_clean_fails_when_rows_go_missing(spark, raw, tmp_path, monkeypatch):
    """A selection bug that silently drops 5-star reviews must unbalance clean, not hide among
    the "duplicates" (today those are the difference of two counts, so nothing can be missing)."""
    import spark_jobs.clean as job
    from spark_jobs.reconcile import Unbalanced

    root, _ = raw
    real = job.latest_per_pair
    monkeypatch.setattr(job, "latest_per_pair", lambda df: real(df).where(F.col("rating") < 5))
    with pytest.raises(Unbalanced):
        job.clean(spark, str(root), str(tmp_path / "clean"), "it-clean-lossy")


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "counts")


def test_mongo_load_reconciles_every_collection(spark, raw, tmp_path, own_db, monkeypatch):
    """Every collection mongo_load writes is checked against the inserts the server acknowledged
    (and here counted back too); a lost document (one of catalog_index's driver-side documents)
    fails the load."""
    from spark_jobs.clean import clean
    from spark_jobs.mongo_load import mongo_load

    root, want = raw
    clean(spark, str(root), str(tmp_path / "clean"), "it-ml-counts")
    record = mongo_load(spark, str(tmp_path / "clean"), "it-ml-counts")
    # every kept review is within the newest four weeks, so all of them are "recent"
    per_item = Counter(r["product_id"] for r in own_db[mongo.RECENT_REVIEWS].find({}, {"product_id": 1}))
    assert sum(d["n_reviews"] for d in own_db[mongo.PRODUCTS].find({}, {"n_reviews": 1})) == want["kept"]
    expected = {mongo.PRODUCTS: 12, mongo.RECENT_REVIEWS: want["kept"], mongo.USER_HISTORY: 10,
                mongo.PRODUCT_REVIEWS: len(per_item),  # fewer than 10 reviews each: one page
                mongo.CATALOG_INDEX: 3 * 2 + 2}  # all, Drums, Guitars: a chunk and a count each; + 2
    for name, n in expected.items():
        c = record["collections"][name]
        assert c["documents"] == c["expected"] == n == own_db[name].count_documents({}), (name, c)

    real_insert = mongo.insert_docs

    def lossy(collection, docs, *args, **kwargs):  # a driver-side insert that loses a document
        return real_insert(collection, list(docs)[1:], *args, **kwargs)

    monkeypatch.setattr(mongo, "insert_docs", lossy)
    with pytest.raises(RuntimeError, match="catalog_index"):
        mongo_load(spark, str(tmp_path / "clean"), "it-ml-lossy")
