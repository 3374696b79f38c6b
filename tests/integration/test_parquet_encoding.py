"""The partitioned Parquet of load and clean: mostly-distinct strings are written without a
dictionary (Parquet would build one, give up past 1 MB and re-encode), the rest keep theirs."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

DICTIONARY = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}


def test_mostly_distinct_columns_are_written_plain(spark, tmp_path):
    from spark_jobs import units

    rows = [(f"U{i}", f"P{i % 7}", f"text {i}", float(1 + i % 5), "Drums" if i % 2 else "Guitars") for i in range(500)]
    df = spark.createDataFrame(rows, "user_id string, product_id string, review_text string, rating double, category string")
    units.write_partitioned(df, str(tmp_path / "out"), "category")

    files = sorted((tmp_path / "out").rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"category=Drums", "category=Guitars"}
    for f in files:
        meta = pq.ParquetFile(f).metadata
        encodings = {meta.schema.column(i).name: set(meta.row_group(0).column(i).encodings)
                     for i in range(meta.num_columns)}
        for name in ("user_id", "product_id", "review_text"):
            assert not encodings[name] & DICTIONARY, (f, name, encodings[name])
        assert encodings["rating"] & DICTIONARY, (f, encodings["rating"])  # the others keep their dictionaries
    assert pq.read_table(str(tmp_path / "out")).num_rows == 500
