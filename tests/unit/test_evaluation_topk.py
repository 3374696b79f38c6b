"""rank_metrics' fast top-k path for factor models must measure exactly what the generic path does."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from spark_jobs.evaluation import factor_scorer, popularity_scorer, rank_metrics


def test_factor_top_k_path_equals_full_score_matrix_path():
    rng = np.random.default_rng(1)
    n_users, n_items = 3000, 800
    uf = rng.normal(size=(n_users, 8)).astype(np.float32)
    itf = rng.normal(size=(n_items, 8)).astype(np.float32)
    train = sp.random(n_users, n_items, density=0.01, format="csr", random_state=2, dtype=np.float32)
    scores = uf @ itf.T
    seen = train.toarray() > 0
    held = {}
    for u in range(0, n_users, 2):  # held-out items near the top, so there are hits and misses
        ranked = [i for i in np.argsort(-scores[u]) if not seen[u, i]]
        held[u] = [int(ranked[int(rng.integers(0, 25))])]
    fast = factor_scorer(uf, itf)
    assert hasattr(fast, "top_k")
    generic = lambda users: fast(users)  # noqa: E731 - the same scores without the top_k attribute
    a, b = rank_metrics(fast, train, held, 10, chunk=97), rank_metrics(generic, train, held, 10, chunk=97)
    assert a == b
    assert 0.1 < a["hr@10"] < 0.9 and a["users"] == len(held)


def test_popularity_top_k_path_equals_full_score_matrix_path():
    rng = np.random.default_rng(3)
    n_users, n_items = 400, 60
    rows, cols = [], []
    for i in range(n_items):  # item i has i + 1 ratings: no ties, so both paths have one answer
        who = rng.choice(n_users, i + 1, replace=False)
        rows.extend(who.tolist())
        cols.extend([i] * (i + 1))
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    held = {u: [int(rng.integers(0, n_items))] for u in range(0, n_users, 3)}
    fast = popularity_scorer(train)
    assert hasattr(fast, "top_k")
    generic = lambda users: fast(users)  # noqa: E731
    a, b = rank_metrics(fast, train, held, 10, chunk=37), rank_metrics(generic, train, held, 10, chunk=37)
    assert a == b and 0 < a["hr@10"] < 1


def test_the_gate_scores_the_current_version_exactly_as_it_scores_the_candidate(monkeypatch):
    """The published version's validation number comes from an exact top-k, as the candidate's
    does: through the model's HNSW index it would lose the hits the index misses."""
    import spark_jobs.train as train
    from core.artifacts import Model

    model = Model("v1", ["a", "b"], np.ones((2, 4), dtype=np.float32), {"kind": "als"})
    model.ann = object()  # what load_model attaches above ANN_MIN_ITEMS
    monkeypatch.setattr(train.artifacts, "current_version", lambda: "v1")
    monkeypatch.setattr(train.artifacts, "load_model", lambda version: model)
    scored = []
    monkeypatch.setattr(train, "fold_in_ndcg", lambda m, *a, **kw: scored.append(m.ann) or {"ndcg@10": 0.5})
    got = train.current_on_validation(sp.csr_matrix((1, 2)), {0: [1]}, ["a", "b"], k=10)
    assert got == {"version": "v1", "ndcg@10": 0.5}
    assert scored == [None]
