"""One of mongo_load's frames on Spark (the search index or the review pages), this code against other trees'.

    .local/venv/bin/python -m bench.mongo_load_frames --clean /big/run/data/clean \
        --compare-code /tmp/before [--frame review_pages] [--categories Books,Electronics] [--rounds 2]

Why: at 51.6M reviews mongo_load's search index went in at 1,336 documents/s, the slowest of its
collections, and nobody had split its time between Spark and the inserts; the review pages are
its longest step. This builds the frame's input as mongo_load does (the search index: the
products frame, ``product_docs`` of the clean products and reviews, kept on disk; the review
pages: the clean reviews with their text, read from Parquet, with mongo_load's session settings),
then computes the documents with each code (Spark's ``noop`` sink: everything is computed,
nothing is written) in alternating order, in one Spark session, and checks all give the same
documents (count and a checksum of every field). Printed: seconds per round and code, documents,
the load average. (Named ``search_index_build.py`` until it did the review pages too.)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_module(tree: Path, i: int = 0):
    """``spark_jobs/mongo_load.py`` of another tree, as its own module (it imports this tree's core)."""
    spec = importlib.util.spec_from_file_location(f"mongo_load_compared_{i}", tree / "spark_jobs" / "mongo_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def checksum(docs) -> tuple[int, int]:
    from pyspark.sql import functions as F

    row = docs.select(F.count("*").alias("n"), F.sum(F.xxhash64(*docs.columns)).alias("h")).first()
    return int(row["n"]), int(row["h"] or 0)


def main() -> None:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from spark_jobs import mongo_load
    from spark_jobs.common import spark_session

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clean", type=Path, required=True, help="a clean/ folder (reviews/ and products/)")
    ap.add_argument("--frame", choices=("search_index", "review_pages"), default="search_index")
    ap.add_argument("--compare-code", type=Path, required=True, action="append",
                    help="another checkout (git archive REV | tar -x); may be given more than once")
    ap.add_argument("--compare-label", action="append", help="a name for each --compare-code (default: its folder)")
    ap.add_argument("--categories", help="only these review categories (comma-separated)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    labels = args.compare_label or [tree.name for tree in args.compare_code]
    if len(labels) != len(args.compare_code):
        ap.error("give one --compare-label per --compare-code, or none")
    others = {label: load_module(tree, i) for i, (label, tree) in enumerate(zip(labels, args.compare_code))}
    spark = spark_session(f"bench-{args.frame}")
    reviews = spark.read.parquet(str(args.clean / "reviews"))
    products = spark.read.parquet(str(args.clean / "products"))
    if args.categories:
        cats = args.categories.split(",")
        # reviews name a category as the files do ("Toys and Games"), products' folders title-case it
        reviews = reviews.where(F.lower("category").isin([c.lower() for c in cats]))
        products = products.where(F.lower("file_category").isin([c.lower() for c in cats]))
    if args.frame == "review_pages":
        mongo_load.allow_subset_copartitioning(spark)  # as mongo_load() sets its session up
        if not args.categories:
            mongo_load.size_shuffles(spark, str(args.clean))
        docs = reviews
    else:
        t0 = time.time()
        docs = mongo_load.product_docs(products, reviews).persist(StorageLevel.DISK_ONLY)
        n_products = docs.count()
        print(f"products frame: {n_products:,} products in {time.time() - t0:.0f} s; "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    name = {"search_index": "search_index_docs", "review_pages": "review_page_docs"}[args.frame]
    codes = {"this": getattr(mongo_load, name), **{label: getattr(m, name) for label, m in others.items()}}
    seconds: dict[str, list[float]] = {k: [] for k in codes}
    for r in range(args.rounds):
        for label in (list(codes) if r % 2 == 0 else list(codes)[::-1]):  # alternating order
            t = time.time()
            codes[label](docs).write.format("noop").mode("overwrite").save()
            seconds[label].append(time.time() - t)
            print(f"round {r + 1} {label:>10}: {seconds[label][-1]:7.1f} s "
                  f"(load {' '.join(f'{x:.1f}' for x in os.getloadavg())})", flush=True)
    sums = {label: checksum(fn(docs)) for label, fn in codes.items()}
    same = len(set(sums.values())) == 1
    print(f"documents: {sums['this'][0]:,}; the same documents from all: {same}")
    for label in codes:
        print(f"{label:>10}: best {min(seconds[label]):.1f} s, "
              f"{sums[label][0] / min(seconds[label]):,.0f} documents/s")
    spark.stop()
    if not same:
        raise SystemExit("the codes gave different documents")


if __name__ == "__main__":
    main()
