"""Engine spark's driver-side data: a sample of held-out users (collect_sample) and counts by Spark,
checked against the full collect of the same split."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_sample_holds_every_pair_of_its_users_and_the_whole_datas_counts(spark, tmp_path):
    from spark_jobs.interactions import collect, collect_sample, index_ids, spark_counts, split_by_time

    rng = np.random.default_rng(2)
    rows = []
    for u in range(120):
        for k, p in enumerate(rng.choice(40, int(rng.integers(1, 9)), replace=False).tolist()):
            rows.append((f"user{u:03d}", f"prod{p:02d}", float(rng.integers(1, 6)), 1e9 + 86400.0 * k))
    reviews = spark.createDataFrame(rows, "user_id string, product_id string, rating double, ts double")
    inter, users, items = index_ids(reviews)
    parted = split_by_time(inter).cache()
    full = collect(parted, users, items, tmp_path / "full")
    assert spark_counts(parted) == full.counts()

    sample = collect_sample(parted, users, items, tmp_path / "sample", max_users=25)
    held_out = full.users_with(2)
    assert sample.shape == (25, full.shape[1]) and sample.item_ids == full.item_ids
    assert set(sample.uids.tolist()) <= set(held_out.tolist()) and len(set(sample.uids.tolist())) == 25
    for row, u in enumerate(sample.uids.tolist()):
        assert sample.user_ids[row].as_py() == full.user_ids[u].as_py()
        mine = sorted(zip(sample.items[sample.indptr[row]:sample.indptr[row + 1]].tolist(),
                          sample.part[sample.indptr[row]:sample.indptr[row + 1]].tolist()))
        theirs = sorted(zip(full.items[full.indptr[u]:full.indptr[u + 1]].tolist(),
                            full.part[full.indptr[u]:full.indptr[u + 1]].tolist()))
        assert mine == theirs
    for k in (0, 1):  # popularity counts the whole data, not the sample
        assert sample.popularity(k).tolist() == np.asarray(full.matrix(k).sum(axis=0)).ravel().astype(int).tolist()
    assert full.popularity(0) is None
    assert len(sample.heldout(1, 10 ** 6)) == len(sample.heldout(2, 10 ** 6)) == 25
    again = collect_sample(parted, users, items, tmp_path / "again", max_users=25)
    assert again.uids.tolist() == sample.uids.tolist()  # a fixed sample for a dataset
