"""A generated set of the 2018 release's shape goes through the real load and clean jobs exactly as
its manifest says: lines in, reviews, products (the metadata files), quarantined lines with their
reasons, exact duplicate lines and repeated pairs clean drops. Runs Spark on the real files written
by bench/gen/release.py (29 review + 29 metadata files, broken and duplicated lines mixed in)."""
from __future__ import annotations

import uuid
from collections import Counter

import pyarrow.parquet as pq


def _column(path, name: str) -> list:
    return pq.read_table(str(path), columns=[name]).column(name).to_pylist()


def test_generated_release_reconciles_with_its_manifest(spark, tmp_path):
    from bench.gen.manifest import manifest_differences
    from bench.gen.release import RELEASE_CATEGORIES, display_name, generate_release
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    m = generate_release(0.00004, tmp_path / "in", seed=2, processes=2, duplicate_fraction=0.02, bad_fraction=0.01)
    assert m["bad_lines_total"] > 0 and m["duplicate_lines"] > 0 and len(m["files"]) == 58
    run_id = f"it-release-{uuid.uuid4().hex[:6]}"
    loaded = load(spark, [str(tmp_path / "in" / "*.json.gz")], str(tmp_path / "raw"), run_id)
    cleaned = clean(spark, str(tmp_path / "raw"), str(tmp_path / "clean"), run_id)
    assert manifest_differences(m, loaded, cleaned) == []
    assert loaded["counts_out"]["products"] == m["products"] > 0

    # Every category is named as the release names it, for reviews and products alike.
    want = {display_name(c) for c, _, _ in RELEASE_CATEGORIES}
    assert set(_column(tmp_path / "clean" / "products", "category")) == want
    review_cats = Counter(_column(tmp_path / "raw" / "reviews", "category"))
    assert set(review_cats) <= want and review_cats.most_common(1)[0][0] == "Books"
    # The 2018 metadata's imageURLHighRes list is read as the product's image.
    images = _column(tmp_path / "clean" / "products", "image")
    share = sum(bool(x) for x in images) / len(images)
    assert 0.3 < share < 0.55 and all(x.startswith("https://") for x in images if x)
