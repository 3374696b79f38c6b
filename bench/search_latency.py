"""Search latency: the inverted index (core/search.py) at 1M products against the old regex scan.

    .local/venv/bin/python bench/search_latency.py [--products 1000000] [--keys 20000] [--queries 2000]
                                                    [--old-products 20000] [--old-queries 20] [--keep]

Generates a synthetic 1M-product catalog directly into a private MongoDB database on the running
server (``bench_search_<random>``, dropped afterwards unless ``--keep``): the products (what a
results page fetches by id) and a ``search_index`` shaped as spark_jobs/mongo_load.py writes it.
Word document frequencies are Zipf-like (the commonest word is in half the products, the
20,000th in 25); each word's postings are a random subset of the products split into
title/brand/category and review-only matches, kept to ``MAX_POSTINGS`` like the job does.
Queries have 1-3 words drawn with Zipf weights (shoppers type common words most). Each query is
timed through ``core.catalog.search_ids`` (the index reads, intersection, ranking and count) and
through ``core.catalog.list_products`` (the same plus the 24 products of page 1), as the catalog
page calls it, sequentially from one client.

For comparison, the search the site used before (an escaped case-insensitive ``$regex`` over
title and review text, sorted, paged and counted by the server) runs on a smaller catalog of the
same shape, ``--old-products``; it scans every product twice per request.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid

import numpy as np
from pymongo import ASCENDING, DESCENDING

from core import catalog, mongo, search

N_CATEGORIES = 30
PER_PAGE = 24


def pid(i: int) -> str:
    return f"P{i:07d}"  # zero-padded: id order is popularity order, as the index ranks ties


def category(i: int) -> int:
    return (i * 2654435761) % N_CATEGORIES


def smallest_of_subset(rng: np.random.Generator, n_total: int, k: int, keep: int) -> np.ndarray:
    """The ``keep`` smallest members of a random ``k``-subset of range(n_total), without drawing it all."""
    if k <= 0 or keep <= 0:
        return np.empty(0, dtype=np.int64)
    gaps = rng.geometric(min(1.0, k / n_total), size=min(k, keep))
    members = np.cumsum(gaps) - 1
    return members[members < n_total]


def index_doc(rng: np.random.Generator, rank: int, n_products: int, cats: list[str]) -> dict:
    df = max(1, int(n_products * 0.5 / rank))
    n_primary = int(df * rng.uniform(0.05, 0.6))
    primary = smallest_of_subset(rng, n_products, n_primary, search.MAX_POSTINGS)
    review = smallest_of_subset(rng, n_products, df - n_primary, search.MAX_POSTINGS)
    review = np.setdiff1d(review, primary)[:search.MAX_POSTINGS - primary.size]
    order = np.concatenate([primary, review])
    return {"_id": f"w{rank}", "n": int(df), "ids": " ".join(pid(i) for i in order.tolist()),
            "tiers": search.PRIMARY * primary.size + search.REVIEW * review.size,
            "ranks": " ".join(map(str, order.tolist())), "cats": cats,
            "cat": " ".join(str(category(i)) for i in order.tolist())}


def product_doc(i: int, words: list[str], review_words: list[str]) -> dict:
    return {"_id": pid(i), "title": f"Product {i} " + " ".join(words), "brand": f"brand{i % 5000}",
            "category": f"Category {category(i)}", "price": 9.99, "n_reviews": 1_000_000 - i, "avg_rating": 4.2,
            "sample_summary": "synthetic", "search_text": " ".join(review_words)}


def queries(rng: np.random.Generator, n: int, n_keys: int) -> list[str]:
    weights = 1.0 / np.arange(1, n_keys + 1) ** 0.8
    weights /= weights.sum()
    sizes = rng.choice([1, 2, 3], size=n, p=[0.5, 0.35, 0.15])
    return [" ".join(f"w{r}" for r in rng.choice(n_keys, size=k, replace=False, p=weights) + 1) for k in sizes]


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


def time_calls(label: str, fn, qs: list[str]) -> tuple[float, float]:
    fn(qs[0])  # connection warm-up
    times = []
    for q in qs:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    p50, p99 = pct(times, 0.5), pct(times, 0.99)
    print(f"  {label:<52} n={len(qs):>5}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {max(times) * 1000:7.1f} ms"
          f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return p50, p99


def old_list_products(db, query: str, page: int = 1) -> tuple[list[dict], int]:
    """The search as core/mongo.py ran it before the index (commit a3550a7), verbatim in effect."""
    pattern = {"$regex": re.escape(query[:100]), "$options": "i"}
    flt = {"$or": [{"title": pattern}, {"search_text": pattern}]}
    found = list(db[mongo.PRODUCTS].find(flt, {"title": 1, "category": 1, "n_reviews": 1})
                 .sort([("n_reviews", DESCENDING), ("_id", ASCENDING)]).skip((page - 1) * PER_PAGE).limit(PER_PAGE))
    return found, db[mongo.PRODUCTS].count_documents(flt)


def build_new(db, rng, n_products: int, n_keys: int) -> None:
    t0 = time.time()
    cats = [f"Category {c}" for c in range(N_CATEGORIES)]
    mongo.insert_docs(mongo.SEARCH_INDEX, (index_doc(rng, r, n_products, cats) for r in range(1, n_keys + 1)),
                      batch_size=50, db=db)
    t1 = time.time()
    mongo.insert_docs(mongo.PRODUCTS, (product_doc(i, [], []) for i in range(n_products)), batch_size=5000, db=db)
    print(f"  generated {n_keys:,} index keys in {t1 - t0:.0f} s and {n_products:,} products in "
          f"{time.time() - t1:.0f} s")


def build_old(db, rng, n_products: int, n_keys: int) -> None:
    """Products whose title and review text hold the same Zipf words the index would list."""
    weights = 1.0 / np.arange(1, n_keys + 1)
    weights /= weights.sum()
    words = rng.choice(n_keys, size=(n_products, 40), p=weights) + 1
    mongo.insert_docs(mongo.PRODUCTS, (product_doc(i, [f"w{r}" for r in words[i, :6]],
                                                   [f"w{r}" for r in words[i, 6:]]) for i in range(n_products)),
                      batch_size=5000, db=db)
    db[mongo.PRODUCTS].create_index([("n_reviews", DESCENDING)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--old-products", type=int, default=20_000)
    parser.add_argument("--old-queries", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the private databases")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    name = f"bench_search_{uuid.uuid4().hex[:6]}"
    new_db, old_db = mongo.get_db(name=name), mongo.get_db(name=f"{name}_old")
    try:
        print(f"index search, {args.products:,} products (database {name}):")
        build_new(new_db, rng, args.products, args.keys)
        qs = queries(rng, args.queries, args.keys)
        hits = [len(catalog.search_ids(q, db=new_db)) for q in qs[:200]]
        print(f"  queries: {sum(' ' not in q for q in qs)} of one word, the rest 2-3; results per query "
              f"(first 200): median {int(np.median(hits))}, max {max(hits)}")
        idx = time_calls("search_ids (index reads, intersect, rank, count)",
                         lambda q: catalog.search_ids(q, db=new_db), qs)
        page = time_calls("list_products page 1 (the above + 24 products by _id)",
                          lambda q: catalog.list_products(1, PER_PAGE, query=q, db=new_db), qs)
        print(f"old regex search, {args.old_products:,} products (database {name}_old):")
        build_old(old_db, rng, args.old_products, args.keys)
        old_qs = [q.split(" ")[0] for q in queries(rng, args.old_queries, args.keys)]  # it took one phrase
        old = time_calls("$regex on title + review text, sort, skip, count", lambda q: old_list_products(old_db, q),
                         old_qs)
        print(f"\nsummary: index p50 {page[0]:.1f} ms / p99 {page[1]:.1f} ms with page 1 "
              f"(index only p99 {idx[1]:.1f} ms) at {args.products:,} products, target p99 <= 50 ms; "
              f"old regex p50 {old[0]:.0f} ms / p99 {old[1]:.0f} ms at {args.old_products:,} products")
    finally:
        if not args.keep:
            mongo.get_client().drop_database(name)
            mongo.get_client().drop_database(f"{name}_old")
    return 0


if __name__ == "__main__":
    sys.exit(main())
