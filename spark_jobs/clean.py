"""Clean the loaded reviews and products into partitioned Parquet.

Missing numbers were already made 0 and missing strings "" by load; here HTML character references
in the text people read are decoded (review text, summary and reviewer name; product title, brand and
description: ``&#34;`` -> ``"``, ``&amp;quot;`` -> ``"``), text gets an analysable copy (no URLs, no
punctuation, lower case) beside the original the site shows, exact duplicate
lines are dropped, and a (user, item) pair rated more than once keeps only its latest review.
Every dropped row is counted where it is dropped and what was written is counted by reading it
back, so the balance (rows in = rows written + duplicates removed) fails if rows go missing.

    spark-submit spark_jobs/clean.py [--run-id R]
"""
from __future__ import annotations

import sys
import time

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.settings import get_settings
from spark_jobs.common import run_job
from spark_jobs.reconcile import Unbalanced, check_and_print
from spark_jobs.text_clean import clean_text_col, unescape_html_col


def _pair_rank(reviews: DataFrame) -> DataFrame:
    """``_n``: 1 for the latest review of each (user, item); ties broken by line hash so re-runs agree."""
    w = Window.partitionBy("user_id", "product_id").orderBy(F.col("ts").desc(), F.col("line_hash").desc())
    return reviews.withColumn("_n", F.row_number().over(w))


def latest_per_pair(reviews: DataFrame) -> DataFrame:
    """One review per (user, item): the latest."""
    return _pair_rank(reviews).where("_n = 1").drop("_n")


def removed_counts(raw_reviews: DataFrame, distinct_lines: DataFrame, raw_products: DataFrame) -> dict[str, int]:
    """The rows clean drops, counted directly (not as a difference of counts, which always balances)."""
    def surplus(df: DataFrame, key: str) -> int:  # rows beyond the first of each key
        return int(df.groupBy(key).count().agg(F.sum(F.col("count") - 1)).first()[0] or 0)

    return {"exact duplicate lines": surplus(raw_reviews, "line_hash"),
            "repeated user-item pairs": _pair_rank(distinct_lines).where("_n > 1").count(),
            "duplicate product records": surplus(raw_products, "product_id")}


def clean_reviews(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(distinct lines, cleaned latest-per-pair reviews)."""
    distinct_lines = raw.dropDuplicates(["line_hash"])
    latest = latest_per_pair(distinct_lines).withColumns(
        {name: unescape_html_col(F.col(name)) for name in ("review_text", "summary", "reviewer_name")})
    cleaned = latest.select(
        "user_id", "product_id", "rating", "ts", "review_text", "summary",
        clean_text_col(F.col("review_text")).alias("text_clean"),
        clean_text_col(F.col("summary")).alias("summary_clean"),
        "helpful_votes", "total_votes", "verified", "reviewer_name", "category", "source_format",
        F.year(F.from_unixtime("ts")).cast("int").alias("year"),
    )
    return distinct_lines, cleaned


def clean_products(raw: DataFrame) -> DataFrame:
    """One row per product id, preferring the record with a title and the most details."""
    w = Window.partitionBy("product_id").orderBy(F.length("title").desc(), F.length("description").desc(),
                                                 F.col("price").desc(), F.col("source_file"))
    return (raw.withColumn("_n", F.row_number().over(w)).where("_n = 1")
            .drop("_n", "source_file")
            .withColumns({name: unescape_html_col(F.col(name)) for name in ("title", "brand", "description")}))


def clean(spark: SparkSession, raw_dir: str, out_dir: str, run_id: str) -> dict:
    started = time.time()
    raw_reviews = spark.read.parquet(f"{raw_dir}/reviews")
    raw_products = spark.read.parquet(f"{raw_dir}/products")
    distinct_lines, reviews = clean_reviews(raw_reviews)

    reviews.repartition("category").write.mode("overwrite").partitionBy("category").parquet(f"{out_dir}/reviews")
    clean_products(raw_products).write.mode("overwrite").parquet(f"{out_dir}/products")

    n_raw, n_raw_products = raw_reviews.count(), raw_products.count()
    removed = removed_counts(raw_reviews, distinct_lines, raw_products)
    record = check_and_print(  # written rows as read back from the files
        "clean",
        {"reviews": n_raw, "products": n_raw_products},
        {"reviews": spark.read.parquet(f"{out_dir}/reviews").count(),
         "exact duplicate lines": removed["exact duplicate lines"],
         "repeated user-item pairs": removed["repeated user-item pairs"],
         "products": spark.read.parquet(f"{out_dir}/products").count(),
         "duplicate product records": removed["duplicate product records"]},
    )
    record.update(status="ok", run_id=run_id, seconds=round(time.time() - started, 2), output=out_dir)
    return record


def main(argv: list[str] | None = None) -> int:
    data = get_settings().data_dir
    return run_job("clean", __doc__, argv,
                   lambda spark, args: clean(spark, str(data / "raw"), str(data / "clean"), args.run_id),
                   failures=(Unbalanced,))


if __name__ == "__main__":
    sys.exit(main())
