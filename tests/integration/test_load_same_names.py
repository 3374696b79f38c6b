"""Load keys its files by file name: a file of a loaded name from another folder, in a later run,
replaces the earlier one (a re-download kept elsewhere), and the log and the run's record say
which path it replaced; the ledger then holds the new path."""
from __future__ import annotations

import pytest

from spark_jobs import units

pytestmark = pytest.mark.integration


def test_a_later_file_of_a_loaded_name_says_which_path_it_replaces(spark, tmp_path, capsys):
    from spark_jobs.load import load

    raw, first, second = tmp_path / "raw", tmp_path / "part1", tmp_path / "part2"
    for folder, asin in ((first, "B001"), (second, "B002")):
        folder.mkdir()
        (folder / "amazon2018_toys.jsonl").write_text(
            f'{{"asin": "{asin}", "reviewerID": "U1", "overall": 5.0, "unixReviewTime": 1500000000}}\n')
    old, new = str(first / "amazon2018_toys.jsonl"), str(second / "amazon2018_toys.jsonl")
    assert load(spark, [old], str(raw), "same-1")["replaced"] == []
    capsys.readouterr()

    record = load(spark, [new], str(raw), "same-2")

    assert record["replaced"] == [{"file": "amazon2018_toys.jsonl", "path": new, "earlier_path": old}]
    assert f"load: {new} replaces the amazon2018_toys.jsonl loaded earlier from {old}" in capsys.readouterr().out
    assert units.read_ledger(str(raw))["units"]["amazon2018_toys.jsonl"]["path"] == new
    # the same file again: skipped, nothing replaced
    again = load(spark, [new], str(raw), "same-3")
    assert again["skipped"] == ["amazon2018_toys.jsonl"] and again["replaced"] == []
