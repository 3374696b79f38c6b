"""Clean's Parquet: mostly-distinct strings (ids, text) are written without a dictionary (Parquet
would build one, give up past 1 MB and re-encode), the other columns keep theirs."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

DICTIONARY = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}


def _encodings(folder) -> dict[str, set[str]]:
    """Each column's encodings over every file (row group 0) under ``folder``."""
    out: dict[str, set[str]] = {}
    for f in sorted(folder.rglob("*.parquet")):
        meta = pq.ParquetFile(f).metadata
        for i in range(meta.num_columns):
            out.setdefault(meta.schema.column(i).name, set()).update(meta.row_group(0).column(i).encodings)
    return out


def test_plain_columns_are_written_without_dictionaries(spark, tmp_path):
    from spark_jobs import hadoop_fs

    # values that repeat, so that Parquet keeps a dictionary for every column unless told not to
    rows = [(f"U{i % 20}", f"P{i % 7}", f"text {i % 10}", float(1 + i % 5), "Drums" if i % 2 else "Guitars")
            for i in range(500)]
    df = spark.createDataFrame(rows, "user_id string, product_id string, review_text string, rating double, category string")
    hadoop_fs.write_partitioned(df, str(tmp_path / "plain"), "category", plain=("user_id", "review_text", "absent"))
    hadoop_fs.write_partitioned(df, str(tmp_path / "default"), "category")

    plain, default = _encodings(tmp_path / "plain"), _encodings(tmp_path / "default")
    assert not plain["user_id"] & DICTIONARY and not plain["review_text"] & DICTIONARY, plain
    assert plain["product_id"] & DICTIONARY and plain["rating"] & DICTIONARY, plain  # the others keep theirs
    assert all(e & DICTIONARY for e in default.values()), default
    assert pq.read_table(str(tmp_path / "plain")).num_rows == 500


def test_clean_writes_ids_and_text_plain(spark, tmp_path):
    from spark_jobs.clean import PLAIN_COLUMNS, clean
    from spark_jobs.load import load
    from tests.conftest import DEMO_DIR

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    load(spark, [str(DEMO_DIR / "amazon2018_gift_cards_5.jsonl.gz")], str(raw), "enc")
    clean(spark, str(raw), str(cleaned), "enc")
    encodings = _encodings(cleaned / "reviews")
    assert {c for c in PLAIN_COLUMNS if encodings[c] & DICTIONARY} == set(), encodings
    assert encodings["rating"] & DICTIONARY and encodings["year"] & DICTIONARY, encodings
