"""Clean the loaded reviews and products into partitioned Parquet.

Missing numbers were already made 0 and missing strings "" by load; here text gets an analysable
copy (no URLs, no punctuation, lower case) beside the original the site shows, exact duplicate
lines are dropped, and a (user, item) pair rated more than once keeps only its latest review.
Every dropped row is counted: rows in = rows out + duplicates removed.

    spark-submit spark_jobs/clean.py [--run-id R]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.settings import get_settings
from spark_jobs.common import run_job
from spark_jobs.reconcile import Unbalanced, check_and_print
from spark_jobs.text_clean import clean_text_col


def latest_per_pair(reviews: DataFrame) -> DataFrame:
    """One review per (user, item): the latest; ties broken by line hash so re-runs agree."""
    w = Window.partitionBy("user_id", "product_id").orderBy(F.col("ts").desc(), F.col("line_hash").desc())
    return reviews.withColumn("_n", F.row_number().over(w)).where("_n = 1").drop("_n")


def clean_reviews(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(distinct lines, cleaned latest-per-pair reviews)."""
    distinct_lines = raw.dropDuplicates(["line_hash"])
    cleaned = latest_per_pair(distinct_lines).select(
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
            .drop("_n", "source_file"))


def clean(spark: SparkSession, raw_dir: str, out_dir: str, run_id: str) -> dict:
    started = time.time()
    raw_reviews = spark.read.parquet(f"{raw_dir}/reviews")
    raw_products = spark.read.parquet(f"{raw_dir}/products")
    distinct_lines, reviews = clean_reviews(raw_reviews)

    reviews.repartition("category").write.mode("overwrite").partitionBy("category").parquet(f"{out_dir}/reviews")
    clean_products(raw_products).write.mode("overwrite").parquet(f"{out_dir}/products")

    n_raw, n_distinct = raw_reviews.count(), distinct_lines.count()
    n_out = spark.read.parquet(f"{out_dir}/reviews").count()
    n_raw_products = raw_products.count()
    n_products = spark.read.parquet(f"{out_dir}/products").count()
    record = check_and_print(
        "clean",
        {"reviews": n_raw, "products": n_raw_products},
        {"reviews": n_out, "exact duplicate lines": n_raw - n_distinct,
         "repeated user-item pairs": n_distinct - n_out,
         "products": n_products, "duplicate product records": n_raw_products - n_products},
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
