"""Which files load's ``--input`` names (spark_jobs.units.list_units): a glob that matches nothing
fails with the pattern named, and an existing file whose name holds glob characters is that file."""
from __future__ import annotations

import pytest

from spark_jobs import units


def test_a_glob_that_matches_nothing_is_an_error_naming_it(tmp_path):
    (tmp_path / "amazon2018_toys.jsonl.gz").write_bytes(b"")
    pattern = str(tmp_path / "*.jsonl.gzz")
    with pytest.raises(FileNotFoundError, match=r"\*\.jsonl\.gzz"):
        units.list_units([pattern])
    # one empty pattern among others fails the same
    with pytest.raises(FileNotFoundError, match=r"\*\.jsonl\.gzz"):
        units.list_units([str(tmp_path / "*.jsonl.gz"), pattern])


def test_a_file_whose_name_holds_glob_characters_is_loaded_as_itself(tmp_path):
    literal = tmp_path / "reviews_toys[1].jsonl"
    literal.write_text('{"asin": "a"}\n')
    (tmp_path / "reviews_toys1.jsonl").write_text('{"asin": "b"}\n')  # what "[1]" matches as a glob
    assert [u.path for u in units.list_units([str(literal)])] == [str(literal)]


def test_a_glob_still_matches_its_files(tmp_path):
    for name in ("amazon2018_b.jsonl", "amazon2018_a.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert [u.name for u in units.list_units([str(tmp_path / "*.jsonl")])] == ["amazon2018_a.jsonl", "amazon2018_b.jsonl"]
