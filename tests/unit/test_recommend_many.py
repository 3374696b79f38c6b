"""The batch job's stacked recommend_many / similar_many must give what the per-user functions give."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from core.artifacts import Model
from core.recommend import recommend, recommend_many, similar_items, similar_many


def _model(kind: str, n_items: int = 60, rank: int = 7, seed: int = 3, **params) -> Model:
    rng = np.random.default_rng(seed)
    if kind == "ease":
        factors = rng.normal(size=(n_items, n_items)).astype(np.float32)
        np.fill_diagonal(factors, 0.0)
    else:
        factors = rng.normal(size=(n_items, rank)).astype(np.float32)
    return Model(version="v-test", item_ids=[f"i{i}" for i in range(n_items)], item_factors=factors,
                 params={"kind": kind, "reg": 0.3, "alpha": 3.0, "weight": "binary", **params})


def _ratings(n_users: int, n_items: int, seed: int = 5) -> sp.csr_matrix:
    """Users with 0, 1, a few and very many rated items (one user rates all but 3: a short list)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        k = [0, 1, 2, 5, 12, n_items - 3][u % 6]
        items = rng.choice(n_items, k, replace=False)
        rows.append({int(i): float(rng.integers(1, 6)) for i in items})
    dense = np.zeros((n_users, n_items))
    for u, r in enumerate(rows):
        for i, v in r.items():
            dense[u, i] = v
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("kind,params", [("ials", {}), ("ials", {"weight": "rating"}),
                                         ("explicit", {"reg_scaling": "count"}), ("explicit", {}), ("ease", {})])
def test_recommend_many_equals_recommend_per_user(kind, params, monkeypatch):
    import core.recommend as rec

    monkeypatch.setattr(rec, "_PAD_CELLS", 64)  # many small chunks per history length
    m = _model(kind, **params)
    ratings = _ratings(30, len(m.item_ids))
    many = recommend_many(m, ratings, n=10)
    assert len(many) == ratings.shape[0]
    for u in range(ratings.shape[0]):
        row = ratings[u]
        rated = {m.item_ids[i]: float(v) for i, v in zip(row.indices.tolist(), row.data.tolist())}
        one = recommend(m, rated, 10)
        got = many[u]
        assert [r["product_id"] for r in got] == [r["product_id"] for r in one], (kind, u)
        assert [r["because"] for r in got] == [r["because"] for r in one], (kind, u)
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in one], rtol=1e-4, atol=1e-5)
    assert any(len(x) == 3 for x in many) and any(len(x) == 0 for x in many)


@pytest.mark.parametrize("kind", ["ials", "ease"])
def test_similar_many_equals_similar_items(kind):
    m = _model(kind)
    items = np.arange(len(m.item_ids))
    many = similar_many(m, items, n=10)
    for i in items.tolist():
        one = similar_items(m, m.item_ids[i], 10)
        assert [r["product_id"] for r in many[i]] == [r["product_id"] for r in one]
        np.testing.assert_allclose([r["score"] for r in many[i]], [r["score"] for r in one], rtol=1e-4, atol=1e-6)
        assert m.item_ids[i] not in {r["product_id"] for r in many[i]}


@pytest.mark.parametrize("kind,ann_index", [("ials", False), ("ials", True), ("explicit", False), ("ease", False)])
def test_recommend_many_leaves_each_users_exclusions_out_before_its_top_n(kind, ann_index):
    """"Not interested" is left out inside the top-n, as ``recommend`` does, so a batch never asks
    every user for n plus the longest exclusion list of any of them."""
    from core import ann, recommend as rec

    m = _model(kind)
    if ann_index:
        m.ann = ann.build(m.item_factors)
    ratings = _ratings(12, len(m.item_ids))
    rng = np.random.default_rng(9)
    excluded = [set() if u % 4 == 0 else {m.item_ids[i] for i in rng.choice(len(m.item_ids), 2 + u, replace=False)}
                for u in range(ratings.shape[0])]
    many = recommend_many(m, ratings, n=10, exclude=rec.exclusion_matrix(m, excluded))
    for u in range(ratings.shape[0]):
        row = ratings[u]
        rated = {m.item_ids[i]: float(v) for i, v in zip(row.indices.tolist(), row.data.tolist())}
        one = recommend(m, rated, 10, exclude=excluded[u])
        assert [r["product_id"] for r in many[u]] == [r["product_id"] for r in one], (kind, u)
        assert not excluded[u] & {r["product_id"] for r in many[u]}
