"""Load Amazon review and metadata files (2014, 2018, 2023 formats; JSON lines, gzipped or not).

Every input line lands in exactly one output: typed reviews, typed products, or the quarantine
with the reason it could not be used. The job fails unless lines in = rows out + rows quarantined.
The 2014 metadata as Amazon published it (one Python dict literal per line, not JSON) is read
too: such lines are converted to JSON with ``ast.literal_eval`` (core/py_literal.py) first.

    spark-submit spark_jobs/load.py --input 'data/*.jsonl.gz' [--input more.json] [--run-id R]
"""
from __future__ import annotations

import sys
import time

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from core import py_literal
from core.settings import get_settings
from core.spark_schemas import RAW_LINE
from spark_jobs.common import run_job
from spark_jobs.reconcile import Unbalanced, check_and_print

_CORRUPT = "_corrupt"
_NUM = r"^\s*-?\d+(\.\d+)?\s*$"


def category_from_path(col: F.Column) -> F.Column:
    """'.../amazon2018_meta_gift_cards.jsonl.gz' -> 'Gift Cards' (the file names carry the category)."""
    base = F.regexp_extract(col, r"([^/]+)$", 1)
    base = F.regexp_replace(base, r"(\.jsonl?|\.json)?(\.gz)?$", "")
    base = F.regexp_replace(base, r"^(amazon\d{4}_)?(reviews_|meta_)?", "")
    base = F.regexp_replace(base, r"(?i)(_5)?(_PARTIAL|_FIRST\d+)?(_raw)?$", "")
    return F.initcap(F.regexp_replace(base, "_", " "))


def _long(col: F.Column) -> F.Column:
    """A count as a long: '1,234' -> 1234, missing or garbage -> 0 (numbers default to 0)."""
    digits = F.regexp_replace(F.coalesce(col, F.lit("")), ",", "")
    return F.when(digits.rlike(r"^\s*\d+(\.0+)?\s*$"), digits.cast("double").cast("long")).otherwise(F.lit(0))


def _str(col: F.Column) -> F.Column:
    return F.coalesce(col, F.lit(""))


def _bool(col: F.Column) -> F.Column:
    return F.coalesce(F.lower(col) == "true", F.lit(False))


# The function lives in core, which spark_jobs.common ships to the Python workers.
_python_dict_to_json = F.udf(py_literal.python_dict_to_json,
                             StructType([StructField("json", StringType()), StructField("error", StringType())]))


def with_json_lines(lines: DataFrame) -> DataFrame:
    """Add ``json_line`` (what gets parsed) and ``literal_error`` (why a Python literal is unusable).

    Only the lines that start like a Python dict (``{'``, which no JSON object does) are converted;
    every other line hands the Python worker a null instead of its text (Spark runs a Python UDF
    on every row even inside ``when``), so JSON files cost next to nothing extra and are read once.
    """
    is_py = F.coalesce(F.col("raw_line").rlike(py_literal.PYTHON_DICT_START), F.lit(False))
    converted = _python_dict_to_json(F.when(is_py, F.col("raw_line")))
    return lines.withColumn("_py", converted).select(
        *lines.columns, F.when(is_py, F.col("_py.json")).otherwise(F.col("raw_line")).alias("json_line"),
        F.when(is_py, F.col("_py.error")).alias("literal_error"))


def classify(lines: DataFrame) -> DataFrame:
    """Parse each raw line and decide its kind (review / product / quarantine) and reason."""
    if "json_line" not in lines.columns:
        lines = with_json_lines(lines)
    # A new StructType: ``StructType.add`` mutates in place, and a second call would add the column twice.
    schema = StructType([*RAW_LINE.fields, StructField(_CORRUPT, StringType())])
    parsed = lines.withColumn("j", F.from_json("json_line", schema,
                                               {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}))
    j = lambda name: F.col(f"j.{name}")  # noqa: E731
    src = F.coalesce(F.col("json_line"), F.lit(""))
    is_json_object = F.trim(src).startswith("{") & F.get_json_object(src, "$").isNotNull()
    is_review = (j("reviewerID").isNotNull() | j("overall").isNotNull() | j("unixReviewTime").isNotNull()
                 | j("reviewText").isNotNull() | j("user_id").isNotNull() | j("rating").isNotNull()
                 | j("timestamp").isNotNull())
    fmt = (F.when(j("user_id").isNotNull() | j("rating").isNotNull() | j("timestamp").isNotNull(), "2023")
           .when(j("helpful").isNotNull(), "2014").otherwise("2018"))
    user = F.coalesce(j("reviewerID"), j("user_id"))
    item = F.when(fmt == "2023", F.coalesce(j("parent_asin"), j("asin"))).otherwise(j("asin"))
    rating_raw = F.coalesce(j("overall"), j("rating"))
    rating = rating_raw.cast("double")
    reason = (
        F.when(F.length(F.trim("raw_line")) == 0, "empty line")
        .when(F.col("literal_error").isNotNull(), F.col("literal_error"))
        .when(~is_json_object & j(_CORRUPT).isNotNull() & F.get_json_object(src, "$").isNull(), "bad JSON")
        .when(~is_json_object, "not a JSON object")
        .when(j(_CORRUPT).isNotNull(), "unexpected field shape")
        .when(is_review & (F.trim(_str(user)) == ""), "missing user")
        .when(is_review & (F.trim(_str(item)) == ""), "missing item")
        .when(is_review & rating_raw.isNull(), "missing rating")
        .when(is_review & (~rating_raw.rlike(_NUM)), "rating not a number")
        .when(is_review & ((rating < 1) | (rating > 5)), "rating out of range")
        .when(~is_review & (F.trim(_str(F.coalesce(j("parent_asin"), j("asin")))) == ""), "missing item")
    )
    kind = F.when(reason.isNotNull(), "quarantine").when(is_review, "review").otherwise("product")
    return parsed.select("raw_line", "source_file", "j", kind.alias("kind"), reason.alias("reason"),
                         fmt.alias("fmt"), user.alias("_user"), item.alias("_item"), rating.alias("_rating"))


def to_reviews(classified: DataFrame) -> DataFrame:
    j = lambda name: F.col(f"j.{name}")  # noqa: E731
    fmt = F.col("fmt")
    unix = F.when(j("unixReviewTime").rlike(_NUM), j("unixReviewTime").cast("double").cast("long"))
    from_date = F.unix_timestamp(F.regexp_replace(j("reviewTime"), r"\s+", " "), "MM d, yyyy")
    ts_2023 = F.when(j("timestamp").rlike(_NUM), j("timestamp").cast("double"))
    # 2023 timestamps are milliseconds; a seconds value there (< 1e11) is taken as seconds.
    ts = F.when(fmt == "2023", F.when(ts_2023 >= 1e11, ts_2023 / 1000).otherwise(ts_2023).cast("long")) \
          .otherwise(F.coalesce(unix, from_date))
    helpful_up = F.when(fmt == "2014", _long(j("helpful")[0])) \
                  .when(fmt == "2018", _long(j("vote"))).otherwise(_long(j("helpful_vote")))
    total = F.when(fmt == "2014", _long(j("helpful")[1])).otherwise(helpful_up)
    return classified.where(F.col("kind") == "review").select(
        F.trim("_user").alias("user_id"),
        F.trim("_item").alias("product_id"),
        F.col("_rating").alias("rating"),
        F.coalesce(ts, F.lit(0)).cast("long").alias("ts"),
        _str(F.when(fmt == "2023", j("text")).otherwise(j("reviewText"))).alias("review_text"),
        _str(F.when(fmt == "2023", j("title")).otherwise(j("summary"))).alias("summary"),
        helpful_up.alias("helpful_votes"),
        total.alias("total_votes"),
        _bool(F.coalesce(j("verified"), j("verified_purchase"))).alias("verified"),
        _str(j("reviewerName")).alias("reviewer_name"),
        category_from_path(F.col("source_file")).alias("category"),
        fmt.alias("source_format"),
        F.col("source_file"),
        F.sha2(F.col("raw_line"), 256).alias("line_hash"),
    )


def _json_list_text(col: F.Column) -> F.Column:
    """A JSON list read as text ('["a", "b"]') -> 'a b'; plain strings pass through."""
    return F.trim(F.regexp_replace(_str(col), r'^\s*\[\s*"?|"?\s*\]\s*$|"\s*,\s*"', " "))


_STRINGS = ArrayType(StringType())


def _nonempty(arr: F.Column) -> F.Column:
    return F.when(F.size(arr) > 0, arr)


def _json_array(col: F.Column, schema=_STRINGS) -> F.Column:
    """A JSON list held as text ('["a", "b"]') as an array; anything else -> null."""
    return F.when(F.trim(col).startswith("["), F.from_json(col, schema))


def _url(col: F.Column) -> F.Column:
    return F.when(F.trim(col).rlike(r"^https?://\S+$"), F.trim(col))


def category_path(j, file_category: F.Column) -> F.Column:
    """The product's category path, department first.

    2018: ``category`` (a list); 2023: ``categories`` (a list); 2014: ``categories``, a list of
    paths, of which the one in the file's own department is taken (else the first): a Digital
    Music album is also filed under "CDs & Vinyl". Markup fragments and repeats are dropped.
    """
    text = j("categories")
    paths_2014 = F.when(F.trim(text).rlike(r"^\[\s*\["), F.from_json(text, ArrayType(_STRINGS)))
    own = F.filter(paths_2014, lambda path: path[0] == file_category)
    path_2014 = F.coalesce(F.element_at(own, 1), F.element_at(paths_2014, 1))
    flat = F.when(~F.trim(text).rlike(r"^\[\s*\["), _json_array(text))
    path = F.coalesce(_nonempty(j("category")), _nonempty(path_2014), _nonempty(flat), F.array().cast(_STRINGS))
    return F.array_distinct(F.filter(F.transform(path, F.trim), lambda c: (c != "") & ~c.contains("<")))


def image_url(j) -> F.Column:
    """The first product image: 2014 ``imUrl``, 2018 ``image`` or ``imageURLHighRes``/``imageURL`` (lists),
    2023 ``images`` (dicts)."""
    single = F.coalesce(j("imUrl"), j("image"), j("imageURLHighRes"), j("imageURL"))
    first = F.coalesce(F.element_at(_json_array(single), 1), single)
    images_2023 = F.element_at(_json_array(j("images"), ArrayType(MapType(StringType(), StringType()))), 1)
    return F.coalesce(_url(first), _url(images_2023["large"]), _url(images_2023["hi_res"]),
                      _url(images_2023["thumb"]), F.lit(""))


def also_bought(j) -> F.Column:
    """Products bought with this one: 2018 ``also_buy``, 2014 ``related.also_bought``, 2023 ``bought_together``."""
    related_2014 = _json_array(F.get_json_object(j("related"), "$.also_bought"))
    return F.coalesce(_nonempty(j("also_buy")), _nonempty(related_2014), _nonempty(_json_array(j("bought_together"))),
                      F.array().cast(_STRINGS))


def to_products(classified: DataFrame) -> DataFrame:
    j = lambda name: F.col(f"j.{name}")  # noqa: E731
    price_num = F.regexp_extract(F.regexp_replace(_str(j("price")), ",", ""), r"(\d+(\.\d+)?)", 1)
    main = F.coalesce(j("main_category"), j("main_cat"))
    file_category = category_from_path(F.col("source_file"))
    return classified.where(F.col("kind") == "product").select(
        F.trim(F.coalesce(j("parent_asin"), j("asin"))).alias("product_id"),
        _str(j("title")).alias("title"),
        _str(F.coalesce(j("brand"), j("store"))).alias("brand"),
        F.when(price_num != "", price_num.cast("double")).otherwise(F.lit(0.0)).alias("price"),
        F.when(main.isNotNull() & ~main.contains("<") & (F.trim(main) != ""), main)
         .otherwise(file_category).alias("category"),
        category_path(j, file_category).alias("categories"),
        _json_list_text(j("description")).alias("description"),
        image_url(j).alias("image"),
        also_bought(j).alias("also_buy"),
        F.col("source_file"),
    )


def load(spark: SparkSession, inputs: list[str], out_dir: str, run_id: str) -> dict:
    """Read ``inputs`` (files or globs), write raw reviews/products/quarantine Parquet under ``out_dir``."""
    started = time.time()
    lines = spark.read.text(inputs).select(F.col("value").alias("raw_line"),
                                           F.input_file_name().alias("source_file"))
    # Parsed once, read four times (counts and three outputs). On disk, not in memory: a gzip file
    # is one partition (not splittable), and unrolling a 1.25M-line file's parsed rows in memory
    # ran the 4 GB driver out of heap at 10M synthetic lines in 8 files; DISK_ONLY streams.
    classified = classify(lines).persist(StorageLevel.DISK_ONLY)
    by_kind = {(r["kind"], r["reason"]): r["count"]
               for r in classified.groupBy("kind", "reason").count().collect()}
    lines_in = sum(by_kind.values())

    to_reviews(classified).write.mode("overwrite").parquet(f"{out_dir}/reviews")
    to_products(classified).write.mode("overwrite").parquet(f"{out_dir}/products")
    (classified.where(F.col("kind") == "quarantine")
     .select("reason", "source_file", F.substring("raw_line", 1, 10_000).alias("raw_line"))
     .write.mode("overwrite").parquet(f"{out_dir}/quarantine"))
    classified.unpersist()

    # Count what actually reached disk, not what we meant to write.
    written = {name: spark.read.parquet(f"{out_dir}/{name}").count()
               for name in ("reviews", "products", "quarantine")}
    reasons = {reason: n for (kind, reason), n in sorted(by_kind.items(), key=lambda kv: -kv[1]) if reason}
    record = check_and_print("load", {"lines": lines_in}, {
        "reviews": written["reviews"], "products": written["products"], "quarantined": written["quarantine"]})
    record.update(status="ok", run_id=run_id, inputs=inputs, quarantine_reasons=reasons,
                  seconds=round(time.time() - started, 2), output=out_dir)
    for reason, n in reasons.items():
        print(f"  quarantined  {reason:<28}{n:>12,}")
    return record


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    return run_job(
        "load", __doc__, argv,
        lambda spark, args: load(spark, args.input or [settings.demo_input], str(settings.data_dir / "raw"),
                                 args.run_id),
        options=lambda parser: parser.add_argument(
            "--input", action="append", help="file or glob; repeatable (default: the demo file)"),
        failures=(Unbalanced,))


if __name__ == "__main__":
    sys.exit(main())
