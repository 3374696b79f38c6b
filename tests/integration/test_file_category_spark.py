"""units.category_from_path (the Spark column load and clean give a line from its source file) and
units.category_of (the category list_units gives a file) agree: both are built from
units.FILE_NAME_PATTERN and units.FILE_CATEGORY_STEPS, checked here on the real-shaped names of
tests/unit/test_file_category.py and on names made to hit where Java's regex and Python's re differ.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from spark_jobs import units

pytestmark = pytest.mark.integration


def _unit_names() -> list[str]:
    """NAMES of the unit test (tests/unit has no __init__.py, so it is loaded by its path)."""
    path = Path(__file__).resolve().parents[1] / "unit" / "test_file_category.py"
    spec = importlib.util.spec_from_file_location("_file_category_names", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [name for name, _category in module.NAMES]


EDGES = [
    "", "/", "dir/", "Books", "Books.JSON.GZ", "books.json.gz.json", "meta_reviews_Books_5.json",
    "amazon2018_reviews_x_5_5_raw.jsonl", "x_first12_RAW.json", "amazon٢٠١٤_books.json",  # Arabic-Indic digits
    "Électronique_grand_public_5.json", "a__b _c.jsonl", "s3a://b/k/", "C:\\data\\Books.json.gz",
]


def test_the_spark_column_and_the_python_function_agree(spark):
    names = _unit_names() + EDGES
    assert len(names) > len(EDGES) + 10
    rows = spark.createDataFrame([(n,) for n in names], "path string").select(
        "path", units.category_from_path(F.col("path")).alias("category")).collect()
    spark_says = {r["path"]: r["category"] for r in rows}
    assert {n: units.category_of(n) for n in names} == spark_says
