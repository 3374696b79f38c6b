"""Online recommendation maths: fold a user into a trained model and rank items for them.

The batch job trains item factors Y. A user who just rated something (or whom the model has never
seen) gets a fresh vector by solving their own regularised least-squares problem against Y — the
same step ALS itself alternates — so one new rating changes the list at once, without retraining.
For the implicit model (iALS, Hu, Koren & Volinsky 2008) with confidence c = 1 + alpha * w:

    x_u = (YᵀY + Σ_j (c_j − 1) y_j y_jᵀ + λI)⁻¹ Σ_j c_j y_j

and for the explicit model x_u = (Σ_j y_j y_jᵀ + λ n_u I)⁻¹ Σ_j r_j y_j (Spark's ALS-WR scaling).
The reason shown for an item is the rated item that contributes most to its score, the same
decomposition ``implicit``'s ``explain`` uses.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from core import ann
from core.artifacts import Model


def confidence(model: Model, ratings: np.ndarray) -> np.ndarray:
    """Confidence weights as the trainer defined them (stored in the model's params)."""
    alpha = float(model.params.get("alpha", 1.0))
    if model.params.get("weight", "binary") == "rating":
        return 1.0 + alpha * ratings
    return 1.0 + alpha * np.ones_like(ratings)


def _system(model: Model, rated: dict[str, float]) -> tuple[np.ndarray, ...] | None:
    """The fold-in's normal equations A x = b; then the per-item weights, the rated items' indices
    and their factor rows.

    ``recommend`` solves them together with the reasons' A⁻¹ y_j (one factorisation for both).
    """
    known = [(model.item_index[p], r) for p, r in rated.items() if p in model.item_index]
    if not known:
        return None
    idx = np.fromiter((i for i, _ in known), dtype=np.int64, count=len(known))
    r = np.fromiter((v for _, v in known), dtype=np.float64, count=len(known))
    y = model.item_factors[idx].astype(np.float64)
    reg = float(model.params.get("reg", 0.1))
    if model.params.get("kind", "ials") == "explicit":
        scale = len(idx) if model.params.get("reg_scaling") == "count" else 1
        a, weights = y.T @ y, r
        reg *= scale
    else:
        weights = confidence(model, r)
        a = (y.T * (weights - 1.0)) @ y
        a += model.gram
    a.flat[::model.rank + 1] += reg  # + reg I
    return a, y.T @ weights, weights, idx, y


_BLOCK = 128  # scores per block of top_k's prefilter


def top_k(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest finite scores, best first; -inf (rated, excluded) never listed.

    Equal scores are ordered by item index, lower first, also at the cut: which of two tied items
    makes the list never depends on how a partition happened to move them. Every list the site,
    the workers, Celery and the batch job's EASE lists show is cut here.

    A long array is cut to its candidates first: the ``n``-th largest of its blocks' maxima is a
    score at most the ``n``-th largest (``n`` blocks hold one at least that high each), so every
    score of the top ``n`` is among those at or above it, usually a few dozen. That is 4-5x faster
    than a partition of all of them (10,000 items: the worker's largest step per event,
    docs/benchmarks.md), and the same list.
    """
    if n > 0 and scores.size >= 8 * _BLOCK:
        maxima = np.fmax.reduceat(scores, np.arange(0, scores.size, _BLOCK))  # fmax: NaN is no maximum
        maxima = maxima[np.isfinite(maxima)]
        if maxima.size >= n:
            candidates = np.flatnonzero(scores >= np.partition(maxima, maxima.size - n)[maxima.size - n])
            return candidates[np.lexsort((candidates, -scores[candidates]))[:n]]  # >= n, none -inf or NaN
    return _top_k_all(scores, n)


def _top_k_all(scores: np.ndarray, n: int) -> np.ndarray:
    """``top_k`` by a partition of every score."""
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n < scores.size:  # the n-th best score, then every index above it and the lowest ones at it
        cut = scores[np.argpartition(-scores, n - 1)[n - 1]]
        above = np.flatnonzero(scores > cut)
        top = np.concatenate([above, np.flatnonzero(scores == cut)[:n - above.size]])
    else:
        top = np.arange(scores.size)
    return top[np.lexsort((top, -scores[top]))]


def _excluded_idx(model: Model, exclude: Iterable[str]) -> np.ndarray:
    """Model indices of the products a user said they are not interested in."""
    return np.fromiter((model.item_index[p] for p in exclude if p in model.item_index), dtype=np.int64)


def without_excluded(items: list[dict[str, Any]], excluded: Iterable[str], n: int | None = None) -> list[dict[str, Any]]:
    """A computed list without the products the user is not interested in (lists written before
    the user said so, by the batch job or an older worker), cut to ``n``."""
    excluded = set(excluded)
    kept = [i for i in items if i.get("product_id") not in excluded] if excluded else list(items)
    return kept if n is None else kept[:n]


def recommend_ease(model: Model, rated: dict[str, float], n: int = 20,
                   exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """EASE (Steck 2019): score = Σ_j B[j, :] over the items the user interacted with.

    No fold-in is needed: the model is item-to-item, so a new rating changes the scores at once.
    The reason is the rated item with the largest weight towards the recommended one.
    """
    idx = np.array(sorted({model.item_index[p] for p in rated if p in model.item_index}), dtype=np.int64)
    if idx.size == 0:
        return []
    rows = model.item_factors[idx]
    scores = rows.sum(axis=0).astype(np.float64)
    scores[idx] = -np.inf
    scores[_excluded_idx(model, exclude)] = -np.inf
    top = top_k(scores, n)
    best = rows[:, top].argmax(axis=0)
    return [{"product_id": model.item_ids[i], "score": float(scores[i]), "because": model.item_ids[int(idx[b])]}
            for i, b in zip(top.tolist(), best.tolist())]


def recommend(model: Model, rated: dict[str, float], n: int = 20,
              exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Top-``n`` unrated items with score and reason; empty if the user cannot be folded in.

    ``exclude``: products the user marked "not interested"; they are never among the ``n``.
    """
    if model.kind == "ease":
        return recommend_ease(model, rated, n, exclude)
    system = _system(model, rated)
    if system is None:
        return []
    a, b, weights, idx, y_rated = system
    solved = np.linalg.solve(a, np.column_stack([b, y_rated.T]))  # x, then A⁻¹ y_j for the reasons
    x = solved[:, 0]
    skip = np.concatenate([idx, _excluded_idx(model, exclude)])
    if model.ann is not None:  # above ANN_MIN_ITEMS: the model's HNSW index (core/ann.py)
        got, got_scores = ann.search(model.ann, x[None, :], n, [skip])
        keep = got[0] >= 0
        top, top_scores = got[0][keep], got_scores[0][keep]
        if top.size == 0:
            return []
    else:
        scores = model.item_factors @ x.astype(np.float32)
        scores[skip] = -np.inf
        top = top_k(scores, n)
        top_scores = scores[top]
    # contribution of rated item j to the score of item i: w_j * y_iᵀ A⁻¹ y_j
    contrib = (model.item_factors[top].astype(np.float64) @ solved[:, 1:]) * weights
    best = contrib.argmax(axis=1)
    return [
        {"product_id": model.item_ids[i], "score": float(s),
         "because": model.item_ids[int(idx[b])]}
        for i, s, b in zip(top.tolist(), top_scores.tolist(), best.tolist())
    ]


def similar_items(model: Model, product_id: str, n: int = 10) -> list[dict[str, Any]]:
    """Items closest by cosine of their factors ("customers who liked this also liked").

    For EASE the row B[i, :] already says how much liking ``i`` predicts liking each other item.
    """
    i = model.item_index.get(product_id)
    if i is None:
        return []
    if model.kind == "ease":
        sims = model.item_factors[i].astype(np.float64).copy()
    else:
        norms = np.linalg.norm(model.item_factors, axis=1) + 1e-12
        sims = (model.item_factors @ model.item_factors[i]) / (norms * norms[i])
    sims[i] = -np.inf
    return [{"product_id": model.item_ids[j], "score": float(sims[j])} for j in top_k(sims, n).tolist()]


# --- many users / items at once (the batch job's serving lists) ---------------------------------

_PAD_CELLS = 1 << 22  # users x padded history length x rank floats handled at once


def _buckets(counts: np.ndarray, rank: int):
    """Rows grouped by history length rounded up to a power of two, in chunks of ~_PAD_CELLS floats.

    Yields (rows, length): each group is padded to ``length`` so its per-user sums become one
    batched matrix product, without a (rated entries x rank x rank) intermediate.
    """
    length = 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64)
    order = np.argsort(length, kind="stable")
    bounds = np.flatnonzero(np.diff(length[order])) + 1
    for group in np.split(order, bounds):
        if group.size == 0:
            continue
        size = int(length[group[0]])
        step = max(1, _PAD_CELLS // (size * rank))
        for lo in range(0, group.size, step):
            yield group[lo:lo + step], size


def _padded(indptr: np.ndarray, counts: np.ndarray, rows: np.ndarray, size: int, sentinel: int):
    """(positions of each row's entries padded with ``sentinel``, mask of real entries)."""
    offsets = np.arange(size)
    mask = offsets[None, :] < counts[rows][:, None]
    return np.where(mask, indptr[rows][:, None] + offsets[None, :], sentinel), mask


def _user_systems(model: Model, indptr: np.ndarray, idx: np.ndarray, r: np.ndarray):
    """Stacked normal equations of ``_fold`` for users with >= 1 rated item.

    Returns (A⁻¹ per user, x per user, per-entry weights, factor rows of the rated entries with a
    zero row appended for padding).
    """
    counts = np.diff(indptr)
    y = np.vstack([model.item_factors[idx].astype(np.float64), np.zeros((1, model.rank))])
    reg = float(model.params.get("reg", 0.1))
    if model.kind == "explicit":
        coef, weights, base = np.ones_like(r), r, 0.0
        scale = counts if model.params.get("reg_scaling") == "count" else np.ones_like(counts)
        regs = reg * scale.astype(np.float64)
    else:
        weights = confidence(model, r)
        coef, base, regs = weights - 1.0, model.gram, np.full(counts.size, reg)
    coef, weights = np.append(coef, 0.0), np.append(weights, 0.0)
    a = np.empty((counts.size, model.rank, model.rank))
    b = np.empty((counts.size, model.rank))
    for rows, size in _buckets(counts, model.rank):
        pos, _ = _padded(indptr, counts, rows, size, idx.size)
        yp = y[pos]  # (users, size, rank), padding rows are zero
        a[rows] = np.matmul((yp * coef[pos][:, :, None]).transpose(0, 2, 1), yp)
        b[rows] = np.einsum("usr,us->ur", yp, weights[pos])
    a += base
    a += regs[:, None, None] * np.eye(model.rank)
    ainv = np.linalg.inv(a)
    return ainv, np.einsum("uij,uj->ui", ainv, b), weights, y


def exclusion_matrix(model: Model, excluded: Sequence[Iterable[str]]):
    """The ``exclude`` of :func:`recommend_many`: row u holds the model's items among ``excluded[u]``
    (product ids; those the model does not know are left out, as they can never be recommended)."""
    import scipy.sparse as sp

    rows = [sorted({model.item_index[p] for p in products if p in model.item_index}) for products in excluded]
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.fromiter((i for r in rows for i in r), np.int64, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(len(rows), len(model.item_ids)))


def recommend_many(model: Model, rated, n: int = 20, exclude=None) -> list[list[dict[str, Any]]]:
    """``recommend`` for many users at once: ``rated`` is a CSR matrix (users x the model's items).

    Each stored entry is a rated item with its rating, as the ``rated`` dict of ``recommend``; a user
    with no stored entry gets an empty list. ``exclude`` (rows like ``rated``, e.g. from
    :func:`exclusion_matrix`): items never returned to that user ("not interested"), left out before
    the top-n is taken, as ``recommend`` does: asking everyone for n plus the longest list of
    exclusions let one account's thousands of them size every user's top-k. The maths is the same — each user's regularised
    least-squares fold-in, scores over every item, the rated item contributing most as the reason —
    stacked over users and scored with ``implicit``'s multi-threaded top-k, so the batch job writes
    the lists of millions of users in matrix products instead of one Python call per user.
    """
    import scipy.sparse as sp

    rated = sp.csr_matrix(rated, dtype=np.float64)
    rated.sum_duplicates()
    rated.sort_indices()
    out: list[list[dict[str, Any]]] = [[] for _ in range(rated.shape[0])]
    users = np.flatnonzero(np.diff(rated.indptr))
    if users.size == 0 or n <= 0:
        return out
    sub = rated[users]
    indptr, idx, r = sub.indptr, sub.indices.astype(np.int64), sub.data
    binary = sp.csr_matrix((np.ones(idx.size, np.float32), idx, indptr), shape=sub.shape)
    skip = binary if exclude is None else ((binary + sp.csr_matrix(exclude, dtype=np.float32)[users]) > 0)
    skip = sp.csr_matrix(skip, dtype=np.float32)  # rated or excluded: never returned
    skip.sort_indices()
    ids = model.item_ids
    if model.kind == "ease":
        scores = np.asarray(binary @ model.item_factors, dtype=np.float64)
        scores[np.repeat(np.arange(users.size), np.diff(skip.indptr)), skip.indices] = -np.inf
        for row, u in enumerate(users.tolist()):
            top = top_k(scores[row], n)
            if top.size == 0:
                continue
            s, e = indptr[row], indptr[row + 1]
            best = model.item_factors[idx[s:e]][:, top].argmax(axis=0)
            out[u] = [{"product_id": ids[i], "score": float(scores[row, i]), "because": ids[int(idx[s + b])]}
                      for i, b in zip(top.tolist(), best.tolist())]
        return out

    from implicit.cpu.topk import topk
    from threadpoolctl import threadpool_limits

    # Thousands of rank x rank inverses and products: multi-threaded BLAS on such small matrices
    # spends its time synchronising threads (70x slower on 2 busy cores), so one thread here.
    with threadpool_limits(1, user_api="blas"):
        ainv, x, weights, y_rated = _user_systems(model, indptr, idx, r)
    kk = min(n, model.item_factors.shape[0])
    if model.ann is not None:  # above ANN_MIN_ITEMS: the model's HNSW index (core/ann.py)
        top, scores = ann.search(model.ann, x, kk, np.split(skip.indices.astype(np.int64), skip.indptr[1:-1]))
        valid = top >= 0
        top = np.where(valid, top, 0)
    else:
        top, scores = topk(model.item_factors, x.astype(np.float32), kk, filter_query_items=skip, num_threads=0)
        valid = scores > np.finfo(np.float32).min  # topk marks filtered (rated) items with -FLT_MAX
    # contribution of rated item j to the score of item i: w_j * y_iᵀ A⁻¹ y_j (as in ``recommend``)
    because = np.empty(top.shape, np.int64)
    counts = np.diff(indptr)
    with threadpool_limits(1, user_api="blas"):
        for rows, size in _buckets(counts, model.rank):
            pos, mask = _padded(indptr, counts, rows, size, idx.size)
            z = np.matmul(model.item_factors[top[rows]].astype(np.float64), ainv[rows])  # y_iᵀ A⁻¹
            contrib = np.matmul(z, y_rated[pos].transpose(0, 2, 1)) * weights[pos][:, None, :]
            contrib[np.broadcast_to(~mask[:, None, :], contrib.shape)] = -np.inf
            first = contrib.argmax(axis=2)  # the first rated item with the largest contribution
            because[rows] = idx[np.take_along_axis(pos, first, axis=1)]
    for row, u in enumerate(users.tolist()):
        keep = valid[row]
        out[u] = [{"product_id": ids[i], "score": float(s), "because": ids[b]}
                  for i, s, b in zip(top[row][keep].tolist(), scores[row][keep].tolist(),
                                     because[row][keep].tolist())]
    return out


def similar_many(model: Model, items: np.ndarray, n: int = 10,
                 index: "ann.Index | None" = None) -> list[list[dict[str, Any]]]:
    """``similar_items`` for many item indices at once (cosine of factors, or EASE rows).

    ``index``: an ANN index over the unit-length item factors (``ann.build(ann.unit_rows(...))``),
    which the batch job builds once for a catalog above ANN_MIN_ITEMS.
    """
    items = np.asarray(items, dtype=np.int64)
    ids = model.item_ids
    if model.kind == "ease":
        out = []
        for i in items.tolist():
            sims = model.item_factors[i].astype(np.float64).copy()
            sims[i] = -np.inf
            out.append([{"product_id": ids[j], "score": float(sims[j])} for j in top_k(sims, n).tolist()])
        return out
    import scipy.sparse as sp
    from implicit.cpu.topk import topk

    kk = min(n, len(ids) - 1)
    if kk <= 0:
        return [[] for _ in items]
    if index is not None:
        top, sims = ann.search(index, index.item_factors[items], kk, items[:, None])
        return [[{"product_id": ids[j], "score": float(s)} for j, s in zip(t.tolist(), v.tolist()) if j >= 0]
                for t, v in zip(top, sims)]
    unit = ann.unit_rows(model.item_factors)
    self_filter = sp.csr_matrix((np.ones(items.size, np.float32), items, np.arange(items.size + 1)),
                                shape=(items.size, len(ids)))
    top, sims = topk(unit, unit[items], kk, filter_query_items=self_filter, num_threads=0)
    return [[{"product_id": ids[j], "score": float(s)} for j, s in zip(t.tolist(), v.tolist())]
            for t, v in zip(top, sims)]
