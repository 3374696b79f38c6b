"""Load the clean reviews and products into MongoDB, in bulk and idempotently.

Each collection is rebuilt in a staging collection and swapped in, so a re-run ends with exactly
the same documents (never duplicates) and a reader never sees half a load. Besides the reviews
and products themselves, the job writes the ``_id``-keyed documents the site and workers read on
their hot paths (see core/mongo.py for why): each user's rating history, each product's review
pages, and the catalog order per category. Writes happen from the executors, one client per
partition, so the load scales with the cluster.

    spark-submit spark_jobs/mongo_load.py [--run-id R]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import mongo
from core.settings import get_settings
from spark_jobs.common import run_job

MAX_REVIEW_PAGES = 50  # the site pages through a product's 500 most helpful reviews
SEARCH_TEXT_CHARS = 2000


def product_stats(reviews: DataFrame) -> DataFrame:
    """Per-product aggregates the catalog pages and popularity lists need."""
    return reviews.groupBy("product_id").agg(
        F.count("*").alias("n_reviews"),
        F.round(F.avg("rating"), 3).alias("avg_rating"),
        *[F.sum((F.col("rating") == star).cast("long")).alias(f"r{star}") for star in range(1, 6)],
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        F.max_by("summary", F.struct("helpful_votes", "ts")).alias("sample_summary"),
        F.substring(F.concat_ws(" ", F.slice(F.collect_list("summary_clean"), 1, 50)), 1, SEARCH_TEXT_CHARS)
         .alias("search_text"),
        F.first("category").alias("review_category"),
    )


def product_docs(products: DataFrame, reviews: DataFrame) -> DataFrame:
    """Every product with metadata or reviews, one row shaped like its MongoDB document."""
    joined = products.join(product_stats(reviews), "product_id", "full_outer")
    empty = F.array().cast("array<string>")
    return joined.select(
        F.col("product_id").alias("_id"),
        F.coalesce("title", F.lit("")).alias("title"),
        F.coalesce("brand", F.lit("")).alias("brand"),
        F.coalesce("price", F.lit(0.0)).alias("price"),
        F.coalesce("review_category", "category", F.lit("")).alias("category"),
        F.coalesce("categories", empty).alias("categories"),
        F.coalesce("description", F.lit("")).alias("description"),
        F.coalesce("image", F.lit("")).alias("image"),
        F.coalesce("also_buy", empty).alias("also_buy"),
        F.coalesce("n_reviews", F.lit(0)).alias("n_reviews"),
        F.coalesce("avg_rating", F.lit(0.0)).alias("avg_rating"),
        F.create_map(*[x for s in range(1, 6) for x in (F.lit(str(s)), F.coalesce(f"r{s}", F.lit(0)))])
         .alias("rating_hist"),
        F.coalesce("first_ts", F.lit(0)).alias("first_ts"),
        F.coalesce("last_ts", F.lit(0)).alias("last_ts"),
        F.coalesce("sample_summary", F.lit("")).alias("sample_summary"),
        F.coalesce("search_text", F.lit("")).alias("search_text"),
    )


def review_docs(reviews: DataFrame) -> DataFrame:
    return reviews.select(
        F.concat_ws("|", "user_id", "product_id").alias("_id"),
        "user_id", "product_id", "rating", "ts", "review_text", "summary", "verified",
        "helpful_votes", "reviewer_name", "category",
    )


def review_page_docs(reviews: DataFrame, per_page: int = mongo.REVIEWS_PER_PAGE) -> DataFrame:
    """A product's reviews in pages of ``per_page``, most helpful then newest first."""
    w = Window.partitionBy("product_id").orderBy(F.col("helpful_votes").desc(), F.col("ts").desc(), "user_id")
    ranked = (reviews.withColumn("rn", F.row_number().over(w) - 1)
              .withColumn("n", F.count("*").over(Window.partitionBy("product_id")))
              .where(F.col("rn") < MAX_REVIEW_PAGES * per_page)
              .withColumn("page", (F.col("rn") / per_page).cast("int") + 1))
    item = F.struct("rn", "user_id", "reviewer_name", "rating", "ts", "summary", "review_text", "verified",
                    "helpful_votes")
    return (ranked.groupBy("product_id", "page")
            .agg(F.sort_array(F.collect_list(item)).alias("items"), F.first("n").alias("n"))
            .select(F.concat_ws(":", "product_id", F.col("page").cast("string")).alias("_id"),
                    F.transform("items", lambda r: r.dropFields("rn")).alias("items"),
                    F.least(F.ceil(F.col("n") / per_page), F.lit(MAX_REVIEW_PAGES)).cast("int").alias("pages")))


def catalog_index_docs(products: DataFrame) -> DataFrame:
    """Product ids most-reviewed first, per category and overall, in chunks, plus their counts."""
    listed = products.select("_id", "category", "n_reviews").where(F.col("n_reviews") > 0)
    both = listed.unionByName(listed.withColumn("category", F.lit(mongo.ALL)))
    w = Window.partitionBy("category").orderBy(F.col("n_reviews").desc(), "_id")
    ranked = both.withColumn("rn", F.row_number().over(w) - 1) \
                 .withColumn("chunk", (F.col("rn") / mongo.CATALOG_CHUNK).cast("int"))
    chunks = (ranked.groupBy("category", "chunk")
              .agg(F.sort_array(F.collect_list(F.struct("rn", "_id"))).alias("s"))
              .select(F.concat_ws(":", "category", F.col("chunk").cast("string")).alias("_id"),
                      F.col("s._id").alias("ids"), F.lit(None).cast("long").alias("n")))
    counts = ranked.groupBy("category").count().select(
        F.concat(F.col("category"), F.lit(":count")).alias("_id"),
        F.array().cast("array<string>").alias("ids"), F.col("count").alias("n"))
    return chunks.unionByName(counts)


def user_history_docs(spark: SparkSession, reviews: DataFrame) -> DataFrame:
    """Each user's ratings {product: [rating, ts]}: batch reviews merged with live site ratings.

    Live ratings (from Kafka, stored by the workers) are read back so a reload never forgets a
    rating a user made on the site; the later of two ratings of the same product wins.
    """
    live = [(d["user_id"], d["product_id"], float(d["rating"]), int(d["ts"]))
            for d in mongo.get_db()[mongo.RATINGS].find({}, {"user_id": 1, "product_id": 1, "rating": 1, "ts": 1})]
    both = reviews.select("user_id", "product_id", "rating", "ts")
    if live:
        both = both.unionByName(spark.createDataFrame(live, "user_id string, product_id string, rating double, ts long"))
    latest = both.withColumn("_n", F.row_number().over(
        Window.partitionBy("user_id", "product_id").orderBy(F.col("ts").desc()))).where("_n = 1")
    return latest.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct(
            "product_id", F.array(F.col("rating"), F.col("ts").cast("double"))))).alias("ratings")
    ).withColumnRenamed("user_id", "_id")


def _inserter(collection: str, uri: str, db_name: str):
    def insert_partition(rows) -> None:
        from core import mongo as m

        db = m.get_db(uri, db_name)
        m.insert_docs(collection, (row.asDict(recursive=True) for row in rows), db=db)
    return insert_partition


def reload_collection(df: DataFrame, collection: str, extra_docs: list[dict] | None = None) -> dict:
    """Rebuild ``collection`` from ``df`` (staging + swap) and report documents per second.

    ``extra_docs`` (small driver-side documents) go into the same staging collection, so readers
    never see the swapped-in collection without them and the reported count is the whole of it.
    """
    settings = get_settings()
    started = time.time()
    staging = mongo.replace_collection_start(collection)
    partitions = max(2, df.sparkSession.sparkContext.defaultParallelism)
    df.repartition(partitions).foreachPartition(_inserter(staging, settings.mongo_uri, settings.mongo_db))
    if extra_docs:
        mongo.insert_docs(staging, extra_docs)
    n = mongo.get_db()[staging].count_documents({})
    mongo.replace_collection_finish(collection)
    seconds = time.time() - started
    rate = n / seconds if seconds else 0.0
    print(f"mongo_load: {collection}: {n:,} documents in {seconds:.1f} s ({rate:,.0f} docs/s)")
    return {"documents": n, "seconds": round(seconds, 2), "docs_per_s": round(rate, 1)}


def mongo_load(spark: SparkSession, clean_dir: str, run_id: str) -> dict:
    started = time.time()
    reviews = spark.read.parquet(f"{clean_dir}/reviews").cache()
    products = product_docs(spark.read.parquet(f"{clean_dir}/products"), reviews).cache()
    n_reviews, n_products = reviews.count(), products.count()
    cats = [{"name": r["category"], "n_products": r["count"]}
            for r in products.where("n_reviews > 0").groupBy("category").count().orderBy(F.desc("count")).collect()]
    top_users = [{"user_id": r["user_id"], "n": int(r["count"])} for r in
                 reviews.groupBy("user_id").count().orderBy(F.desc("count"), "user_id").limit(100).collect()]
    out = {
        mongo.PRODUCTS: reload_collection(products, mongo.PRODUCTS),
        mongo.REVIEWS: reload_collection(review_docs(reviews), mongo.REVIEWS),
        mongo.PRODUCT_REVIEWS: reload_collection(review_page_docs(reviews), mongo.PRODUCT_REVIEWS),
        mongo.USER_HISTORY: reload_collection(user_history_docs(spark, reviews), mongo.USER_HISTORY),
        mongo.CATALOG_INDEX: reload_collection(catalog_index_docs(products), mongo.CATALOG_INDEX, extra_docs=[
            {"_id": "categories", "items": cats}, {"_id": "top_users", "items": top_users}]),
    }
    mongo.ensure_indexes()
    # Reconciliation: every clean review and product is in MongoDB, no more, no fewer.
    if out[mongo.REVIEWS]["documents"] != n_reviews or out[mongo.PRODUCTS]["documents"] != n_products:
        raise RuntimeError(f"mongo_load: wrote {out[mongo.REVIEWS]['documents']:,} reviews of {n_reviews:,} and "
                           f"{out[mongo.PRODUCTS]['documents']:,} products of {n_products:,}")
    return {"status": "ok", "run_id": run_id, "collections": out, "counts_in": {
        "reviews": n_reviews, "products": n_products}, "seconds": round(time.time() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    return run_job("mongo_load", __doc__, argv,
                   lambda spark, args: mongo_load(spark, str(get_settings().data_dir / "clean"), args.run_id))


if __name__ == "__main__":
    sys.exit(main())
