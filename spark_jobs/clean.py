"""Clean the loaded reviews and products into partitioned Parquet.

Missing numbers were already made 0 and missing strings "" by load; here HTML character references
in the text people read are decoded (review text, summary and reviewer name; product title, brand and
description: ``&#34;`` -> ``"``, ``&amp;quot;`` -> ``"``), text gets an analysable copy (no URLs, no
punctuation, lower case) beside the original the site shows, exact duplicate
lines are dropped, and a (user, item) pair rated more than once keeps only its latest review.
Every dropped row is counted where it is dropped and what was written is counted by reading it
back, so the balance (rows in = rows written + duplicates removed) fails if rows go missing.
Incremental: only the categories whose loaded files changed are cleaned again (see :func:`clean`).

    spark-submit spark_jobs/clean.py [--run-id R] [--force]
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from core.settings import get_settings
from core.spark_schemas import PRODUCT, REVIEW
from spark_jobs import hadoop_fs, units
from spark_jobs.common import run_job
from spark_jobs.reconcile import Unbalanced, check_and_print
from spark_jobs.text_clean import clean_text_col, unescape_html_col


# The version of what clean writes from the same loaded rows, part of every category's fingerprint
# in the clean ledger (units.category_fingerprints). Bump it with a change to clean that changes its
# output (dedup, text cleaning, columns): every category is then cleaned again on the next run, and
# MongoDB reloaded in full (mongo_load's ledger no longer matches the clean one).
CLEAN_VERSION = 1

# Why a row is not written (``_reason`` null: kept). Each is counted where the row is dropped.
EXACT, REPEATED, HELD_PAIR = "exact duplicate lines", "repeated user-item pairs", "pairs another category holds"
DUPLICATE_PRODUCT, HELD_PRODUCT = "duplicate product records", "products another category holds"
REVIEW_REASONS, PRODUCT_REASONS = (EXACT, REPEATED, HELD_PAIR), (DUPLICATE_PRODUCT, HELD_PRODUCT)
_HELPERS = ("_n", "_prev", "_holder", "_reason", "_defers_to")


def tag_reviews(reviews: DataFrame, held_pairs: DataFrame | None = None) -> DataFrame:
    """Every review with ``_reason``, null for the one clean keeps: within a (user, item) ordered
    newest first (ties by line hash, so re-runs agree) the first row is kept, a row equal to the one
    before it (same line hash: the same line) is an exact duplicate, any other an older rating of
    the pair. The latest row of a pair another category already holds (``held_pairs``: user, item,
    category) is dropped too (see :func:`clean`). One shuffle: exact duplicate lines share their
    (user, item) and sort next to each other, so no dropDuplicates pass is needed. ``_defers_to``: the
    category a dropped row gives its pair up to, when it is another one (:func:`with_dependents`)."""
    w = Window.partitionBy("user_id", "product_id").orderBy(F.col("ts").desc(), F.col("line_hash").desc())
    ranked = reviews.withColumns({"_n": F.row_number().over(w), "_prev": F.lag("line_hash").over(w),
                                  "_winner": F.first("category").over(w)})
    ranked = _with_holder(ranked, held_pairs, ["user_id", "product_id"], "category")
    reason = (F.when(F.col("_n") == 1, F.when(F.col("_holder").isNotNull(), HELD_PAIR))
              .when(F.col("line_hash") == F.col("_prev"), EXACT).otherwise(REPEATED))
    return ranked.withColumn("_reason", reason).withColumn("_defers_to", _defers_to("category")).drop("_winner")


def tag_products(raw: DataFrame, held_products: DataFrame | None = None) -> DataFrame:
    """Every product record with ``_reason``: one per product id is kept, preferring the record with
    a title and the most details; a product another category holds (``held_products``: product,
    file_category) is dropped."""
    w = Window.partitionBy("product_id").orderBy(F.length("title").desc(), F.length("description").desc(),
                                                 F.col("price").desc(), F.col("source_file"))
    ranked = raw.withColumns({"_n": F.row_number().over(w), "_winner": F.first("file_category").over(w)})
    ranked = _with_holder(ranked, held_products, ["product_id"], "file_category")
    reason = F.when(F.col("_n") > 1, DUPLICATE_PRODUCT).when(F.col("_holder").isNotNull(), HELD_PRODUCT)
    return ranked.withColumn("_reason", reason).withColumn("_defers_to", _defers_to("file_category")).drop("_winner")


def _defers_to(category: str) -> Column:
    """The other category a dropped row's key stays with: the one that held it before this clean
    (``_holder``), else the one whose row won in this clean (``_winner``). When that category is
    cleaned again, so must this one be, or a key the other gives up then would be lost."""
    holder = F.coalesce(F.col("_holder"), F.col("_winner"))
    return F.when(F.col("_reason").isNotNull() & (holder != F.col(category)), holder)


def _with_holder(df: DataFrame, held: DataFrame | None, keys: list[str], category: str) -> DataFrame:
    """``_holder``: the category already holding the row's key, if another one does."""
    if held is None:
        return df.withColumn("_holder", F.lit(None).cast("string"))
    return df.join(held.select(*keys, F.col(category).alias("_holder")), keys, "left")


def observe_reasons(tagged: DataFrame, observation: Observation, reasons: tuple[str, ...], category: str) -> DataFrame:
    """``tagged`` counting, while the job writes it, the rows of each reason, and collecting the
    (category, category it defers to) pairs of the dropped rows (``_defers_to``): counted directly where rows are dropped, not
    as a difference of counts (which always balances), and without a second pass over the data.
    Nothing shuffles between here and the write, so the metrics are taken in the write's own stage,
    where Spark counts each partition's finished task once: a retried task does not count twice."""
    return tagged.observe(
        observation,
        *[F.count(F.when(F.col("_reason") == r, True)).alias(r) for r in reasons],
        F.to_json(F.collect_set(F.when(F.col("_defers_to").isNotNull(),
                                       F.struct(F.col(category).alias("category"), F.col("_defers_to").alias("_holder")))))
        .alias("deferred"))  # as JSON: Observation.get gives arrays back as Java objects


def latest_per_pair(tagged: DataFrame) -> DataFrame:
    """The rows :func:`tag_reviews` keeps: one review per (user, item), the latest."""
    return tagged.where(F.col("_reason").isNull()).drop(*_HELPERS)


def removed_counts(review_metrics: dict, product_metrics: dict) -> tuple[dict[str, int], dict[str, list[str]]]:
    """The rows clean dropped, by reason, from the metrics :func:`observe_reasons` collected; and
    which categories each category defers to (they hold pairs or products it has): when one of them
    is cleaned again, so is it, or a pair the other gave up would be lost (:func:`with_dependents`)."""
    deferred: dict[str, set[str]] = {}
    for row in [*json.loads(review_metrics["deferred"]), *json.loads(product_metrics["deferred"])]:
        deferred.setdefault(row["category"], set()).add(row["_holder"])
    counts = {r: int(review_metrics[r]) for r in REVIEW_REASONS}
    counts.update({r: int(product_metrics[r]) for r in PRODUCT_REASONS})
    return counts, {c: sorted(h) for c, h in deferred.items()}


def with_dependents(dirty: list[str], deferred: dict[str, list[str]], known: Iterable[str]) -> list[str]:
    """``dirty`` and every category that defers to one of them, transitively.

    A (user, item) pair or product found in two categories stays with the one cleaned first; the
    other defers to it. If the holder is cleaned again (its file changed, perhaps without that
    pair), the deferring category must be cleaned again too, to take the pair back.
    """
    out, known = set(dirty), set(known)
    while more := {c for c, holders in deferred.items() if c in known and c not in out and out & set(holders)}:
        out |= more
    return sorted(out)


@dataclass(frozen=True)
class CleanPlan:
    """What an incremental clean redoes (:func:`clean_plan`), decided from the ledgers alone."""
    fingerprints: dict[str, str]  # every loaded category -> the fingerprint of its loaded files
    dirty: list[str]  # the categories whose partitions are replaced: redone, or removed (``unloaded``)
    unloaded: list[str]  # cleaned before, none of their files loaded now: partitions and ledger entry go
    units: list[str]  # the loaded files (units) to read: those of the ``dirty`` categories

    @property
    def redone(self) -> list[str]:
        """The categories cleaned and written again."""
        return [c for c in self.dirty if c not in self.unloaded]

    @property
    def skipped(self) -> list[str]:
        """The loaded categories left as they are."""
        return sorted(set(self.fingerprints) - set(self.dirty))

    def ledger_after(self, ledger: Mapping[str, Any], deferred: Mapping[str, list[str]]) -> dict[str, Any]:
        """The clean ledger once the ``dirty`` partitions are written: the redone categories with
        their new fingerprints and this clean's ``deferred`` (category -> the categories holding
        keys it has, :func:`removed_counts`), the unloaded ones gone, every other entry kept."""
        kept = {c: fp for c, fp in ledger.get("categories", {}).items() if c not in self.unloaded}
        kept_deferrals = {c: h for c, h in ledger.get("deferred", {}).items() if c not in self.dirty}
        return {**ledger, "categories": {**kept, **{c: self.fingerprints[c] for c in self.redone}},
                "deferred": {**kept_deferrals, **{c: deferred[c] for c in self.dirty if c in deferred}}}


def clean_plan(load_units: dict[str, dict], ledger: Mapping[str, Any], force: bool = False) -> CleanPlan:
    """Which categories a clean redoes, from load's ledger (``load_units``: file name -> entry) and
    clean's own (``ledger``), without reading any data (as mongo_load.load_plan).

    A category is dirty when its fingerprint (its files' checksums, load's and clean's versions:
    units.category_fingerprints) is not the one clean's ledger holds for it, a new category too;
    with ``force``, every one. A category cleaned before whose files are no longer loaded (``load
    --remove``) is dirty too, to be removed. Then every category that deferred to a dirty one
    (:func:`with_dependents`), to take back what that one may give up."""
    fingerprints = units.category_fingerprints(load_units, CLEAN_VERSION)
    done = ledger.get("categories", {})
    unloaded = sorted(set(done) - set(fingerprints))
    changed = sorted(c for c, fp in fingerprints.items() if force or done.get(c) != fp)
    dirty = with_dependents(changed + unloaded, ledger.get("deferred", {}), fingerprints)
    return CleanPlan(fingerprints=fingerprints, dirty=dirty, unloaded=unloaded,
                     units=[name for name, u in load_units.items() if u["category"] in dirty])


def clean_reviews(raw: DataFrame, held_pairs: DataFrame | None = None,
                  observation: Observation | None = None) -> DataFrame:
    """Cleaned latest-per-pair reviews of ``raw``, without the pairs ``held_pairs`` holds; the dropped
    rows counted into ``observation`` (:func:`observe_reasons`) as the result is written."""
    tagged = tag_reviews(raw, held_pairs)
    if observation is not None:
        tagged = observe_reasons(tagged, observation, REVIEW_REASONS, "category")
    latest = latest_per_pair(tagged).withColumns(
        {name: unescape_html_col(F.col(name)) for name in ("review_text", "summary", "reviewer_name")})
    return latest.select(
        "user_id", "product_id", "rating", "ts", "review_text", "summary",
        clean_text_col(F.col("review_text")).alias("text_clean"),
        clean_text_col(F.col("summary")).alias("summary_clean"),
        "helpful_votes", "total_votes", "verified", "reviewer_name", "category", "source_format",
        year_col(F.col("ts")).alias("year"),
    )


_Y1970, _Y2100 = 0, 4_102_444_800  # 1970-01-01, 2100-01-01 (UTC)


def year_col(ts: Column) -> Column:
    """The UTC year of a Unix time in seconds.

    From a timestamp, not from ``from_unixtime``'s text (formatting and parsing a date string per
    row); times outside 1970-2099 keep the text route, which gives null rather than failing where
    the seconds overflow a timestamp.
    """
    return F.when(ts.between(_Y1970, _Y2100 - 1), F.year(F.timestamp_seconds(ts))) \
        .otherwise(F.year(F.from_unixtime(ts))).cast("int")


def clean_products(raw: DataFrame, held_products: DataFrame | None = None,
                   observation: Observation | None = None) -> DataFrame:
    """One row per product id (:func:`tag_products`), the dropped records counted into
    ``observation`` as the result is written. A product filed under several categories makes each of
    them defer to its holder, not only the one whose record would win."""
    tagged = tag_products(raw, held_products)
    if observation is not None:
        tagged = observe_reasons(tagged, observation, PRODUCT_REASONS, "file_category")
    return (tagged.where(F.col("_reason").isNull()).drop(*_HELPERS, "source_file")
            .withColumns({name: unescape_html_col(F.col(name)) for name in ("title", "brand", "description")}))


_REVIEW_COLS = [f.name for f in REVIEW.fields]
_PRODUCT_COLS = [f.name for f in PRODUCT.fields]


def _read_or_none(spark: SparkSession, path: str) -> DataFrame | None:
    return spark.read.parquet(path) if hadoop_fs.exists(spark, path) and hadoop_fs.has_partitions(spark, path) else None


# Written without Parquet dictionaries: the ids and the text are mostly distinct, and building a
# dictionary only to give it up cost clean 317 s against 280 s at 25.8M reviews, where it saved 8%
# of the bytes (docs/benchmarks.md). Load's output showed no such difference, so it keeps them.
PLAIN_COLUMNS = ("user_id", "product_id", "review_text", "summary", "text_clean", "summary_clean", "reviewer_name")


def _write_partitions(spark: SparkSession, df: DataFrame, out: str, column: str, values: list[str],
                      staging: str) -> None:
    """Replace the ``column=value`` partitions of ``out`` for ``values`` (and only those) by ``df``'s."""
    hadoop_fs.write_partitioned(df, staging, column, plain=PLAIN_COLUMNS)
    for value in values:
        part = f"{column}={hadoop_fs.partition_value(value)}"
        hadoop_fs.replace_partition(spark, f"{staging}/{part}", f"{out}/{part}", staging)
    hadoop_fs.delete(spark, staging)


def clean(spark: SparkSession, raw_dir: str, out_dir: str, run_id: str, *, force: bool = False) -> dict:
    """Clean the categories whose loaded files changed since they were last cleaned (all with ``force``).

    Work is per category (its reviews and metadata files): reviews are written to
    ``<out>/reviews/category=<c>`` and products to ``<out>/products/file_category=<c>``, and only the
    categories redone are replaced. Dedup needs the whole category (a pair's ratings and a product's
    records are in its files), and across categories only the keys: a (user, item) pair or product
    another category already holds stays there, and is counted as such here (the same review or
    product filed under two categories would otherwise be loaded twice). Without a load ledger (raw
    folders written by other means) everything is cleaned as one. A category none of whose files is
    loaded any more (``load --remove``) is removed: its partitions and its ledger entry go, and the
    categories that deferred to it are cleaned again to take back what it held.
    """
    started = time.time()
    load_units = units.read_ledger(raw_dir).get("units")
    ledger = units.read_ledger(out_dir)
    raw_reviews = spark.read.parquet(f"{raw_dir}/reviews")
    raw_products = spark.read.parquet(f"{raw_dir}/products")
    if "file_category" not in raw_products.columns:
        raw_products = raw_products.withColumn("file_category", units.category_from_path(F.col("source_file")))
    plan = None if load_units is None else clean_plan(load_units, ledger, force)  # None: no ledgers kept
    if plan is not None and not plan.dirty:
        print("clean: every category is clean already (same loaded files); nothing to do")
        record = check_and_print("clean", {"reviews": 0, "products": 0}, {"reviews": 0, "products": 0})
        record.update(status="ok", run_id=run_id, cleaned=[], skipped=plan.skipped,
                      seconds=round(time.time() - started, 2), output=out_dir)
        return record
    if plan is not None:
        raw_reviews = raw_reviews.where(F.col("unit").isin(plan.units))
        raw_products = raw_products.where(F.col("unit").isin(plan.units))
    raw_reviews = raw_reviews.select(*_REVIEW_COLS)
    raw_products = raw_products.select(*_PRODUCT_COLS, "file_category")
    if plan is None:  # every category the raw folders hold, cleaned as one
        dirty = sorted({r[0] for r in raw_reviews.select("category").union(
            raw_products.select("file_category")).distinct().collect()})
        redone, unloaded = dirty, []
    else:
        dirty, redone, unloaded = plan.dirty, plan.redone, plan.unloaded

    # What the categories not redone hold (keys only): left where they are.
    old_reviews = _read_or_none(spark, f"{out_dir}/reviews")
    old_products = _read_or_none(spark, f"{out_dir}/products")
    held_pairs = (old_reviews.where(~F.col("category").isin(dirty)).select("user_id", "product_id", "category")
                  if old_reviews is not None and plan is not None else None)
    held_products = (old_products.where(~F.col("file_category").isin(dirty)).select("product_id", "file_category")
                     if old_products is not None and plan is not None else None)

    review_metrics, product_metrics = Observation("clean reviews"), Observation("clean products")
    reviews = clean_reviews(raw_reviews, held_pairs, review_metrics)
    products = clean_products(raw_products, held_products, product_metrics)
    if plan is not None:  # before their partitions are replaced (an unloaded one stays until it is gone)
        units.forget(out_dir, ledger, "categories", redone)
    staging = hadoop_fs.staging_dir(spark, out_dir, run_id)
    _write_partitions(spark, reviews, f"{out_dir}/reviews", "category", dirty, f"{staging}/reviews")
    _write_partitions(spark, products, f"{out_dir}/products", "file_category", dirty, f"{staging}/products")
    if not hadoop_fs.has_partitions(spark, f"{out_dir}/products"):  # readable when no category has metadata
        # the partition column lives in the folder name only, as partitionBy writes it (a copy inside
        # the file too makes pyarrow refuse the folder: string vs dictionary)
        spark.createDataFrame([], products.drop("file_category").schema).write.mode("overwrite").parquet(
            f"{out_dir}/products/file_category={hadoop_fs.partition_value((redone or dirty)[0])}")
    hadoop_fs.delete(spark, staging)
    for folder in ("reviews", "products"):  # a DataFrame cached over the old files must not answer for the new
        spark.catalog.refreshByPath(f"{out_dir}/{folder}")

    n_raw, n_raw_products = raw_reviews.count(), raw_products.count()
    removed, deferred = removed_counts(review_metrics.get, product_metrics.get)
    written_reviews = spark.read.parquet(f"{out_dir}/reviews").where(F.col("category").isin(dirty)).count()
    written_products = spark.read.parquet(f"{out_dir}/products").where(F.col("file_category").isin(dirty)).count()
    record = check_and_print(  # written rows as read back from the files
        "clean",
        {"reviews": n_raw, "products": n_raw_products},
        {"reviews": written_reviews, **{r: removed[r] for r in REVIEW_REASONS},
         "products": written_products, **{r: removed[r] for r in PRODUCT_REASONS}},
    )
    if plan is not None:  # only now: a clean killed before this point is redone
        units.write_ledger(out_dir, plan.ledger_after(ledger, deferred))
    record.update(status="ok", run_id=run_id, cleaned=redone, removed=unloaded,
                  skipped=plan.skipped if plan is not None else [],
                  seconds=round(time.time() - started, 2), output=out_dir)
    return record


def main(argv: list[str] | None = None) -> int:
    data = get_settings().data_dir
    return run_job("clean", __doc__, argv,
                   lambda spark, args: clean(spark, str(data / "raw"), str(data / "clean"), args.run_id,
                                             **({"force": True} if args.force else {})),
                   options=lambda parser: parser.add_argument(
                       "--force", action="store_true", help="clean every category again"),
                   failures=(Unbalanced,))


if __name__ == "__main__":
    sys.exit(main())
