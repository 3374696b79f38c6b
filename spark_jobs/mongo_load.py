"""Load the clean reviews and products into MongoDB, in bulk and idempotently.

Each collection is rebuilt as a new generation and switched in by one pointer (core/mongo.py), so a
re-run ends with exactly the same documents (never duplicates), a reader never sees half a load
or a missing collection, and live ratings the workers store while the load runs are written into
the new user histories after the switch. It writes only what is read: the products with their
review aggregates, and the ``_id``-keyed documents the site and workers read on their hot paths
(see core/mongo.py for why): each user's rating history, each product's review pages, the catalog
order per category, and the search index (core/search.py); of the reviews themselves, only the
newest weeks' (the trending fallback). Writes happen from the executors, one client per
partition, so the load scales with the cluster.

Incremental: a category MongoDB already holds (same files) is not written again; see :func:`mongo_load`.

    spark-submit spark_jobs/mongo_load.py [--run-id R] [--force]
"""
from __future__ import annotations

import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Collection, NamedTuple

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import (catalog, catalog_revision, erasure, mongo, popular, rating_history, search, trending,
                  trending_votes)
from core.settings import get_settings
from spark_jobs import units
from spark_jobs.common import of_deleted_users, run_job, without_deleted_users
from spark_jobs.reconcile import Unbalanced

LIVE_CLOCK_MARGIN_S = 60.0  # ratings stored (accounts deleted) this long before the load began are replayed
#                             (erased) too: clock skew, and a deletion in progress when it began
MAX_REVIEW_PAGES = 50  # the site pages through a product's 500 most helpful reviews
# A load's shuffles get one partition per this many clean reviews, at least SPARK_SHUFFLE_PARTITIONS:
# at 51.6M reviews the review pages' window ran out of the 4 GB driver's execution memory with 8
# partitions (6.4M reviews a task) and passed with 200 (docs/benchmarks.md).
REVIEWS_PER_SHUFFLE_PARTITION = 250_000
SEARCH_TEXT_CHARS = 2000


def product_stats(reviews: DataFrame) -> DataFrame:
    """Per-product aggregates the catalog pages and popularity lists need."""
    return reviews.groupBy("product_id").agg(
        F.count("*").alias("n_reviews"),
        F.round(F.avg("rating"), 3).alias("avg_rating"),
        *[F.sum((F.col("rating") == star).cast("long")).alias(f"r{star}") for star in range(1, 6)],
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        # the most helpful non-empty summary (the fallback title of a product without metadata)
        F.max_by("summary", F.struct(F.trim("summary") != "", "helpful_votes", "ts")).alias("sample_summary"),
        F.substring(F.concat_ws(" ", F.slice(F.collect_list("summary_clean"), 1, 50)), 1, SEARCH_TEXT_CHARS)
         .alias("search_text"),
        # the category of its most helpful review (F.first took whichever row came first, so a
        # product reviewed in two category files could move between them from one reload to the next)
        F.max_by("category", F.struct("helpful_votes", "ts", "category")).alias("review_category"),
    )


def fallback_title(where: F.Column, categories: F.Column, category: F.Column, brand: F.Column,
                   summary: F.Column) -> F.Column:
    """:func:`core.catalog.fallback_title` of the rows ``where`` is true (null elsewhere).

    The rule is Python, written once for this job and for an account deletion, which titles a
    product again (core.erasure); it runs here as a pandas UDF, one Arrow batch per call.
    Spark hands a Python function every row whatever condition surrounds it, so the other rows'
    inputs go as nulls: only the products without a title carry their strings to Python.
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def titles(need, paths, cats, brands, summaries):  # pandas Series in, one out
        import pandas as pd

        from core import catalog

        return pd.Series([catalog.fallback_title(p, c, b, s) if n else None
                          for n, p, c, b, s in zip(need, paths, cats, brands, summaries)], dtype=object)

    return titles(where, *(F.when(where, col) for col in (categories, category, brand, summary)))


def product_docs(products: DataFrame, reviews: DataFrame) -> DataFrame:
    """Every product with metadata or reviews, one row shaped like its MongoDB document.

    ``has_metadata`` says whether the product's metadata was loaded; ``title_generated`` that its
    ``title`` is the fallback of :func:`fallback_title` (no metadata, or metadata without a title).
    """
    joined = products.withColumn("_meta", F.lit(True)).join(product_stats(reviews), "product_id", "full_outer")
    empty = F.array().cast("array<string>")
    category = F.coalesce("review_category", "category", F.lit(""))
    categories = F.coalesce("categories", empty)
    title = F.trim(F.coalesce("title", F.lit("")))
    brand = F.coalesce("brand", F.lit(""))
    summary = F.coalesce("sample_summary", F.lit(""))
    return joined.select(
        F.col("product_id").alias("_id"),
        F.coalesce(F.when(title != "", title), fallback_title(title == "", categories, category, brand, summary)
                   ).alias("title"),
        brand.alias("brand"),
        F.coalesce("price", F.lit(0.0)).alias("price"),
        category.alias("category"),
        categories.alias("categories"),
        F.coalesce("description", F.lit("")).alias("description"),
        F.coalesce("image", F.lit("")).alias("image"),
        F.coalesce("also_buy", empty).alias("also_buy"),
        F.coalesce("_meta", F.lit(False)).alias("has_metadata"),
        (title == "").alias("title_generated"),
        F.coalesce("n_reviews", F.lit(0)).alias("n_reviews"),
        F.coalesce("avg_rating", F.lit(0.0)).alias("avg_rating"),
        F.create_map(*[x for s in range(1, 6) for x in (F.lit(str(s)), F.coalesce(f"r{s}", F.lit(0)))])
         .alias("rating_hist"),
        F.coalesce("first_ts", F.lit(0)).alias("first_ts"),
        F.coalesce("last_ts", F.lit(0)).alias("last_ts"),
        summary.alias("sample_summary"),
        F.coalesce("search_text", F.lit("")).alias("search_text"),
    )


def metadata_coverage(products: DataFrame) -> dict[str, int]:
    """How many products the shop can show with their data, and how many with a generated title:
    printed (:func:`report_coverage`) and in the run record of either mode, over every product."""
    row = products.agg(
        F.sum((F.col("n_reviews") > 0).cast("long")).alias("reviewed products"),
        F.sum(((F.col("n_reviews") > 0) & ~F.col("has_metadata")).cast("long")).alias("reviewed products without metadata"),
        F.sum(((F.col("n_reviews") == 0) & F.col("has_metadata")).cast("long")).alias("products with metadata, not reviewed"),
        F.sum(F.col("title_generated").cast("long")).alias("generated titles"),
    ).first()
    return {k: int(v or 0) for k, v in row.asDict().items()}


def report_coverage(products: DataFrame) -> dict[str, int]:
    """:func:`metadata_coverage` of ``products`` (every product's document), printed."""
    coverage = metadata_coverage(products)
    print(f"mongo_load: {coverage['reviewed products']:,} reviewed products, "
          f"{coverage['reviewed products without metadata']:,} of them without metadata; "
          f"{coverage['products with metadata, not reviewed']:,} products with metadata but no reviews; "
          f"{coverage['generated titles']:,} generated (fallback) titles")
    return coverage


def recent_review_docs(reviews: DataFrame) -> DataFrame:
    """The ``recent_reviews`` collection: the reviews of the data's newest weeks, only what the
    batch trending fallback reads (core/popular.py: user, product, rating, time). Every review is
    in its user's history and its product's aggregates, and the text a product page shows is in
    ``product_reviews``; the rest is in the clean Parquet."""
    newest = reviews.agg(F.max("ts")).first()[0]
    recent = reviews.where(F.col("ts") >= (newest or 0) - popular.BATCH_TRENDING_WINDOW_S)
    return recent.select(F.concat_ws("|", "user_id", "product_id").alias("_id"), "user_id", "product_id", "rating", "ts")


def product_weight(product_id: str) -> int:
    """A product's weight in the reviews' checksum (:func:`review_totals`): its id's CRC-32, as
    Spark's ``crc32`` of the UTF-8 string."""
    return zlib.crc32(product_id.encode("utf-8"))


def review_totals(reviews: DataFrame) -> tuple[int, int]:
    """(reviews, their checksum) in one pass: the checksum adds each review's product weight
    (:func:`product_weight`), so it is the products' review counts each times its weight, which
    :func:`reconcile` compares with MongoDB's. A count alone misses a review counted on the wrong
    product, or one lost beside one counted twice. At most 2^32 per review: 233M reviews fit a long."""
    # encoded: crc32 of a string is of its raw bytes, and MongoDB gets (and _held weighs) it as
    # Java decodes it, invalid bytes replaced
    weight = F.crc32(F.encode(F.col("product_id"), "UTF-8"))
    row = reviews.agg(F.count("*").alias("n"), F.sum(weight).alias("sum")).first()
    return int(row["n"]), int(row["sum"] or 0)


def _held(only: Collection[str] = ()) -> tuple[int, int, int, dict[str, int]]:
    """(products, their review counts summed, the counts' checksum, {product: its review count} of
    those in ``only``) as MongoDB holds them, in one read of the products."""
    n, total, checksum, of = 0, 0, 0, {}
    only = set(only)
    # summed here, not by a $group: FerretDB v1 answers 0 for {"$sum": "$n_reviews"}
    for doc in mongo.get_db()[mongo.PRODUCTS].find({}, {"n_reviews": 1}, batch_size=10_000):
        count = int(doc.get("n_reviews") or 0)
        n, total, checksum = n + 1, total + count, checksum + count * product_weight(str(doc["_id"]))
        if doc["_id"] in only:
            of[doc["_id"]] = count
    return n, total, checksum, of


def _reviewed_by(reviews: DataFrame, user_ids: list[str]) -> dict[str, tuple[int, int]]:
    """{product: (its reviews, those of ``user_ids``)} of the products ``user_ids`` reviewed."""
    theirs = F.col("user_id").isin(user_ids)
    products = reviews.where(theirs).select("product_id").distinct()
    rows = (reviews.join(F.broadcast(products), "product_id", "left_semi").groupBy("product_id")
            .agg(F.count("*").alias("n"), F.sum(theirs.cast("long")).alias("theirs")).collect())
    return {r["product_id"]: (int(r["n"]), int(r["theirs"])) for r in rows}


def reconcile(reviews: DataFrame, n_reviews: int, checksum: int, n_products: int, since: float) -> dict[str, int]:
    """Every clean review and product is in MongoDB once: as many product documents as products,
    and their review counts add up to the ``n_reviews`` loaded from ``reviews``, each product's with
    its weight to their ``checksum`` too (:func:`review_totals`: a review lost or loaded twice changes
    the sum; one counted on another product, or lost beside one counted twice, the checksum).

    Except the reviews of accounts deleted since ``since`` (while the load ran), which the load
    read: its eraser, which runs first, recounted their products without them
    (:func:`erase_accounts_deleted_since`), and a deletion since takes those it finds on the pages
    off the counts (core.erasure). So when the sums differ and such accounts exist,
    the products they reviewed are compared one by one: each may fall short by at most those
    accounts' reviews of it, and only that shortfall is "erased by deletions"; every other product
    must still add up exactly (their sum and checksum), so a review lost anywhere else is not
    excused by a deletion. A load nobody's deletion touched reads the products once and does no
    Spark work.
    The deletions are read after the products: one is recorded before its erasure begins
    (core.erasure.record_deleted_user), so every erasure a read saw is there; one recorded
    while the products were read again is read with them on another pass.
    """
    n, total, held_checksum, _ = _held()
    exact = total == n_reviews and held_checksum == checksum
    erased, ids = None, [] if exact else sorted(rating_history.deleted_user_ids(since=since))
    for _attempt in range(3):
        if not ids:
            break
        expected = _reviewed_by(reviews, ids)
        n, total, held_checksum, held = _held(expected)
        short = {p: want - held.get(p, 0) for p, (want, _theirs) in expected.items()}
        others_add_up = (total - sum(held.values()) == n_reviews - sum(want for want, _ in expected.values())
                         and held_checksum - sum(product_weight(p) * c for p, c in held.items())
                         == checksum - sum(product_weight(p) * want for p, (want, _) in expected.items()))
        within = others_add_up and all(0 <= short[p] <= theirs for p, (_want, theirs) in expected.items())
        erased = sum(short.values()) if within else None
        if erased is not None:
            break
        read_since = sorted(rating_history.deleted_user_ids(since=since))
        if read_since == ids:
            break
        ids = read_since  # an account deleted while the products were read: compare with it too
    if n != n_products or (erased is None if ids else not exact):
        raise Unbalanced(f"mongo_load: MongoDB holds {total:,} reviews of {n_reviews:,}"
                         + (" (not on the same products: their checksums differ)"
                            if total == n_reviews and held_checksum != checksum else "")
                         + (f" ({len(ids):,} accounts deleted meanwhile, each excused only its own reviews)" if ids else "")
                         + f" and {n:,} products of {n_products:,}")
    return {"reviews": total, "products": n, **({"reviews_erased_by_deletions": erased} if ids else {})}


# what every collection but the review pages reads of a review
AGGREGATED_COLUMNS = ("user_id", "product_id", "category", "rating", "ts", "helpful_votes", "summary", "summary_clean")

# product_docs columns that only feed the search index built here, never read from MongoDB
_NOT_SERVED = ("search_text", "first_ts", "last_ts")


def _served(products: DataFrame, stamp: int) -> DataFrame:
    """The product documents as stored: without :data:`_NOT_SERVED`, with the load's ``stamp``
    (``core.erasure.LOAD_STAMP``, on their review pages too)."""
    return products.drop(*_NOT_SERVED).withColumn(erasure.LOAD_STAMP, F.lit(stamp).cast("long"))


REVIEW_PAGE_FIELDS = ("user_id", "reviewer_name", "rating", "ts", "summary", "review_text", "verified",
                      "helpful_votes")


def allow_subset_copartitioning(spark: SparkSession) -> None:
    """Let a join reuse its inputs' partitioning on a subset of its keys (Spark < 3.3's behaviour),
    so :func:`review_page_docs` shuffles the reviews' text once instead of twice."""
    spark.conf.set("spark.sql.requireAllClusterKeysForCoPartition", "false")


def review_page_docs(reviews: DataFrame, per_page: int = mongo.REVIEWS_PER_PAGE, stamp: int | None = None) -> DataFrame:
    """A product's reviews in pages of ``per_page``, most helpful then newest first; each page with
    the load's ``stamp`` when given (``core.erasure.LOAD_STAMP``: its product document's).

    Ranked on the keys alone, then the text of the reviews kept is joined back: a window over the
    reviews with their text buffers each product's reviews while the pages are collected, which ran
    out of an 8 GB heap at 51M reviews. Both sides are partitioned by product, so the text is
    shuffled once, for the join and the pages together, in a session that allows it
    (:func:`allow_subset_copartitioning`, which :func:`mongo_load` calls).
    """
    w = Window.partitionBy("product_id").orderBy(F.col("helpful_votes").desc(), F.col("ts").desc(), "user_id")
    ranked = (reviews.select("product_id", "user_id", "helpful_votes", "ts")
              .withColumn("rn", F.row_number().over(w) - 1)
              .withColumn("n", F.count("*").over(Window.partitionBy("product_id")))
              .where(F.col("rn") < MAX_REVIEW_PAGES * per_page)
              .select("product_id", "user_id", "rn", "n"))
    text = reviews.select("product_id", *REVIEW_PAGE_FIELDS).repartition("product_id")
    kept = (text.join(ranked, ["product_id", "user_id"])  # (product, user) is unique in the clean reviews
            .withColumn("page", (F.col("rn") / per_page).cast("int") + 1))
    item = F.struct("rn", *REVIEW_PAGE_FIELDS)
    stamped = [] if stamp is None else [F.lit(stamp).cast("long").alias(erasure.LOAD_STAMP)]
    return (kept.groupBy("product_id", "page")
            .agg(F.sort_array(F.collect_list(item)).alias("items"), F.first("n").alias("n"))
            .select(F.concat_ws(":", "product_id", F.col("page").cast("string")).alias("_id"),
                    F.transform("items", lambda r: r.dropFields("rn")).alias("items"),
                    F.least(F.ceil(F.col("n") / per_page), F.lit(MAX_REVIEW_PAGES)).cast("int").alias("pages"),
                    *stamped))


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


def _words(text):
    """Distinct words of a text column, split and lower-cased the way core.search.words() does."""
    split = F.split(F.lower(F.coalesce(text, F.lit(""))), search.SPARK_SPLIT_REGEX)
    return F.array_distinct(F.filter(split, lambda w: (F.length(w) > 0) & (F.length(w) <= search.MAX_WORD)))


def search_index_docs(products: DataFrame) -> DataFrame:
    """The inverted index search reads (core/search.py): one document per word or prefix.

    Title, brand and category-path words are keyed by every prefix up to ``MAX_PREFIX`` and whole
    (primary tier); review-text words whole (review tier). A fallback title made from a review
    (``title_generated``) is not a title: its words are only in the review tier. Each key keeps
    its best ``MAX_POSTINGS`` products, primary first, then in the catalog's popularity order,
    packed into strings: ids, tiers, global popularity ranks, and each product's category as an index
    into the document's ``cats``.
    """
    # The catalog-wide rank needs one partition: only ids and counts go through it, joined back by
    # id, so the texts, their words and the window by key after them stay spread over the cluster
    # (one partition is "clustered by key" too: Spark would run everything after it in one task).
    rank = products.select(
        "_id", (F.row_number().over(Window.orderBy(F.col("n_reviews").desc(), "_id")) - 1).alias("rank"))
    ranked = products.select(
        "_id", "category",
        # a generated title (no metadata) is a review's words: they rank as review text, not as a title
        F.concat_ws(" ", F.when(~F.col("title_generated"), F.col("title")), "brand", "category",
                    F.concat_ws(" ", "categories")).alias("primary_text"),
        F.col("search_text").alias("review_text"),
    ).join(rank, "_id")
    # Each product's keys once, with its best tier ("1" primary > "0" review): no (key, product) pair
    # to group away, and the postings carry their category and rank, so they shuffle once, by key.
    primary_keys = F.expr(f"array_distinct(flatten(transform(pw, w -> array_union(transform("
                          f"sequence(1, least(length(w), {search.MAX_PREFIX})), i -> substring(w, 1, i)), array(w)))))")
    keyed = (ranked.select("_id", "category", "rank", _words(F.col("primary_text")).alias("pw"),
                           _words(F.col("review_text")).alias("rw"))
             .select("_id", "category", "rank", "rw", primary_keys.alias("pk"))
             .withColumn("rk", F.array_except("rw", "pk")))
    postings = keyed.select("_id", "category", "rank", F.explode(F.concat(
        F.transform("pk", lambda k: F.struct(k.alias("key"), F.lit(search.PRIMARY).alias("tier"))),
        F.transform("rk", lambda k: F.struct(k.alias("key"), F.lit(search.REVIEW).alias("tier"))))).alias("p")
    ).select("_id", "category", "rank", "p.key", "p.tier")
    # Each key's best postings without holding all of a key's: a row_number window filtered on its
    # value becomes Spark's window group limit, which keeps that many per key on each side of the
    # shuffle (up to windowGroupLimitThreshold, raised here). A count over the key's whole window
    # held every posting of a common short prefix (a large share of the catalog) and ran out of
    # mongo_load's 4 GB heap at 51.6M reviews; the count is an aggregate joined back by key.
    products.sparkSession.conf.set("spark.sql.optimizer.windowGroupLimitThreshold",
                                   str(max(search.MAX_POSTINGS, 1000)))  # Spark's default: 1000
    w = Window.partitionBy("key").orderBy(F.col("tier").desc(), "rank")
    kept = (postings.withColumn("rn", F.row_number().over(w)).where(F.col("rn") <= search.MAX_POSTINGS)
            .withColumn("pos", F.col("rn") - 1))
    counts = postings.groupBy("key").agg(F.count("*").alias("n"))
    grouped = kept.groupBy("key").agg(
        F.sort_array(F.collect_list(F.struct("pos", "_id", "tier", "rank", "category"))).alias("p")
    ).join(counts, "key")
    packed = grouped.select(
        F.col("key").alias("_id"), F.col("n").cast("long").alias("n"),
        F.array_join(F.col("p._id"), " ").alias("ids"),
        F.array_join(F.col("p.tier"), "").alias("tiers"),
        F.array_join(F.transform("p.rank", lambda r: r.cast("string")), " ").alias("ranks"),
        F.col("p.category").alias("categories"),
    ).withColumn("cats", F.array_distinct("categories"))
    return packed.select("_id", "n", "ids", "tiers", "ranks", "cats", F.array_join(F.expr(
        "transform(categories, c -> cast(array_position(cats, c) - 1 as string))"), " ").alias("cat"))


LIVE_READ_ROWS = 50_000  # live ratings per executor task that reads them


def _live_reader(uri: str, db_name: str):
    def read(ranges):
        from core import events, mongo as m, rating_history as rh

        ratings = m.get_db(uri, db_name)[m.RATINGS]
        fields = {"user_id": 1, "product_id": 1, "rating": 1, "ts": 1, "action": 1}
        for lo, hi in ranges:
            bounds = {**({"$gte": lo} if lo is not None else {}), **({"$lt": hi} if hi is not None else {})}
            for d in ratings.find({"_id": bounds} if bounds else {}, fields):
                action = d.get("action", events.RATE)
                if action in rh.HISTORY_ACTIONS:
                    yield d["user_id"], d["product_id"], rh.history_rating(action, d["rating"]), float(d["ts"])
    return read


def live_ratings(spark: SparkSession) -> DataFrame:
    """The site's live ratings and removals (user_id, product_id, rating or null, ts), read by the
    executors in ``_id`` ranges: the driver fetches only the ranges' bounds (one ``_id`` each), so
    no user's data passes through it however many live ratings there are. Ranges, not skip/limit
    pages, so that ratings stored meanwhile cannot shift a page over one not yet read.
    """
    settings = get_settings()
    ratings = mongo.get_db()[mongo.RATINGS]
    n = ratings.count_documents({})
    parts = max(1, min(64, n // LIVE_READ_ROWS + 1))
    cuts = [d["_id"] for k in range(1, parts)
            for d in ratings.find({}, {"_id": 1}).sort("_id", 1).skip(k * n // parts).limit(1)]
    bounds = [None, *sorted(set(cuts)), None]
    ranges = list(zip(bounds[:-1], bounds[1:]))
    rows = spark.sparkContext.parallelize(ranges, len(ranges)).mapPartitions(
        _live_reader(settings.mongo_uri, settings.mongo_db))
    # read once, kept on the executors: the load counts its documents, then writes them, and both
    # must see the same snapshot of a collection the workers keep writing to
    return spark.createDataFrame(rows, "user_id string, product_id string, rating double, ts double"
                                 ).localCheckpoint(eager=True)


def user_history_docs(reviews: DataFrame, live: DataFrame, recent_from: float | None = None) -> DataFrame:
    """Each user's ratings [{p: product, r: rating, t: ts}] and removals [{p, t}]: batch reviews
    merged with the ``live`` site ratings (:func:`live_ratings`) of the same users; and ``batch``,
    the products whose rating is a batch review dated ``recent_from`` or later (default: a trending
    window before now), which trending leaves out (``core.rating_history.BATCH``): its votes are
    the live ratings, and no older review can ever fall within its window.

    Live ratings (from Kafka, stored by the workers) are read back so a reload never forgets a
    rating a user made on the site; the later of two ratings of the same product wins, and a
    rating the user removed on the site (a later ``unrate`` event, even of a batch review) stays
    removed: the removal is kept in ``removed`` (``core.rating_history.history_doc``'s shape), as
    the workers keep it, so an older event of the product applied later (a dead letter replayed)
    cannot bring the rating back. Changes of the same time are ordered by
    ``core.rating_history.change_key``, the rule the live writers apply, so a reload keeps what the
    workers kept. "Not interested" lives in its own collection, which a reload leaves alone. Every
    user of ``live`` gets a whole history from it: live ratings of users whose reviews are not in
    ``reviews`` would make a history of their live ratings alone.
    """
    if recent_from is None:
        recent_from = time.time() - trending_votes.WINDOW_S
    both = reviews.select("user_id", "product_id", F.col("rating").cast("double"), F.col("ts").cast("double"),
                          F.lit(True).alias("_batch"))
    # times in seconds with fractions: a rating removed and given again within a second
    both = both.unionByName(live.withColumn("_batch", F.lit(False)))
    latest = both.withColumn("_n", F.row_number().over(  # a live rating wins an exact tie with a review
        Window.partitionBy("user_id", "product_id").orderBy(*rating_history.spark_change_order(), "_batch"))
    ).where("_n = 1")
    rated, t = F.col("rating").isNotNull(), F.col("ts").cast("double").alias("t")
    recent_review = rated & F.col("_batch") & (F.col("ts") >= F.lit(float(recent_from)))
    # arrays of {p, r, t} and {p, t}, not maps keyed by product id: FerretDB refuses keys with "."
    # or "$" (core.rating_history.history_doc is the same shape); collect_list skips the nulls
    return latest.groupBy("user_id").agg(
        F.collect_list(F.when(rated, F.struct(F.col("product_id").alias("p"), F.col("rating").alias("r"), t))
                       ).alias("ratings"),
        F.collect_list(F.when(~rated, F.struct(F.col("product_id").alias("p"), t))).alias("removed"),
        F.collect_list(F.when(recent_review, F.col("product_id"))).alias("_listed"),
    ).select(F.col("user_id").alias("_id"), "ratings", "removed",  # no list of none: null, left out when stored
             F.when(F.size("_listed") > 0, F.col("_listed")).alias(rating_history.BATCH))


# fields a document leaves out when null: a history lists recent batch reviews only when it has one
# (core.rating_history.history_doc; user_history_docs makes an empty list null)
OMITTED_WHEN_NULL = (rating_history.BATCH,)


def _stored(row, absent=None) -> dict:
    """A row as its document: each :data:`OMITTED_WHEN_NULL` field that is null left out, or valued
    ``absent`` when given (an upsert's ``core.mongo.UNSET``: a list stored before is removed)."""
    doc = row.asDict(recursive=True)
    for k in OMITTED_WHEN_NULL:
        if k in doc and doc[k] is None:
            if absent is None:
                del doc[k]
            else:
                doc[k] = absent
    return doc


def _inserter(collection: str, uri: str, db_name: str, acknowledged):
    def insert_partition(rows) -> None:
        from core import mongo as m

        db = m.get_db(uri, db_name)
        acknowledged.add(m.insert_docs(collection, (_stored(row) for row in rows), db=db))
    return insert_partition


def reload_collection(df: DataFrame, collection: str, extra_docs: list[dict] | None = None) -> dict:
    """Rebuild ``collection`` from ``df`` (new generation + switch) and report documents per second.

    ``extra_docs`` (small driver-side documents) go into the same generation, so readers never see
    it without them. The server must acknowledge every row of ``df`` plus the extra documents as
    inserted before readers are switched to it; otherwise the load fails and the old generation
    stays. Acknowledged, not counted back: FerretDB v1 answers a count by reading every document
    (and a count of 670k review pages grew it to 10 GB of RAM); reconcile() reads the products back.
    """
    settings = get_settings()
    started = time.time()
    expected = df.count() + len(extra_docs or [])
    staging = mongo.replace_collection_start(collection)
    partitions = max(2, df.sparkSession.sparkContext.defaultParallelism)
    acknowledged = df.sparkSession.sparkContext.accumulator(0)
    df.repartition(partitions).foreachPartition(_inserter(staging, settings.mongo_uri, settings.mongo_db,
                                                          acknowledged))
    n = acknowledged.value + (mongo.insert_docs(staging, extra_docs) if extra_docs else 0)
    if n != expected:
        raise Unbalanced(f"mongo_load: {collection}: the server acknowledged {n:,} of {expected:,} inserts; "
                         f"the previous {collection} stays")
    mongo.replace_collection_finish(collection, staging=staging)  # refused if another load began since
    seconds = time.time() - started
    rate = n / seconds if seconds else 0.0
    print(f"mongo_load: {collection}: {n:,} documents in {seconds:.1f} s ({rate:,.0f} docs/s)")
    return {"documents": n, "expected": expected, "seconds": round(seconds, 2), "docs_per_s": round(rate, 1)}


INGEST_LEDGER = "ingest_ledger"  # {_id: category, fingerprint, run_id, at}: the categories MongoDB holds


def _upserter(collection: str, uri: str, db_name: str, acknowledged):
    """Each document's fields set by ``_id`` (``core.mongo.set_by_ids``): every field, so the stored
    one equals it (a null field of :data:`OMITTED_WHEN_NULL` is removed), except fields only the live
    side writes (a history's ``removed`` tombstones), which a replacement would drop."""
    def upsert_partition(rows) -> None:
        from core import mongo as m

        db = m.get_db(uri, db_name)
        for batch in m.iter_batches((_stored(row, absent=m.UNSET) for row in rows), 500):
            written = m.set_by_ids(collection, {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in batch},
                                   db=db)
            acknowledged.add(written["matched"] + written["upserted"])
    return upsert_partition


def upsert_collection(df: DataFrame, collection: str) -> dict:
    """Write ``df``'s documents into the live ``collection`` by ``_id`` (replace or insert): idempotent,
    so a load killed half-way and run again ends with each document once."""
    settings = get_settings()
    started = time.time()
    acknowledged = df.sparkSession.sparkContext.accumulator(0)
    expected = df.count()
    partitions = max(2, df.sparkSession.sparkContext.defaultParallelism)
    df.repartition(partitions).foreachPartition(_upserter(collection, settings.mongo_uri, settings.mongo_db,
                                                          acknowledged))
    if acknowledged.value != expected:
        raise Unbalanced(f"mongo_load: {collection}: the server acknowledged {acknowledged.value:,} of "
                         f"{expected:,} upserts")
    seconds = time.time() - started
    rate = expected / seconds if seconds else 0.0
    print(f"mongo_load: {collection}: {expected:,} documents upserted in {seconds:.1f} s ({rate:,.0f} docs/s)")
    return {"documents": expected, "upserted": True, "seconds": round(seconds, 2), "docs_per_s": round(rate, 1)}


def _catalog_extras(products: DataFrame, reviews: DataFrame) -> list[dict]:
    cats = [{"name": r["category"], "n_products": r["count"]}
            for r in products.where("n_reviews > 0").groupBy("category").count().orderBy(F.desc("count")).collect()]
    top_users = [{"user_id": r["user_id"], "n": int(r["count"])} for r in
                 reviews.groupBy("user_id").count().orderBy(F.desc("count"), "user_id").limit(100).collect()]
    return [{"_id": "categories", "items": cats}, {"_id": "top_users", "items": top_users}]


def load_plan(fingerprints: dict[str, str] | None, held: dict[str, str | None], collections_exist: bool,
              force: bool = False) -> tuple[str, list[str], str]:
    """What a load does, with the categories it writes and why: ("skipped", [], ...) when MongoDB
    holds every clean category as the clean folder has it; ("incremental", new categories, ...)
    when it holds them all unchanged and some are new; else ("full", every clean category, ...).

    Only new categories can be upserted: the histories of their users are recomputed from every
    category, but a changed or removed category's old documents would stay. A missing ledger on
    either side (a clean folder written before ledgers, a database loaded before, or emptied) or no
    collections to upsert into means nothing is known of what MongoDB holds: a full reload."""
    clean = fingerprints or {}
    new = sorted(set(clean) - set(held))
    stale = sorted(c for c, fp in held.items() if clean.get(c) != fp)
    if fingerprints is None:
        return "full", sorted(clean), "the clean folder has no ledger"
    if force:
        return "full", sorted(clean), "--force"
    if not held:
        return "full", sorted(clean), "MongoDB's ingest ledger is empty"
    if not collections_exist:
        return "full", sorted(clean), "MongoDB holds no products collection"
    if stale:
        return "full", sorted(clean), f"changed or removed since the last load: {', '.join(stale)}"
    if not new:
        return "skipped", [], "MongoDB holds every clean category already; nothing to do"
    return "incremental", new, f"new categories: {', '.join(new)}"


def shuffle_partitions(n_reviews: int, configured: int) -> int:
    """A load's shuffle partitions: one per REVIEWS_PER_SHUFFLE_PARTITION reviews, never fewer than
    ``configured`` (SPARK_SHUFFLE_PARTITIONS, 8 by default, sized for the demo and for load and
    clean). Each task of the review pages and histories holds its share of every review's keys in
    the sorts and windows that feed their joins, so that share must not grow with the catalog;
    Spark's adaptive execution merges partitions left small."""
    return max(configured, -(-n_reviews // REVIEWS_PER_SHUFFLE_PARTITION))


def size_shuffles(spark: SparkSession, clean_dir: str) -> int:
    """Set the session's shuffle partitions for the clean reviews in ``clean_dir`` (their count is
    read from the Parquet footers); the queries planned after it use them."""
    n_reviews = spark.read.parquet(f"{clean_dir}/reviews").count()
    configured = int(spark.conf.get("spark.sql.shuffle.partitions"))
    partitions = shuffle_partitions(n_reviews, configured)
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    print(f"mongo_load: {partitions} shuffle partitions for {n_reviews:,} clean reviews (configured {configured})")
    return partitions


def mongo_load(spark: SparkSession, clean_dir: str, run_id: str, *, force: bool = False) -> dict:
    """Load the clean data into MongoDB: in full, or only the categories MongoDB does not hold yet.

    The clean ledger says which categories (and which versions of their files) the clean folder
    holds; MongoDB's own ledger (``ingest_ledger``) which ones it holds. Only new categories: their
    reviews, products and review pages, and the histories of their users (recomputed from every
    category, so a user's history stays whole), are upserted by ``_id`` into the live collections;
    the search and catalog indexes rank products across categories, so they are rebuilt (from the
    product aggregates: one document per word and per chunk). A changed or removed category, a
    database without a ledger, a clean folder without one, or ``force``: a full reload as new
    generations. Nothing new: nothing is written. The choice and its reason: :func:`load_plan`.
    """
    started = time.time()
    allow_subset_copartitioning(spark)
    fingerprints = units.read_ledger(clean_dir).get("categories")
    db = mongo.get_db()
    held = {d["_id"]: d.get("fingerprint") for d in db[INGEST_LEDGER].find({})}
    names = db.list_collection_names()
    collections_exist = any(mongo.PRODUCTS in n for n in names)  # the live collection or a generation of it
    mode, new, why = load_plan(fingerprints, held, collections_exist, force)
    print(f"mongo_load: {mode}: {why}")
    if mode == "skipped":
        return {"status": "ok", "run_id": run_id, "mode": "skipped", "categories": [], "reason": why,
                "seconds": round(time.time() - started, 2)}
    size_shuffles(spark, clean_dir)
    # which load wrote the product documents and their review pages (core.erasure.LOAD_STAMP):
    # each call its own (a re-run of a run writes them again), in microseconds, a long in ~38M documents;
    # loads never run at once (the batch lock: spark_jobs.common.batch_lock)
    stamp = time.time_ns() // 1000
    if mode == "incremental":
        record = _load_new_categories(spark, clean_dir, run_id, new, started, stamp)
    else:
        record = _load_full(spark, clean_dir, run_id, started, stamp)
        db[INGEST_LEDGER].delete_many({})
    for c in new:  # only now: a load killed before this point is redone (upserts and reloads are idempotent)
        db[INGEST_LEDGER].replace_one({"_id": c}, {"_id": c, "fingerprint": fingerprints[c], "run_id": run_id,
                                                   "at": time.time()}, upsert=True)
    record["categories"], record["reason"] = new, why
    trending.request_rebuild(db)  # histories replaced, products maybe moved between categories
    return record


# a product document's fields derived from its reviews: what the eraser recounts (product_docs' columns)
RECOUNTED = ("n_reviews", "avg_rating", "rating_hist", "sample_summary", "title", "category")
ERASER_PASSES = 5  # recounts by one eraser, each after a read of deleted_users; one more read must find
#                   no new account with loaded reviews, nor a product listed for a recount (else the load fails)


class DeletionsOutran(RuntimeError):
    """Accounts kept being deleted during the eraser's :data:`ERASER_PASSES` recounts, so a count may
    still include one: the load fails, recorded as failed, and a retry (or ``--force``) loads again."""


def recounts(products: DataFrame, reviews: DataFrame, deleted: list[str], ids: Collection[str]) -> dict[str, dict]:
    """{product: its :data:`RECOUNTED` fields} of the products ``ids``, as :func:`product_docs` makes
    them from ``products`` (metadata) and ``reviews`` without those of the accounts ``deleted``;
    one row per product collected. A product left with neither is missing."""
    if not ids:
        return {}
    wanted = F.broadcast(reviews.sparkSession.createDataFrame([(p,) for p in sorted(ids)], "product_id string"))
    kept = reviews.where(~F.col("user_id").isin(deleted)) if deleted else reviews
    docs = product_docs(products.join(wanted, "product_id", "left_semi"), kept.join(wanted, "product_id", "left_semi"))
    return {r["_id"]: {f: r[f] for f in RECOUNTED} for r in docs.select("_id", *RECOUNTED).collect()}


def _unreviewed(product_id: str) -> dict:
    """The :data:`RECOUNTED` fields of a product left without reviews or metadata (its title, when
    generated, made again without a summary)."""
    fields = {"n_reviews": 0, "avg_rating": 0.0, "rating_hist": {str(s): 0 for s in range(1, 6)}, "sample_summary": ""}
    doc = mongo.get_db()[mongo.PRODUCTS].find_one({"_id": product_id}, {"categories": 1, "category": 1, "brand": 1,
                                                                         "title_generated": 1})
    if doc and doc.get("title_generated"):
        fields["title"] = catalog.fallback_title(doc.get("categories"), doc.get("category"), doc.get("brand"), "")
    return fields


def erase_accounts_deleted_since(since: float, reviews: DataFrame, products: DataFrame, stamp: int) -> int:
    """Erase again every account deleted since ``since`` and recount the products it touched;
    returns how many accounts. Called before :func:`reconcile`, or when the load failed at or after
    its first live write (:func:`erasing_afterwards`); ``reviews`` and ``products`` (metadata) are
    what the load read, ``stamp`` its ``LOAD_STAMP``.

    An account deleted after the load read ``deleted_users`` was erased by the site from what was
    live then, which the load replaced with what it read: ``delete_user_data`` runs again (pages,
    history, search words: the account's loaded summaries say which). A deletion between the load's
    products and pages subtracted by pages the document did not count, maybe twice or not at all
    (core.erasure._pages_older), so the counts are not patched but written anew
    (:func:`recounts`, the load's own code, without every account deleted since ``since``) for
    the products those accounts reviewed and those such a deletion listed in ``mongo.RECOUNTS``,
    under each product's lock, while it is still this load's. Then
    ``deleted_users`` is read again: an account deleted since the last read may have been
    subtracted before that write, which counted it; it is excluded on the next pass. It ends when a
    pass finds no new account with loaded reviews and no listed product (after
    :data:`ERASER_PASSES` recounts, the load fails).

    On a half-written load: only this load's documents are recounted (``write_recount`` writes a
    product only while it carries ``stamp``: a previous generation, or a product not upserted yet,
    keeps its load's counts as the site's deletion corrected them), ``delete_user_data`` takes off
    the pages whatever of the account they hold, and only a product carrying ``stamp`` is listed
    under it, which ``write_recount`` unlists: the passes end as on a whole load.

    A listing says that the product's document of the listing's stamp may count wrong. Other
    loads' listings (their eraser never ran, or gave up) are dropped on each pass once the product
    no longer carries their stamp (rewritten since, or left out by a full load): they say nothing
    of its document. One whose product still carries it is kept, not recounted: this load's
    reviews may not be what that load counted (a full load that failed before its products' switch
    read changed files). Every later load writes the product (a deleted account reviewed it: see
    ``touched`` in :func:`_load_new_categories`), and its eraser drops the listing.
    """
    try:
        return _erase_and_recount(since, reviews, products, stamp)
    finally:  # once, after the recounts and whatever stopped them (delete_user_data's ``bump``); and
        # whatever they did, the load changed the catalog: the site's cached pages are keyed by the
        # model version too, but a load whose model publish rejects keeps it (a category it added
        # was a 404 until the cached list of categories lapsed)
        catalog_revision.bump()


def _erase_and_recount(since: float, reviews: DataFrame, products: DataFrame, stamp: int) -> int:
    """:func:`erase_accounts_deleted_since`'s passes."""
    db = mongo.get_db()
    done: list[str] = []
    recounted = 0
    while True:
        deleted = sorted(rating_history.deleted_user_ids(since=since))
        new = sorted(set(deleted) - set(done))
        indexed: dict[str, dict[str, list[str]]] = {}  # user -> product -> summaries the index was built from
        if new:
            theirs = reviews.where(F.col("user_id").isin(new)).select("user_id", "product_id", "summary_clean")
            for r in theirs.collect():
                indexed.setdefault(r["user_id"], {}).setdefault(r["product_id"], []).append(r["summary_clean"] or "")
        for user_id in new:  # the catalog revision changes once, after the recounts
            erasure.delete_user_data(user_id, indexed=indexed.get(user_id), bump=False)
        done = deleted
        # the products deletions during this load listed for a recount (a listing apart: a mark on
        # the products cost a scan of minutes at millions of them on FerretDB v1, no index used)
        listings = list(db[mongo.RECOUNTS].find({}, {"stamp": 1}))
        listed = {d["_id"] for d in listings if d.get("stamp") == stamp}
        _drop_superseded([d for d in listings if d.get("stamp") != stamp], db)
        affected = listed | {p for of in indexed.values() for p in of}
        if not affected:  # an account deleted meanwhile without loaded reviews changes no count
            return len(done)
        if recounted == ERASER_PASSES:  # the last recount's writes may count an account deleted during it
            raise DeletionsOutran(f"mongo_load: reviewers still deleted after {ERASER_PASSES} recounts of their "
                                  "products; the counts may include one: run the load again (with --force)")
        fields = recounts(products, reviews, deleted, affected)
        for pid in sorted(affected):
            erasure.write_recount(pid, fields.get(pid) or _unreviewed(pid), stamp, db=db)
        recounted += 1


def _drop_superseded(listings: list[dict], db) -> None:
    """Delete the ``listings`` (other loads' ``mongo.RECOUNTS`` rows) whose product no longer
    carries the listing's stamp, each only while it is the same (a deletion may list the product
    again meanwhile)."""
    if not listings:
        return
    held = mongo.find_by_ids(mongo.PRODUCTS, [d["_id"] for d in listings], {erasure.LOAD_STAMP: 1}, db=db)
    for d in listings:
        if (held.get(d["_id"]) or {}).get(erasure.LOAD_STAMP) != d.get("stamp"):
            db[mongo.RECOUNTS].delete_one({"_id": d["_id"], "stamp": d.get("stamp")})


@contextmanager
def erasing_afterwards(record: dict, erase: Callable[[], int]) -> Iterator[None]:
    """Run the block, then ``erase()`` (the eraser: :func:`erase_accounts_deleted_since`) even if the
    block failed: the block holds the load's first live write, so some of its documents may be live
    (products counting an account deleted meanwhile); ``record["deleted_accounts_erased"]`` is what
    it returns, printed instead when the block failed (the load's record is not written then).

    The first error wins: when the block failed, its exception is raised (so the job's exit and
    traceback say what failed first) and an eraser's failure then is only printed with its
    traceback and noted on it; the eraser's failure alone fails the load. (A ``finally`` raised the
    eraser's instead, the load's own left in its chained context.)
    """
    try:
        yield
    except BaseException as failure:
        try:
            erased = erase()
            print(f"mongo_load: the eraser erased {erased:,} accounts deleted during the load, after the load's "
                  "own failure (raised below)", file=sys.stderr)
        except Exception as erasing:
            print("mongo_load: the eraser failed too, after the load's own failure (raised below):", file=sys.stderr)
            traceback.print_exception(erasing, chain=False)  # the load's own: printed as the job exits
            failure.add_note(f"mongo_load: the eraser failed too (its traceback printed before): {erasing!r}")
        raise
    record["deleted_accounts_erased"] = erase()


@dataclass(frozen=True)
class _Source:
    """What a load writes its collections from (:data:`COLLECTIONS`)."""
    reviews: DataFrame  # the clean reviews loaded, less deleted accounts' (AGGREGATED_COLUMNS at least)
    with_text: DataFrame  # the same with their text: the review pages show it
    products: DataFrame  # every product's document (product_docs): the indexes rank them all
    stamp: int  # the load's core.erasure.LOAD_STAMP
    # An incremental load's new categories: the products whose documents and pages change (product_id)
    # and the users whose histories do (user_id); None for a full load (every product and user).
    touched: DataFrame | None = None
    users: DataFrame | None = None


def _only(df: DataFrame, keys: DataFrame | None, column: str) -> DataFrame:
    """The rows of ``df`` whose ``column`` is one of ``keys`` (one column), all of them when None."""
    return df if keys is None else df.join(keys.toDF(column), column, "left_semi")


class _Written(NamedTuple):
    """One collection a load writes (:data:`COLLECTIONS`)."""
    name: str
    # True: an incremental load upserts the documents of its new categories (products, users) into
    # the live collection; False: every load rebuilds it whole, as its documents rank or span
    # every category
    upserted: bool
    docs: Callable[[_Source], DataFrame]
    extra_docs: Callable[[_Source], list[dict]] | None = None  # small driver-side documents (reload_collection)


# The collections a load writes, in the order it writes them: the products first (from their switch
# on, what is written is live: erasing_afterwards). Both modes iterate this (:func:`_write_collections`).
COLLECTIONS = (
    _Written(mongo.PRODUCTS, True, lambda s: _served(_only(s.products, s.touched, "_id"), s.stamp)),
    _Written(mongo.RECENT_REVIEWS, False, lambda s: recent_review_docs(s.reviews)),
    _Written(mongo.PRODUCT_REVIEWS, True,
             lambda s: review_page_docs(_only(s.with_text, s.touched, "product_id"), stamp=s.stamp)),
    # an incremental load, only the new categories' users: another user's history upserted from this
    # would hold their live ratings without their reviews
    _Written(mongo.USER_HISTORY, True, lambda s: user_history_docs(
        _only(s.reviews, s.users, "user_id"), _only(live_ratings(s.reviews.sparkSession), s.users, "user_id"))),
    _Written(mongo.SEARCH_INDEX, False, lambda s: search_index_docs(s.products)),
    _Written(mongo.CATALOG_INDEX, False, lambda s: catalog_index_docs(s.products),
             extra_docs=lambda s: _catalog_extras(s.products, s.reviews)),
)


def _write_collections(source: _Source) -> dict[str, dict]:
    """Write every collection of :data:`COLLECTIONS`, in order; what each write reports, by name. A
    full load (``source.touched`` None) rebuilds each as a new generation (reload_collection); an
    incremental one upserts the ``upserted`` ones into the live collections (upsert_collection)."""
    out = {}
    for written in COLLECTIONS:
        docs = written.docs(source)
        if written.upserted and source.touched is not None:
            out[written.name] = upsert_collection(docs, written.name)
        elif written.extra_docs is not None:
            out[written.name] = reload_collection(docs, written.name, extra_docs=written.extra_docs(source))
        else:
            out[written.name] = reload_collection(docs, written.name)
    return out


def _after_writes(out: dict[str, dict], live_since: float, retire: tuple[str, ...] = ()) -> None:
    """The steps after a load's writes: the indexes, the collections ``retire`` names and the old
    generations dropped once every process reads the new ones (the grace period), then the live
    ratings stored since ``live_since`` written again into the histories (a full load's new ones
    lack them; an incremental load's upsert overwrote those stored after its read)."""
    with _timed("indexes, old generations dropped, live ratings replayed"):
        mongo.ensure_indexes()
        for name in retire:
            mongo.retire_collection(name)
        mongo.drop_retired(wait=True)
        out[mongo.USER_HISTORY]["live_ratings_replayed"] = rating_history.reapply_live_ratings(live_since)


def _load_new_categories(spark: SparkSession, clean_dir: str, run_id: str, new: list[str], started: float,
                         stamp: int) -> dict:
    clean_reviews = spark.read.parquet(f"{clean_dir}/reviews")
    all_reviews, n_deleted = without_deleted_users(clean_reviews)
    all_products = spark.read.parquet(f"{clean_dir}/products")
    # the new categories' review keys: what is touched, and how many (their text is not needed here)
    fresh = all_reviews.where(F.col("category").isin(new)).select("user_id", "product_id").cache()
    fresh_meta = all_products.where(F.col("file_category").isin(new))
    touched = fresh.select("product_id").union(fresh_meta.select("product_id"))
    if n_deleted:  # the products a deleted reviewer had reviewed: their counts and pages change
        touched = touched.union(of_deleted_users(clean_reviews).select("product_id"))
    touched = touched.distinct()
    users = fresh.select("user_id").distinct()
    # every product's aggregates (the indexes rank all of them); the upserted ones are the touched
    products = product_docs(all_products, all_reviews).cache()
    coverage = report_coverage(products)  # of the whole catalog after this load, as a full load's
    # The accounts deleted meanwhile are erased again and their products recounted, even if a write
    # fails: from the products' upsert on, what is written is live (erasing_afterwards); then
    # reconciliation over the whole database: every clean review and product is there once, less
    # the reviews of accounts deleted meanwhile.
    erased: dict = {}  # the eraser's count, for the histories' record
    with erasing_afterwards(erased, lambda: erase_accounts_deleted_since(
            started - LIVE_CLOCK_MARGIN_S, all_reviews, all_products, stamp)):
        out = _write_collections(_Source(reviews=all_reviews, with_text=all_reviews, products=products, stamp=stamp,
                                         touched=touched, users=users))
        _after_writes(out, started - LIVE_CLOCK_MARGIN_S)
    out[mongo.USER_HISTORY].update(erased)
    (n_reviews, checksum), n_products = review_totals(all_reviews), products.count()
    held = reconcile(all_reviews, n_reviews, checksum, n_products, started - LIVE_CLOCK_MARGIN_S)
    n_fresh = fresh.count()
    fresh.unpersist()
    products.unpersist()
    return {"status": "ok", "run_id": run_id, "mode": "incremental", "collections": out,
            "counts_in": {"reviews": n_reviews, "products": n_products, "new reviews": n_fresh}, "held": held,
            "metadata": coverage, "deleted_users_left_out": n_deleted, "seconds": round(time.time() - started, 2)}


@contextmanager
def _timed(what: str) -> Iterator[None]:
    """Print how long ``what`` took: the steps of a load besides its collections' writes (which
    print their own rates), so a slower load says where."""
    began = time.time()
    yield
    print(f"mongo_load: {what} in {time.time() - began:.1f} s")


def _load_full(spark: SparkSession, clean_dir: str, run_id: str, started: float, stamp: int) -> dict:
    live_since = started - LIVE_CLOCK_MARGIN_S  # before user_history_docs reads the live ratings
    with _timed("reviews and products read, cached and counted"):
        # deleted accounts' reviews (a linked reviewer's) are not loaded again
        clean_reviews = spark.read.parquet(f"{clean_dir}/reviews")
        with_text, n_deleted = without_deleted_users(clean_reviews)
        # cached without the reviews' text (most of their bytes): only the pages show it, read once
        reviews = with_text.select(*AGGREGATED_COLUMNS).cache()
        metadata = spark.read.parquet(f"{clean_dir}/products")
        products = product_docs(metadata, reviews).cache()
        (n_reviews, checksum), n_products = review_totals(reviews), products.count()
    coverage = report_coverage(products)
    # the accounts deleted meanwhile, even if a write fails: each generation is live from its switch
    # on, the products' first (erasing_afterwards)
    erased: dict = {}  # the eraser's count, for the histories' record

    def erase() -> int:
        with _timed("eraser"):
            return erase_accounts_deleted_since(live_since, reviews, metadata, stamp)

    with erasing_afterwards(erased, erase):
        out = _write_collections(_Source(reviews=reviews, with_text=with_text, products=products, stamp=stamp))
        _after_writes(out, live_since, retire=(mongo.LEGACY_REVIEWS,))
    out[mongo.USER_HISTORY].update(erased)
    # Reconciliation: the server acknowledged every document written (reload_collection), and every
    # clean review and product is in MongoDB, no more, no fewer (less the reviews of accounts deleted
    # meanwhile, which the eraser recounted without: reconcile).
    with _timed("reconciled"):
        held = reconcile(reviews, n_reviews, checksum, n_products, live_since)
    reviews.unpersist()
    products.unpersist()
    return {"status": "ok", "run_id": run_id, "mode": "full", "collections": out, "counts_in": {
        "reviews": n_reviews, "products": n_products}, "held": held, "metadata": coverage, "deleted_users_left_out": n_deleted,
        "reviews_of_deleted_users": (clean_reviews.count() - n_reviews) if n_deleted else 0,
        "seconds": round(time.time() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    return run_job("mongo_load", __doc__, argv,
                   lambda spark, args: mongo_load(spark, str(get_settings().data_dir / "clean"), args.run_id,
                                                  **({"force": True} if args.force else {})),
                   options=lambda parser: parser.add_argument(
                       "--force", action="store_true", help="reload everything, even categories MongoDB holds"),
                   failures=(Unbalanced, DeletionsOutran))


if __name__ == "__main__":
    sys.exit(main())
