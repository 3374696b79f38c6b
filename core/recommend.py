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

from typing import Any

import numpy as np

from core.artifacts import Model


def confidence(model: Model, ratings: np.ndarray) -> np.ndarray:
    """Confidence weights as the trainer defined them (stored in the model's params)."""
    alpha = float(model.params.get("alpha", 1.0))
    if model.params.get("weight", "binary") == "rating":
        return 1.0 + alpha * ratings
    return 1.0 + alpha * np.ones_like(ratings)


def _system(model: Model, rated: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The user's normal equations (A, b) and the rated items' rows, or None if none are known."""
    known = [(model.item_index[p], r) for p, r in rated.items() if p in model.item_index]
    if not known:
        return None
    idx = np.fromiter((i for i, _ in known), dtype=np.int64, count=len(known))
    r = np.fromiter((v for _, v in known), dtype=np.float64, count=len(known))
    y = model.item_factors[idx].astype(np.float64)
    reg = float(model.params.get("reg", 0.1))
    eye = np.eye(model.rank)
    if model.params.get("kind", "ials") == "explicit":
        scale = len(idx) if model.params.get("reg_scaling") == "count" else 1
        a = y.T @ y + reg * scale * eye
        weights = r
    else:
        c = confidence(model, r)
        a = model.gram + (y.T * (c - 1.0)) @ y + reg * eye
        weights = c
    return a, weights, idx


def fold_in(model: Model, rated: dict[str, float]) -> np.ndarray | None:
    """The user's latent vector from their ratings, or None if they rated nothing the model knows."""
    system = _system(model, rated)
    if system is None:
        return None
    a, weights, idx = system
    y = model.item_factors[idx].astype(np.float64)
    return np.linalg.solve(a, y.T @ weights)


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, n - 1)[:n]
    return top[np.argsort(-scores[top], kind="stable")]


def recommend_ease(model: Model, rated: dict[str, float], n: int = 20) -> list[dict[str, Any]]:
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
    top = _top(scores, n)
    best = rows[:, top].argmax(axis=0)
    return [{"product_id": model.item_ids[i], "score": float(scores[i]), "because": model.item_ids[int(idx[b])]}
            for i, b in zip(top.tolist(), best.tolist())]


def recommend(model: Model, rated: dict[str, float], n: int = 20) -> list[dict[str, Any]]:
    """Top-``n`` unrated items with score and reason; empty if the user cannot be folded in."""
    if model.kind == "ease":
        return recommend_ease(model, rated, n)
    system = _system(model, rated)
    if system is None:
        return []
    a, weights, idx = system
    y_rated = model.item_factors[idx].astype(np.float64)
    x = np.linalg.solve(a, y_rated.T @ weights)
    scores = model.item_factors @ x.astype(np.float32)
    scores[idx] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    if n <= 0:
        return []
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.argsort(-scores[top])]
    # contribution of rated item j to the score of item i: w_j * y_iᵀ A⁻¹ y_j
    contrib = (model.item_factors[top].astype(np.float64) @ np.linalg.solve(a, y_rated.T)) * weights
    best = contrib.argmax(axis=1)
    return [
        {"product_id": model.item_ids[i], "score": float(scores[i]),
         "because": model.item_ids[int(idx[b])]}
        for i, b in zip(top.tolist(), best.tolist())
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
        sims[i] = -np.inf
        return [{"product_id": model.item_ids[j], "score": float(sims[j])} for j in _top(sims, n).tolist()]
    norms = np.linalg.norm(model.item_factors, axis=1) + 1e-12
    sims = (model.item_factors @ model.item_factors[i]) / (norms * norms[i])
    sims[i] = -np.inf
    n = min(n, len(sims) - 1)
    if n <= 0:
        return []
    top = np.argpartition(-sims, n - 1)[:n]
    top = top[np.argsort(-sims[top])]
    return [{"product_id": model.item_ids[j], "score": float(sims[j])} for j in top.tolist()]
