"""The load and clean ledgers claim only what is on disk, on the real Spark and Parquet.

A ``--force`` load or clean killed while it replaces partitions (after the old one is deleted,
before the staged one is moved in) leaves those units / categories out of its ledger, so the next
ordinary run redoes them.
"""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from spark_jobs import units

pytestmark = pytest.mark.integration


def _write_reviews(path, rows) -> None:
    path.write_text("".join(json.dumps({"overall": r, "verified": True, "reviewerID": u, "asin": p,
                                        "reviewerName": u, "reviewText": f"{u} on {p}", "summary": "ok",
                                        "unixReviewTime": ts}) + "\n" for u, p, r, ts in rows))


def _rows(path) -> int:
    return pq.read_table(str(path), columns=["product_id"]).num_rows if path.exists() else 0


def _dies_after_deleting(spark, src, dst):
    """units.move killed after deleting its destination, before renaming the staged folder in."""
    units.delete(spark, dst)
    raise RuntimeError("killed mid-replace")


def test_a_forced_load_or_clean_killed_mid_replace_is_redone_by_the_next_run(spark, tmp_path, monkeypatch):
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    alpha = tmp_path / "amazon2018_alpha.jsonl"
    _write_reviews(alpha, [("u1", "p1", 5.0, 100), ("u2", "p2", 4.0, 100)])
    load(spark, [str(alpha)], str(raw), "kill-1")
    clean(spark, str(raw), str(cleaned), "kill-1")
    raw_part, clean_part = raw / "reviews" / f"unit={alpha.name}", cleaned / "reviews" / "category=Alpha"
    assert _rows(raw_part) == _rows(clean_part) == 2

    with monkeypatch.context() as patch:
        patch.setattr(units, "move", _dies_after_deleting)
        with pytest.raises(RuntimeError, match="killed"):
            load(spark, [str(alpha)], str(raw), "kill-2", force=True)
    assert _rows(raw_part) == 0
    assert alpha.name not in units.read_ledger(str(raw)).get("units", {})
    again = load(spark, [str(alpha)], str(raw), "kill-3")  # no --force: the ledger alone says to
    assert again["loaded"] == [alpha.name] and _rows(raw_part) == 2

    clean(spark, str(raw), str(cleaned), "kill-3")  # the reload gave Alpha the same fingerprint
    with monkeypatch.context() as patch:
        patch.setattr(units, "move", _dies_after_deleting)
        with pytest.raises(RuntimeError, match="killed"):
            clean(spark, str(raw), str(cleaned), "kill-4", force=True)
    assert _rows(clean_part) == 0
    assert "Alpha" not in units.read_ledger(str(cleaned)).get("categories", {})
    redone = clean(spark, str(raw), str(cleaned), "kill-5")
    assert redone["cleaned"] == ["Alpha"] and _rows(clean_part) == 2
