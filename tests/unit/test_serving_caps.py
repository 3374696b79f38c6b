"""Serving lists above SERVING_MAX_USERS / SERVING_MAX_ITEMS: the most active users and most rated items only."""
from __future__ import annotations


import numpy as np
import scipy.sparse as sp

from core import artifacts
from core.recommend import recommend
from core.settings import get_settings
from spark_jobs import serving_lists
from spark_jobs.serving_lists import most_active, write_serving_lists


def test_most_active_keeps_the_largest_counts_in_index_order():
    counts = np.array([3, 9, 1, 9, 0, 5])
    assert most_active(counts, 3).tolist() == [1, 3, 5]
    assert most_active(counts, 1).tolist() == [1]  # a tie goes to the lower index
    assert most_active(counts, 0).tolist() == list(range(6))
    assert most_active(counts, 99).tolist() == list(range(6))


def test_capped_lists_are_the_uncapped_lists_of_the_chosen_users(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.setattr(serving_lists.shopper_controls, "all_exclusions", dict)  # nobody said "not interested" (no server here)
    get_settings.cache_clear()
    try:
        rng = np.random.default_rng(4)
        n_users, n_items = 40, 30
        dense = (rng.random((n_users, n_items)) < np.linspace(0.05, 0.6, n_users)[:, None]).astype(np.float32)
        dense[0] = 0  # a user without interactions is never among the chosen ones
        x = sp.csr_matrix(dense)
        item_ids, user_ids = [f"i{i}" for i in range(n_items)], [f"u{u}" for u in range(n_users)]
        params = {"kind": "ials", "reg": 0.1, "alpha": 2.0, "weight": "binary"}
        version = artifacts.save_model(item_ids, rng.normal(size=(n_items, 8)), params)
        model = artifacts.load_model(version)

        out = write_serving_lists(version, x, user_ids, item_ids, n=5, block=7, max_users=10, max_items=4)
        assert out == {"users_listed": 10, "users": n_users, "items_listed": 4, "items": n_items}
        d = artifacts.models_dir() / version
        topn = list(artifacts.serving_list_docs(d / artifacts.TOPN_LISTS))
        expected_users = np.argsort(-dense.sum(axis=1), kind="stable")[:10]
        assert sorted(doc["_id"] for doc in topn) == sorted(user_ids[u] for u in expected_users)
        for doc in topn:
            u = user_ids.index(doc["_id"])
            rated = {item_ids[i]: 1.0 for i in np.flatnonzero(dense[u])}
            assert [r["product_id"] for r in doc["items"]] == [r["product_id"] for r in recommend(model, rated, 5)]
        similar = [doc["_id"] for doc in artifacts.serving_list_docs(d / artifacts.SIMILAR_LISTS)]
        by_count = dense.sum(axis=0)
        assert len(similar) == 4 and min(by_count[item_ids.index(s)] for s in similar) >= np.sort(by_count)[-4]

        everyone = write_serving_lists(version, x, user_ids, item_ids, n=5, block=7, max_users=0, max_items=0)
        assert everyone == {"users_listed": n_users, "users": n_users, "items_listed": n_items, "items": n_items}
    finally:
        get_settings.cache_clear()
