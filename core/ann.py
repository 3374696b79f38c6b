"""Approximate top-k by inner product over item factors: an HNSW graph (faiss) beside the model.

Exact top-k scores every item for every query: users x items x rank multiply-adds, ~110 min for
the 1.7M users x 633k items of a 10M-review run on 2 cores, and 15-30 ms of a 1M-item rating in
the worker. Above ``ANN_MIN_ITEMS`` items a model version carries an HNSW index (faiss
``IndexHNSWFlat``) over its item factors, built by ``core.artifacts.save_model``; below it exact
scoring is cheap and stays.

The graph is built and searched by inner product (faiss ``METRIC_INNER_PRODUCT``). The textbook
reduction of maximum inner product to L2 search (append sqrt(M² − |y|²) to every item, 0 to the
query; Bachrach et al. 2014) was measured worse on iALS factors here: recall@20 0.27 against 0.98
at the same search breadth (100k items, rank 64), as the appended coordinate dominates the
distances of the many short (rarely rated) item vectors. Candidates are re-scored exactly with the
item factors, so the scores a caller sees are the model's.

Exclusions (a user's rated and "not interested" items) are dropped after the search: each query
asks for k + its number of exclusions, so up to k results always remain; a query with more than
``MAX_EXCLUDED`` exclusions is scored exactly (few users, and exact is then no slower).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from core import storage
from core.env import env_int
from core.storage import Location

FILE = "ann.faiss"  # beside item_factors.npy in a model version's folder
ANN_MIN_ITEMS = env_int("ANN_MIN_ITEMS", 100_000)
# Graph degree and search breadth: recall@20 >= 0.95 against exact on iALS factors (bench/serving_lists.py).
HNSW_M = env_int("ANN_HNSW_M", 32)
EF_CONSTRUCTION = env_int("ANN_EF_CONSTRUCTION", 80)
EF_SEARCH = env_int("ANN_EF_SEARCH", 128)
MAX_EXCLUDED = 2048


@dataclass
class Index:
    """An HNSW graph over the item vectors, and the factors it re-scores with."""

    hnsw: object  # faiss.IndexHNSWFlat
    item_factors: np.ndarray  # (n_items, rank) float32, the model's own array (not copied)
    ef_search: int = EF_SEARCH

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])


def wanted(n_items: int, kind: str) -> bool:
    """Whether a model of this size and kind gets an index (EASE weights are not factors)."""
    return kind != "ease" and n_items >= ANN_MIN_ITEMS


def unit_rows(factors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32): inner products of these are cosines."""
    norms = np.linalg.norm(factors, axis=1) + 1e-12
    return (factors / norms[:, None]).astype(np.float32)


def build(item_factors: np.ndarray, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION) -> Index:
    """Index the rows of ``item_factors`` (multi-threaded: ~1 min for 1M items x 64 on 2 cores)."""
    import faiss

    y = np.ascontiguousarray(item_factors, dtype=np.float32)
    graph = faiss.IndexHNSWFlat(y.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = ef_construction
    graph.add(y)
    return Index(graph, y)


def save(index: Index, path: Location | Path) -> None:
    """Serialised through core.storage, so a model folder in a bucket (s3a://) keeps its index too."""
    import faiss

    storage.write_bytes(path, faiss.serialize_index(index.hnsw).tobytes())


def load(path: Location | Path, item_factors: np.ndarray) -> Index:
    """The index saved with a model; ``item_factors`` must be the factors it was built from."""
    import faiss

    graph = faiss.deserialize_index(np.frombuffer(storage.read_bytes(path), dtype=np.uint8))
    if graph.ntotal != item_factors.shape[0] or graph.d != item_factors.shape[1]:
        raise ValueError(f"ANN index {path} holds {graph.ntotal} x {graph.d}, "
                         f"the model {item_factors.shape[0]} x {item_factors.shape[1]}")
    return Index(graph, np.ascontiguousarray(item_factors, dtype=np.float32))


def _exact(index: Index, query: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = index.item_factors @ query
    scores[excluded] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.zeros(0, np.int64)
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


def search(index: Index, queries: np.ndarray, k: int,
           exclude: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items by inner product for each query row, without each row's ``exclude`` items.

    Returns (items, scores), both (n_queries, k), best first; a row with fewer than ``k`` results
    (a catalog nearly all excluded) is padded with item -1 and score -inf. Scores are exact inner
    products of the model's factors.
    """
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = queries.shape[0]
    exclude = exclude if exclude is not None else [np.zeros(0, np.int64)] * n
    items = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf, np.float32)
    if n == 0 or k <= 0:
        return items, scores
    n_excl = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=n)
    # one search per group of queries asking for the same (power-of-two) number of candidates
    want = 1 << np.ceil(np.log2(k + n_excl)).astype(np.int64)
    for size in np.unique(want).tolist():
        rows = np.flatnonzero(want == size)
        if size > MAX_EXCLUDED + k or size >= index.n_items:
            for r in rows.tolist():
                top, s = _exact(index, queries[r], k, np.asarray(exclude[r], np.int64))
                items[r, :top.size], scores[r, :top.size] = top, s
            continue
        params = faiss.SearchParametersHNSW(efSearch=max(index.ef_search, size))
        _, cand = index.hnsw.search(queries[rows], size, params=params)
        # drop each row's exclusions (one sorted membership test for the whole group), then
        # re-score the candidates exactly and keep the best k, all as array operations
        drop = cand < 0
        if n_excl[rows].any():
            group_excl = [np.asarray(exclude[r], np.int64) for r in rows.tolist()]
            keys = np.concatenate([np.full(e.size, j, np.int64) for j, e in enumerate(group_excl)]) * index.n_items
            keys += np.concatenate(group_excl)
            drop |= np.isin(np.arange(rows.size, dtype=np.int64)[:, None] * index.n_items + cand, keys)
        safe = np.where(drop, 0, cand)
        exact = np.einsum("qcr,qr->qc", index.item_factors[safe], queries[rows])
        exact[drop] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(exact, order, axis=1)
        found = np.isfinite(best)
        width = order.shape[1]
        items[rows, :width] = np.where(found, np.take_along_axis(safe, order, axis=1), -1)
        scores[rows, :width] = best
    return items, scores
