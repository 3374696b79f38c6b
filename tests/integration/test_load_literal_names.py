"""A loaded file whose name holds glob characters is read as that file, not as a pattern (Spark
reads globs: ``reviews_toys[1].jsonl`` read as is was ``reviews_toys1.jsonl``)."""
from __future__ import annotations

import pytest

from spark_jobs import hadoop_fs, units
from spark_jobs.load import unit_lines

pytestmark = pytest.mark.integration


def test_a_file_named_with_glob_characters_is_read_as_itself(spark, tmp_path):
    literal = tmp_path / "amazon2018_toys[1].jsonl"
    literal.write_text('{"asin": "mine"}\n')
    (tmp_path / "amazon2018_toys1.jsonl").write_text('{"asin": "sibling 1"}\n{"asin": "sibling 2"}\n')

    [unit] = units.list_units([str(literal)])
    assert [r.raw_line for r in unit_lines(spark, unit).collect()] == ['{"asin": "mine"}']


def test_literal_paths_escape_every_glob_character():
    assert hadoop_fs.literal_path("/d/a[1]{x,y}*?.json") == r"/d/a\[1\]\{x,y\}\*\?.json"
    assert hadoop_fs.literal_path("/d/plain_5.jsonl.gz") == "/d/plain_5.jsonl.gz"
