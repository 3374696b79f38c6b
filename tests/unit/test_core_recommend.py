"""The online fold-in must agree with what ALS itself computes for a user.

The fold-in is checked through ``recommend``, what the workers and Celery fold a user in with (the
batch job's ``recommend_many`` is checked against it in test_recommend_many.py): its scores are the
item factors times the user's vector, and the scores of the 30-odd unrated items pin a vector of
rank 6, so a wrong vector cannot give the right scores.
"""
from __future__ import annotations

import numpy as np
import pytest

from core.artifacts import Model
from core.recommend import recommend, similar_items


def _model(kind: str = "ials", n_items: int = 40, rank: int = 6, seed: int = 0, **params) -> Model:
    rng = np.random.default_rng(seed)
    return Model(version="v-test", item_ids=[f"i{i}" for i in range(n_items)],
                 item_factors=rng.normal(size=(n_items, rank)).astype(np.float32),
                 params={"kind": kind, "reg": 0.5, "alpha": 4.0, "weight": "binary", **params})


def _implicit_vector(m: Model, rated: dict[str, float]) -> np.ndarray:
    """The user's iALS vector by brute force over all items: C = 1 + alpha on rated items, 1
    elsewhere, p = 1 on rated items (binary weights)."""
    y = m.item_factors.astype(np.float64)
    c = np.ones(len(m.item_ids))
    p = np.zeros(len(m.item_ids))
    for pid in rated:
        c[m.item_index[pid]] = 1 + m.params["alpha"]
        p[m.item_index[pid]] = 1
    return np.linalg.solve(y.T @ (c[:, None] * y) + m.params["reg"] * np.eye(m.rank), y.T @ (c * p))


def _assert_scores_are_of(m: Model, rated: dict[str, float], x: np.ndarray) -> None:
    """``recommend`` lists every unrated item, each scored y_i · x."""
    recs = recommend(m, rated, n=len(m.item_ids))
    assert {r["product_id"] for r in recs} == set(m.item_ids) - set(rated)
    got = np.array([r["score"] for r in recs])
    want = m.item_factors.astype(np.float64)[[m.item_index[r["product_id"]] for r in recs]] @ x
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the scores are float32


def test_implicit_fold_in_solves_the_weighted_normal_equations():
    m = _model()
    rated = {"i1": 5.0, "i7": 3.0, "i20": 4.0}
    _assert_scores_are_of(m, rated, _implicit_vector(m, rated))


def test_explicit_fold_in_with_count_scaled_regularisation():
    m = _model(kind="explicit", reg_scaling="count")
    rated = {"i2": 5.0, "i3": 1.0}
    y = m.item_factors[[2, 3]].astype(np.float64)
    expected = np.linalg.solve(y.T @ y + m.params["reg"] * 2 * np.eye(m.rank), y.T @ np.array([5.0, 1.0]))
    _assert_scores_are_of(m, rated, expected)


def test_recommend_excludes_rated_ranks_by_score_and_gives_a_rated_reason():
    m = _model()
    rated = {"i1": 5.0, "i7": 3.0}
    recs = recommend(m, rated, n=10)
    assert len(recs) == 10
    ids = [r["product_id"] for r in recs]
    assert not set(ids) & set(rated)
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    assert {r["because"] for r in recs} <= set(rated)
    brute = m.item_factors.astype(np.float64) @ _implicit_vector(m, rated)
    brute[[1, 7]] = -np.inf
    assert ids == [m.item_ids[i] for i in np.argsort(-brute)[:10]]


def test_unknown_items_cannot_fold_in_a_user():
    m = _model()
    assert recommend(m, {"not-in-model": 5.0}) == []


def test_n_larger_than_catalog_returns_every_unrated_item():
    m = _model(n_items=5)
    assert len(recommend(m, {"i0": 4.0}, n=50)) == 4


def test_similar_items_by_cosine():
    m = _model()
    m.item_factors[3] = m.item_factors[9] * 2.5  # same direction, different length
    sims = similar_items(m, "i9", n=3)
    assert sims[0]["product_id"] == "i3"
    assert sims[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert all(s["product_id"] != "i9" for s in sims)


@pytest.mark.parametrize("kind", ["ials", "explicit", "ease"])
def test_not_interested_items_are_never_recommended_and_the_rest_keeps_its_order(kind):
    from core.recommend import without_excluded

    m = _model(kind=kind)
    if kind == "ease":  # EASE weights are item x item
        m = Model(version="v-ease", item_ids=m.item_ids,
                  item_factors=np.random.default_rng(1).normal(size=(40, 40)).astype(np.float32), params={"kind": "ease"})
    rated = {"i1": 5.0, "i7": 3.0}
    full = [r["product_id"] for r in recommend(m, rated, n=10)]
    hidden = {full[0], full[3], "not-in-the-model"}
    got = [r["product_id"] for r in recommend(m, rated, n=10, exclude=hidden)]
    assert len(got) == 10 and not hidden & set(got)
    assert [p for p in full if p not in hidden] == got[:8]
    everything = [r["product_id"] for r in recommend(m, rated, n=100, exclude=hidden)]
    assert len(everything) == 40 - 2 - 2  # every item but the rated and the excluded ones
    assert [r["product_id"] for r in without_excluded(recommend(m, rated, n=10), hidden, 5)] == got[:5]


def test_top_k_orders_equal_scores_by_item_index_also_at_the_cut():
    from core.recommend import top_k

    scores = np.array([1.0, 3.0, 2.0, 3.0, -np.inf, 2.0, 3.0, 2.0, np.nan])
    assert top_k(scores, 5).tolist() == [1, 3, 6, 2, 5]  # the two 2.0s with the lowest indices
    assert top_k(scores, 100).tolist() == [1, 3, 6, 2, 5, 7, 0]  # -inf and NaN are never listed
    assert top_k(scores, 0).tolist() == []
    # a large array with many ties, whatever way argpartition moves them
    big = np.repeat(np.arange(50.0), 40)[np.random.default_rng(0).permutation(2000)]
    got = top_k(big, 70)
    want = np.lexsort((np.arange(2000), -big))[:70]
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("kind", ["ials", "explicit", "ease"])
def test_recommend_and_similar_items_break_ties_by_item_index(kind):
    """Items with identical factors tie: the lower index comes first and is the one kept at the cut."""
    m = _model(kind=kind, n_items=30)
    if kind == "ease":
        m = Model(version="v-ease", item_ids=m.item_ids,
                  item_factors=np.random.default_rng(1).normal(size=(30, 30)).astype(np.float32), params={"kind": "ease"})
        m.item_factors[:, [4, 11, 17, 25]] = m.item_factors[:, [4]]  # the same weight towards each of them
    else:
        m.item_factors[[11, 17, 25]] = m.item_factors[4]
    rated = {"i1": 5.0, "i7": 3.0}
    ids = [r["product_id"] for r in recommend(m, rated, n=30)]
    tied = [p for p in ids if p in {"i4", "i11", "i17", "i25"}]
    assert tied == ["i4", "i11", "i17", "i25"]
    at = ids.index("i4")
    assert [r["product_id"] for r in recommend(m, rated, n=at + 2)][at:] == ["i4", "i11"]
    sims = [s["product_id"] for s in similar_items(m, "i1", n=30)]
    assert [p for p in sims if p in {"i4", "i11", "i17", "i25"}] == ["i4", "i11", "i17", "i25"]


@pytest.mark.parametrize("size", [5, 1023, 1024, 1025, 10_000])
def test_top_k_of_long_arrays_is_the_sorted_definition(size):
    """The blocks' prefilter of long arrays lists what sorting every finite score would: ties by
    index, also where whole blocks are -inf or NaN or nearly every score is excluded."""
    from core.recommend import top_k

    rng = np.random.default_rng(size)
    for trial in range(40):
        scores = rng.integers(0, 1 + trial * 50, size).astype(np.float32)  # few distinct values: ties
        scores[rng.random(size) < rng.choice([0.0, 0.1, 0.97, 0.999])] = -np.inf
        scores[rng.random(size) < 0.01] = np.nan
        if size >= 1024 and trial % 5 == 0:
            scores[128:640] = -np.inf if trial % 10 else np.nan  # whole blocks with no maximum
        finite = np.flatnonzero(np.isfinite(scores))
        want = finite[np.lexsort((finite, -scores[finite]))]
        for n in (1, 20, 100, size):
            assert top_k(scores, n).tolist() == want[:n].tolist(), (trial, n)
