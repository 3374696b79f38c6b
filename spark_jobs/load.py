"""Load Amazon review and metadata files (2014, 2018, 2023 formats; JSON lines, gzipped or not).

Every input line lands in exactly one output: typed reviews, typed products, or the quarantine
with the reason it could not be used. The job fails unless lines in = rows out + rows quarantined.
The 2014 metadata as Amazon published it (one Python dict literal per line, not JSON) is read
too: such lines are converted to JSON with ``ast.literal_eval`` (core/py_literal.py) first.

    spark-submit spark_jobs/load.py --input 'data/*.jsonl.gz' [--input more.json] [--run-id R] [--force]
        [--remove FILE_NAME ...]

One input file is one unit (spark_jobs/units.py): a file already loaded with the same checksum is
skipped, and each loaded file replaces only its own partitions (``raw/<kind>/unit=<file name>``).
``--remove`` takes a loaded file out (its partitions and its ledger entry): clean then redoes or
drops its category, and mongo_load reloads. Without ``--input`` a run loads the demo files
(DEMO_INPUT), unless it removes files: then it loads nothing (core.inputs.input_patterns).
"""
from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from functools import reduce

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from core import py_literal, storage
from core.events import PRODUCT_ID_JAVA_PATTERN
from core.inputs import input_patterns
from core.settings import get_settings
from core.spark_schemas import PRODUCT, RAW_LINE, REVIEW
from spark_jobs import hadoop_fs, units
from spark_jobs.common import run_job
from spark_jobs.reconcile import Unbalanced, check_and_print

# The version of what load writes from a file's bytes, stored with each file in the load ledger.
# Bump it with a change to load that changes the rows it writes from the same input (parsing,
# typing, the kinds, the quarantine, the columns): a file loaded by another version counts as not
# loaded, so it is loaded again the next time it is given, and its category (whose fingerprint
# holds the version) is cleaned again and reloaded into MongoDB.
LOAD_VERSION = 2  # 2: ids the site and the events refuse are quarantined

_CORRUPT = "_corrupt"
_NUM = r"^\s*-?\d+(\.\d+)?\s*$"


def _long(col: F.Column) -> F.Column:
    """A count as a long: '1,234' -> 1234, missing or garbage -> 0 (numbers default to 0)."""
    digits = F.regexp_replace(F.coalesce(col, F.lit("")), ",", "")
    return F.when(digits.rlike(r"^\s*\d+(\.0+)?\s*$"), digits.cast("double").cast("long")).otherwise(F.lit(0))


def _str(col: F.Column) -> F.Column:
    return F.coalesce(col, F.lit(""))


def _bool(col: F.Column) -> F.Column:
    return F.coalesce(F.lower(col) == "true", F.lit(False))


def _bad_id(col: F.Column) -> F.Column:
    """Whether a present id (as stored: trimmed) breaks the pattern the site and the rating events
    hold ids to (core.events): a product with "/" in its id made every page listing it fail (no URL
    can be built for it), and a reviewer's linked demo account could not rate. A column
    expression, not a Python UDF: no round trip to a Python worker for every line."""
    return ~F.trim(col).rlike(PRODUCT_ID_JAVA_PATTERN)


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
    if "file_category" not in lines.columns:
        parsed = parsed.withColumn("file_category", units.category_from_path(F.col("source_file")))
    if "unit" not in lines.columns:
        parsed = parsed.withColumn("unit", F.lit(None).cast("string"))
    j = lambda name: F.col(f"j.{name}")  # noqa: E731
    src = F.coalesce(F.col("json_line"), F.lit(""))
    corrupt = j(_CORRUPT).isNotNull()
    # A line from_json read without complaint and that starts with "{" is a JSON object. Only the
    # few other lines are parsed a second time (get_json_object) to tell bad JSON from JSON that is
    # no object: CASE WHEN evaluates that branch for them alone.
    brace = F.trim(src).startswith("{")
    not_object_reason = (F.when(corrupt & F.get_json_object(src, "$").isNull(), "bad JSON")
                         .when(~brace, "not a JSON object").otherwise("unexpected field shape"))
    is_review = (j("reviewerID").isNotNull() | j("overall").isNotNull() | j("unixReviewTime").isNotNull()
                 | j("reviewText").isNotNull() | j("user_id").isNotNull() | j("rating").isNotNull()
                 | j("timestamp").isNotNull())
    fmt = (F.when(j("user_id").isNotNull() | j("rating").isNotNull() | j("timestamp").isNotNull(), "2023")
           .when(j("helpful").isNotNull(), "2014").otherwise("2018"))
    user = F.coalesce(j("reviewerID"), j("user_id"))
    item = F.when(fmt == "2023", F.coalesce(j("parent_asin"), j("asin"))).otherwise(j("asin"))
    product_item = F.coalesce(j("parent_asin"), j("asin"))
    rating_raw = F.coalesce(j("overall"), j("rating"))
    rating = rating_raw.cast("double")
    reason = (
        F.when(F.length(F.trim("raw_line")) == 0, "empty line")
        .when(F.col("literal_error").isNotNull(), F.col("literal_error"))
        .when(~brace | corrupt, not_object_reason)
        .when(is_review & (F.trim(_str(user)) == ""), "missing user")
        .when(is_review & _bad_id(user), "bad user id")
        .when(is_review & (F.trim(_str(item)) == ""), "missing item")
        .when(is_review & _bad_id(item), "bad item id")
        .when(is_review & rating_raw.isNull(), "missing rating")
        .when(is_review & (~rating_raw.rlike(_NUM)), "rating not a number")
        .when(is_review & ((rating < 1) | (rating > 5)), "rating out of range")
        .when(~is_review & (F.trim(_str(product_item)) == ""), "missing item")
        .when(~is_review & _bad_id(product_item), "bad item id")
    )
    kind = F.when(reason.isNotNull(), "quarantine").when(is_review, "review").otherwise("product")
    return parsed.select("raw_line", "source_file", "unit", "file_category", "j", kind.alias("kind"), reason.alias("reason"),
                         fmt.alias("fmt"), user.alias("_user"), item.alias("_item"), rating.alias("_rating"))


class _Named:
    def __init__(self, name: str, col: F.Column):
        self.name, self.col = name, col


def _review_select(classified: DataFrame) -> list[_Named]:
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
    return [
        _Named("user_id", F.trim("_user")),
        _Named("product_id", F.trim("_item")),
        _Named("rating", F.col("_rating")),
        _Named("ts", F.coalesce(ts, F.lit(0)).cast("long")),
        _Named("review_text", _str(F.when(fmt == "2023", j("text")).otherwise(j("reviewText")))),
        _Named("summary", _str(F.when(fmt == "2023", j("title")).otherwise(j("summary")))),
        _Named("helpful_votes", helpful_up),
        _Named("total_votes", total),
        _Named("verified", _bool(F.coalesce(j("verified"), j("verified_purchase")))),
        _Named("reviewer_name", _str(j("reviewerName"))),
        _Named("category", F.col("file_category")),
        _Named("source_format", fmt),
        _Named("source_file", F.col("source_file")),
        _Named("line_hash", F.sha2(F.col("raw_line"), 256)),
    ]


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


def _product_select(classified: DataFrame) -> list[_Named]:
    j = lambda name: F.col(f"j.{name}")  # noqa: E731
    price_num = F.regexp_extract(F.regexp_replace(_str(j("price")), ",", ""), r"(\d+(\.\d+)?)", 1)
    main = F.coalesce(j("main_category"), j("main_cat"))
    file_category = F.col("file_category")
    return [
        _Named("product_id", F.trim(F.coalesce(j("parent_asin"), j("asin")))),
        _Named("title", _str(j("title"))),
        _Named("brand", _str(F.coalesce(j("brand"), j("store")))),
        _Named("price", F.when(price_num != "", price_num.cast("double")).otherwise(F.lit(0.0))),
        _Named("category", F.when(main.isNotNull() & ~main.contains("<") & (F.trim(main) != ""), main)
               .otherwise(file_category)),
        _Named("categories", category_path(j, file_category)),
        _Named("description", _json_list_text(j("description"))),
        _Named("image", image_url(j)),
        _Named("also_buy", also_bought(j)),
        _Named("source_file", F.col("source_file")),
    ]


# What load writes for every line (one Parquet schema for the three outputs; see classified_rows).
_STAGED_SCHEMA = StructType(
    [StructField(f.name, f.dataType) for f in REVIEW.fields]
    + [StructField(f.name, f.dataType) for f in PRODUCT.fields if f.name not in REVIEW.fieldNames()]
    + [StructField("reason", StringType()), StructField("raw_line", StringType())])
KINDS = {"review": "reviews", "product": "products", "quarantine": "quarantine"}


def unit_lines(spark: SparkSession, unit: units.Unit) -> DataFrame:
    """One file's lines, each with its file, its unit and (for a 2014 metadata file) its JSON text.

    Whether the file holds Python dict literals is decided once, by its first non-empty line: only
    such files send their lines through the Python literal reader (a Python UDF costs a round trip
    to a Python worker for every row, even for rows it is handed null). In a JSON file a line that
    looks like a Python dict is what it is there: bad JSON, and quarantined as such.
    """
    lines = spark.read.text(hadoop_fs.literal_path(unit.path)).select(F.col("value").alias("raw_line"),
                                              F.lit(_file_uri(unit.path)).alias("source_file"),
                                              F.lit(unit.name).alias("unit"),
                                              F.lit(unit.category).alias("file_category"))
    if _first_line_is_python_dict(unit.path):
        return with_json_lines(lines)
    return lines.select("*", F.col("raw_line").alias("json_line"), F.lit(None).cast("string").alias("literal_error"))


def _file_uri(path: str) -> str:
    """A unit's file as Spark names it: an object-store URI as it is, a local path as ``file://``."""
    return path if storage.is_remote(path) else f"file://{path}"


def _first_line_is_python_dict(path: str) -> bool:
    with storage.open_text_input(path, errors="replace") as f:
        for line in f:
            if line.strip():
                return py_literal.looks_like_python_dict(line)
    return False


def classified_rows(classified: DataFrame) -> DataFrame:
    """Every line as one row of the union of the three outputs' columns, for one partitioned write.

    The reviews, products and quarantine are written by a single pass over the input (partitioned
    by kind and unit) instead of persisting the parsed lines and reading them three times; each
    column is computed only for the kind it belongs to (CASE WHEN evaluates one branch).
    """
    review_cols = {f.name: f for f in _review_select(classified)}
    product_cols = {f.name: f for f in _product_select(classified)}
    kind = F.col("kind")
    cols = []
    for name in dict.fromkeys([*review_cols, *product_cols]):
        r, p = review_cols.get(name), product_cols.get(name)
        expr = F.when(kind == "review", r.col) if r is not None else None
        if p is not None:
            expr = F.when(kind == "product", p.col) if expr is None else expr.when(kind == "product", p.col)
        if name == "source_file":
            expr = F.col("source_file")
        cols.append(expr.alias(name))
    quarantine = kind == "quarantine"
    return classified.select(
        "kind", "unit", *cols, F.when(quarantine, F.col("reason")).alias("reason"),
        F.when(quarantine, F.substring("raw_line", 1, 10_000)).alias("raw_line"))


def is_loaded(entry: dict | None, unit: units.Unit) -> bool:
    """Whether a load ledger entry says ``unit`` is loaded: the same bytes, by this version of load."""
    return entry is not None and entry.get("sha256") == unit.sha256 and entry.get("version", units.FIRST_VERSION) == LOAD_VERSION


def keep_readable(spark: SparkSession, out_dir: str, unit_name: str) -> None:
    """An empty partition with the schema (named after ``unit_name``) in each output folder left
    without any, so every output folder is readable."""
    for folder in KINDS.values():
        path = f"{out_dir}/{folder}"
        if not hadoop_fs.exists(spark, path) or not hadoop_fs.has_partitions(spark, path):
            empty = f"{out_dir}/{folder}/unit={hadoop_fs.partition_value(unit_name)}"
            spark.createDataFrame([], _STAGED_SCHEMA).write.mode("overwrite").parquet(empty)


def outputs_changed(spark: SparkSession, out_dir: str, unit_name: str) -> None:
    """After partitions of ``out_dir`` were replaced or removed: every output folder still readable
    (:func:`keep_readable`), and Spark's cached listing of each dropped, so a DataFrame cached over
    the old files does not answer for the new."""
    keep_readable(spark, out_dir, unit_name)
    for folder in KINDS.values():
        spark.catalog.refreshByPath(f"{out_dir}/{folder}")


def remove_units(spark: SparkSession, out_dir: str, ledger: dict, names: list[str],
                 given: list[units.Unit]) -> list[str]:
    """Take the loaded files ``names`` out of ``out_dir``: their ledger entries, then their partitions.

    Their categories change (a file less) or go, so clean redoes or drops them and mongo_load, which
    sees a changed category, reloads MongoDB in full. The ledger is written first: a removal killed
    half-way leaves partitions no ledger lists, which clean ignores and a second removal deletes.
    A name with neither is only reported (removed already, by the run now resumed, or mistyped),
    so a resumed run can pass the same names. A file among this run's inputs (``given``) is
    refused, and so is removing every loaded file (remove DATA_DIR to start over): clean needs
    something to read. Returns the names removed.
    """
    done = ledger.get("units", {})
    if both := sorted({u.name for u in given} & set(names)):
        raise units.InputsRefused(f"load: {', '.join(both)}: both an input and to be removed")
    if not given and not set(done) - set(names):
        raise units.InputsRefused(f"load: --remove would leave no file loaded in {out_dir}; "
                                  f"remove the folder to start over")
    partitions = {name: [f"{out_dir}/{folder}/unit={hadoop_fs.partition_value(name)}" for folder in KINDS.values()]
                  for name in names}
    present = [n for n, paths in partitions.items() if n in done or any(hadoop_fs.exists(spark, p) for p in paths)]
    for name in [n for n in names if n not in present]:
        print(f"load: --remove {name}: no file of that name is loaded in {out_dir}; nothing to remove")
    units.forget(out_dir, ledger, "units", present)
    for name in present:
        for path in partitions[name]:
            hadoop_fs.delete(spark, path)
        print(f"load: {name} removed")
    if present:
        outputs_changed(spark, out_dir, (sorted(done) or [u.name for u in given])[0])
    return present


def _report_plan(all_units: list[units.Unit], todo: list[units.Unit], done: dict) -> tuple[list[str], list[dict]]:
    """Print which inputs are skipped and which replace a file of their name loaded from another
    folder; returns the names skipped and those replacements."""
    skipped = [u.name for u in all_units if u not in todo]
    elsewhere = units.loaded_elsewhere(done, all_units)
    for name in skipped:
        print(f"load: {name} already loaded with the same checksum (load version {LOAD_VERSION})"
              + (f" from {elsewhere[name]}" if name in elsewhere else "") + "; skipped")
    replaced = [{"file": u.name, "path": u.path, "earlier_path": elsewhere[u.name]} for u in todo if u.name in elsewhere]
    for r in replaced:  # files are keyed by name: a re-download kept elsewhere, or another file of the same name?
        print(f"load: {r['path']} replaces the {r['file']} loaded earlier from {r['earlier_path']} "
              f"(files are keyed by their name)")
    return skipped, replaced


def _write_staged(spark: SparkSession, todo: list[units.Unit], staging: str) -> dict[str, int]:
    """Every file of ``todo`` read, classified and written under ``staging`` in one Spark job (a
    gzip file is one task: loading them together keeps every core busy); returns each file's lines.

    Each file's lines are counted as they are read, in the write's own stage (no shuffle before it,
    so a retried task is not counted twice): a second read only to count them decompressed every
    file again, ~9% of load at 51.6M lines.
    """
    counted = {u.name: Observation(f"lines-{uuid.uuid4().hex}") for u in todo}
    lines = reduce(DataFrame.unionByName, [unit_lines(spark, u).observe(counted[u.name], F.count(F.lit(1)).alias("n"))
                                           for u in todo])
    hadoop_fs.write_partitioned(classified_rows(classify(lines)), staging, "kind", "unit")
    return {name: int(observation.get["n"]) for name, observation in counted.items()}


def _swap_in(spark: SparkSession, todo: list[units.Unit], staging: str, out_dir: str, ledger: dict) -> None:
    """Each file's staged partitions take the place of its old ones; the files leave the ledger first
    (:func:`units.forget`), and the staging folder (this job's own only) goes after."""
    units.forget(out_dir, ledger, "units", [u.name for u in todo])  # before their partitions go
    for u in todo:
        for kind, folder in KINDS.items():
            unit = f"unit={hadoop_fs.partition_value(u.name)}"
            hadoop_fs.replace_partition(spark, f"{staging}/kind={kind}/{unit}", f"{out_dir}/{folder}/{unit}", staging)
    hadoop_fs.delete(spark, staging)  # its own only: another job's may be in use
    outputs_changed(spark, out_dir, todo[0].name)


def _count_written(spark: SparkSession, out_dir: str, todo: list[units.Unit],
                   lines_in: dict[str, int]) -> tuple[dict[str, dict], dict[str, int]]:
    """Per file, its lines and what actually reached disk (not what we meant to write): its reviews,
    products and quarantined rows read back from ``out_dir``; and the quarantine's reasons."""
    names = [u.name for u in todo]
    written = {folder: {r["unit"]: r["count"] for r in spark.read.parquet(f"{out_dir}/{folder}")
                        .where(F.col("unit").isin(names)).groupBy("unit").count().collect()}
               for folder in KINDS.values()}
    reasons = {r["reason"]: r["count"] for r in spark.read.parquet(f"{out_dir}/quarantine")
               .where(F.col("unit").isin(names)).groupBy("reason").count().orderBy(F.desc("count")).collect()}
    by_unit = {u.name: {"lines": lines_in.get(u.name, 0), **{folder: written[folder].get(u.name, 0)
                                                              for folder in KINDS.values()}}
               for u in todo}
    return by_unit, reasons


def _balanced_record(by_unit: dict[str, dict]) -> dict:
    """The job's counts (printed); raises :class:`Unbalanced` unless every file's lines = its rows out."""
    counts_out = {"reviews": sum(c["reviews"] for c in by_unit.values()),
                  "products": sum(c["products"] for c in by_unit.values()),
                  "quarantined": sum(c["quarantine"] for c in by_unit.values())}
    record = check_and_print("load", {"lines": sum(c["lines"] for c in by_unit.values())}, counts_out)
    unbalanced = [n for n, c in by_unit.items() if c["lines"] != c["reviews"] + c["products"] + c["quarantine"]]
    if unbalanced:
        raise Unbalanced(f"load: lines in != rows out for {unbalanced}")
    return record


def load(spark: SparkSession, inputs: list[str], out_dir: str, run_id: str, *, force: bool = False,
         remove: Sequence[str] = ()) -> dict:
    """Read ``inputs`` (files or globs), write raw reviews/products/quarantine Parquet under ``out_dir``.

    Incremental: a file already loaded into ``out_dir`` with the same SHA-256 (the ledger) is
    skipped; the others are loaded in one Spark job and each replaces only its own ``unit=<file>``
    partitions. ``force`` reloads every file. ``remove``: loaded files (by file name) to take out
    first (:func:`remove_units`). The balance is per loaded file: its lines (counted as the write
    reads them, by an observation on the file's plain text read) = its reviews + products +
    quarantined rows as read back from the written Parquet.
    """
    started = time.time()
    all_units = units.list_units(inputs)
    ledger = units.read_ledger(out_dir)
    names = units.file_names(remove)
    removed = remove_units(spark, out_dir, ledger, names, all_units) if names else []
    done = ledger.get("units", {})
    todo = [u for u in all_units if force or not is_loaded(done.get(u.name), u)]
    skipped, replaced = _report_plan(all_units, todo, done)
    by_unit: dict[str, dict] = {}
    reasons: dict[str, int] = {}
    if todo:
        staging = hadoop_fs.staging_dir(spark, out_dir, run_id)
        lines_in = _write_staged(spark, todo, staging)
        _swap_in(spark, todo, staging, out_dir, ledger)
        by_unit, reasons = _count_written(spark, out_dir, todo, lines_in)
    record = _balanced_record(by_unit)
    for u in todo:  # only now: a load killed before this point is redone from scratch
        done[u.name] = {"sha256": u.sha256, "version": LOAD_VERSION, "size": u.size, "category": u.category,
                        "path": u.path, "run_id": run_id, "loaded_at": time.time(), "counts": by_unit[u.name]}
    if todo:
        units.write_ledger(out_dir, {**ledger, "units": done})
    record.update(status="ok", run_id=run_id, inputs=inputs, quarantine_reasons=reasons,
                  loaded=[u.name for u in todo], skipped=skipped, removed=removed, replaced=replaced,
                  # a list, not a map keyed by file name: MongoDB (FerretDB) refuses keys with "."
                  per_file=[{"file": name, **counts} for name, counts in sorted(by_unit.items())],
                  seconds=round(time.time() - started, 2), output=out_dir)
    for reason, n in reasons.items():
        print(f"  quarantined  {reason:<28}{n:>12,}")
    return record


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()

    def inputs(args) -> list[str]:
        return input_patterns(args.input, args.remove, settings.demo_input)

    return run_job(
        "load", __doc__, argv,
        lambda spark, args: load(spark, inputs(args), str(settings.data_dir / "raw"),
                                 args.run_id, **({"force": True} if args.force else {}),
                                 **({"remove": args.remove} if args.remove else {})),
        options=lambda parser: (
            parser.add_argument("--input", action="append",
                                help="file or glob; repeatable (default: the demo files, none with --remove)"),
            parser.add_argument("--force", action="store_true",
                                help="load every input again, even those already loaded with the same checksum"),
            parser.add_argument("--remove", action="append", default=[], metavar="FILE_NAME",
                                help="take a loaded file (by its file name) out, its rows and its ledger entry; "
                                     "repeatable")),
        # a staged write that vanished, any other refusal
        failures=(Unbalanced, FileNotFoundError, ValueError),
        # a file or a glob that names none; inputs that contradict each other or the ledger: not retried
        permanent=(units.NoInputFile, units.InputsRefused),
        # recorded before loading, so a resume of a load that failed or was killed loads the same files
        started=lambda args: {"inputs": inputs(args), **({"remove": args.remove} if args.remove else {})})


if __name__ == "__main__":
    sys.exit(main())
