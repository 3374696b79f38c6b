"""Ranking metrics for leave-last-out evaluation with full ranking over the catalog.

Definitions follow Microsoft Recommenders' python_evaluation: for each user the held-out item(s)
are the relevant set, items the user already saw in training are excluded from the ranking, and
NDCG@k uses binary relevance with a log2 discount. With one held-out item per user, Recall@k
equals HR@k. Scoring runs in chunks of users so memory stays ``chunk x n_items`` at any scale: the
chunk shrinks as the catalog grows (2048 users x 60k items would already be 1 GB of float64 scores,
and at 600k items 10 GB), and scores are float32, as the factors are.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> (len, n_items) scores
CHUNK_CELLS = 2 ** 24  # users x items scored at once (64 MB of float32, plus the top-k work arrays)


def popularity_scorer(train: sp.csr_matrix, counts: np.ndarray | None = None) -> Scorer:
    """Counts of ``train`` (or ``counts``: the whole data's, when ``train`` holds a sample of users);
    its ``top_k`` walks the one popularity order instead of scoring every item for every user
    (50k users x 600k items was minutes of argpartition per evaluation)."""
    counts = (np.asarray((train > 0).sum(axis=0)).ravel() if counts is None else np.asarray(counts)).astype(np.float64)
    order = np.argsort(-counts, kind="stable")

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), counts.size)).copy()

    def top_k(users: np.ndarray, k: int, seen: sp.csr_matrix) -> np.ndarray:
        seen = seen.tocsr()
        head = order[:min(order.size, k + int(np.diff(seen.indptr).max(initial=0)))]
        out = np.empty((len(users), k), np.int64)
        for row in range(len(users)):
            mine = seen.indices[seen.indptr[row]:seen.indptr[row + 1]]
            out[row] = head[~np.isin(head, mine)][:k]
        return out

    score.top_k = top_k  # type: ignore[attr-defined]
    return score


def factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray) -> Scorer:
    """Dot products; also a ``top_k`` that never builds the (users x items) score matrix."""
    items32 = np.ascontiguousarray(item_factors, dtype=np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        return user_factors[users] @ item_factors.T

    def top_k(users: np.ndarray, k: int, seen: sp.csr_matrix) -> np.ndarray:
        # implicit's blocked, multi-threaded top-k: ~10x a numpy argpartition on a 600k-item catalog
        from implicit.cpu.topk import topk

        query = np.ascontiguousarray(user_factors[users], dtype=np.float32)
        return topk(items32, query, k, filter_query_items=seen.astype(np.float32), num_threads=0)[0]

    score.top_k = top_k  # type: ignore[attr-defined]
    return score


def ease_scorer(train: sp.csr_matrix, weights: np.ndarray) -> Scorer:
    binary = (train > 0).astype(np.float32).tocsr()
    return lambda users: np.asarray(binary[users] @ weights)


def rank_metrics(scorer: Scorer, train: sp.csr_matrix, heldout: dict[int, list[int]], k: int = 10,
                 chunk: int | None = None, exclude: sp.csr_matrix | None = None) -> dict[str, float]:
    """NDCG@k, Recall@k, HR@k and catalog coverage@k over the users in ``heldout``.

    ``exclude`` (default: ``train``) holds the items each user must not be recommended.
    """
    exclude = train if exclude is None else exclude
    users = np.array(sorted(heldout), dtype=np.int64)
    if users.size == 0:
        return {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"hr@{k}": 0.0, "coverage": 0.0, "users": 0}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg = recall = hits = 0.0
    recommended: set[int] = set()
    n_items = train.shape[1]
    fast_top_k = getattr(scorer, "top_k", None)
    chunk = chunk or (2048 if fast_top_k else max(1, min(2048, CHUNK_CELLS // max(1, n_items))))
    kk = min(k, n_items)
    for start in range(0, users.size, chunk):
        block = users[start:start + chunk]
        seen = exclude[block]
        if fast_top_k is not None:
            top = np.asarray(fast_top_k(block, kk, seen), dtype=np.int64)
        else:
            scores = np.asarray(scorer(block), dtype=np.float32)
            scores[np.repeat(np.arange(block.size), np.diff(seen.indptr)), seen.indices] = -np.inf
            top = np.argpartition(scores, n_items - kk, axis=1)[:, n_items - kk:]
            order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
            top = np.take_along_axis(top, order, axis=1)
        recommended.update(top.ravel().tolist())
        for row, u in enumerate(block.tolist()):
            relevant = set(heldout[u])
            gains = np.array([1.0 if i in relevant else 0.0 for i in top[row]])
            ideal = discounts[:min(len(relevant), k)].sum()
            ndcg += float(gains @ discounts[:kk]) / ideal if ideal else 0.0
            found = gains.sum()
            recall += found / len(relevant)
            hits += 1.0 if found else 0.0
    n = users.size
    return {f"ndcg@{k}": ndcg / n, f"recall@{k}": recall / n, f"hr@{k}": hits / n,
            "coverage": len(recommended) / n_items, "users": int(n)}


def fold_in_ndcg(model, train: sp.csr_matrix, heldout: dict[int, list[int]], item_ids: list[str],
                 k: int = 10) -> dict[str, float]:
    """NDCG@k of a served model on another run's split: each held-out user's training rows are
    folded into ``model`` (``core.recommend.recommend_many``, what the workers do) and its top-k
    is checked against the held-out items.

    ``train`` and ``heldout`` index the run's items (``item_ids``); items the model does not know
    are dropped from the histories and can never be hit, as in serving.
    """
    from core.recommend import recommend_many

    users = np.array(sorted(heldout), dtype=np.int64)
    if users.size == 0:
        return {f"ndcg@{k}": 0.0, "users": 0}
    to_model = np.array([model.item_index.get(p, -1) for p in item_ids], dtype=np.int64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    chunk = max(1, min(2048, CHUNK_CELLS // max(1, len(model.item_ids))))
    total = 0.0
    for start in range(0, users.size, chunk):
        block = users[start:start + chunk]
        rows = train[block].tocoo()
        known = to_model[rows.col] >= 0
        rated = sp.csr_matrix((rows.data[known], (rows.row[known], to_model[rows.col[known]])),
                              shape=(block.size, len(model.item_ids)))
        for u, got in zip(block.tolist(), recommend_many(model, rated, k)):
            relevant = {item_ids[i] for i in heldout[u]}
            ideal = discounts[:min(len(relevant), k)].sum()
            gains = np.array([1.0 if r["product_id"] in relevant else 0.0 for r in got[:k]])
            total += float(gains @ discounts[:gains.size]) / ideal if ideal else 0.0
    return {f"ndcg@{k}": total / users.size, "users": int(users.size)}
