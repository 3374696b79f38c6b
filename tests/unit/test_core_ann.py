"""core.ann: approximate top-k by inner product (HNSW) against exact scoring, exclusions, save/load,
and the model artifacts that carry the index above ANN_MIN_ITEMS."""
from __future__ import annotations

import numpy as np
import pytest

from core import ann, artifacts
from core.recommend import recommend, recommend_many, similar_many
from core.settings import get_settings


def factors(n_items: int = 20_000, rank: int = 32, seed: int = 3) -> np.ndarray:
    """Random factors with the shape of trained ones: items around a few hundred tastes, norms skewed."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(300, rank))
    y = centers[rng.integers(0, 300, n_items)] + 0.5 * rng.normal(size=(n_items, rank))
    return (y * rng.lognormal(0.0, 0.5, n_items)[:, None] * 0.1).astype(np.float32)


def exact_top(y: np.ndarray, q: np.ndarray, k: int, excluded=()) -> list[int]:
    scores = y @ q
    scores[list(excluded)] = -np.inf
    return np.argsort(-scores, kind="stable")[:k].tolist()


def test_recall_at_20_against_exact_is_at_least_095():
    y = factors()
    rng = np.random.default_rng(5)
    queries = (y[rng.integers(0, y.shape[0], 500)] * 10 + rng.normal(size=(500, y.shape[1]))).astype(np.float32)
    index = ann.build(y)
    got, scores = ann.search(index, queries, 20)
    recall = np.mean([len(set(g.tolist()) & set(exact_top(y, q, 20))) / 20 for g, q in zip(got, queries)])
    assert recall >= 0.95, recall
    # the scores are the exact inner products, best first
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ y.T, got, axis=1), rtol=1e-4, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_excluded_items_never_come_back_and_the_rest_still_match_exact():
    y = factors(5_000)
    rng = np.random.default_rng(6)
    queries = rng.normal(size=(50, y.shape[1])).astype(np.float32)
    # exclude each query's own exact top-10 (the hardest case: the best candidates are all excluded)
    # and, for one query, more than MAX_EXCLUDED items (the exact fallback)
    exclude = [np.array(exact_top(y, q, 10), np.int64) for q in queries]
    exclude[0] = rng.choice(y.shape[0], ann.MAX_EXCLUDED + 10, replace=False)
    index = ann.build(y)
    got, _ = ann.search(index, queries, 20, exclude)
    hits = 0
    for g, q, e in zip(got, queries, exclude):
        assert not set(g.tolist()) & set(e.tolist())
        assert (g >= 0).all()
        hits += len(set(g.tolist()) & set(exact_top(y, q, 20, e)))
    assert hits / (20 * len(queries)) >= 0.95
    assert got[0].tolist() == exact_top(y, queries[0], 20, exclude[0])


def test_a_nearly_all_excluded_catalog_pads_with_minus_one():
    y = factors(200, rank=8)
    index = ann.build(y)
    got, scores = ann.search(index, y[:1] * 3, 20, [np.arange(195)])
    assert sorted(got[0][:5].tolist()) == [195, 196, 197, 198, 199]
    assert (got[0][5:] == -1).all() and np.isneginf(scores[0][5:]).all()


def test_save_and_load_give_the_same_answers(tmp_path):
    y = factors(3_000)
    index = ann.build(y)
    q = np.random.default_rng(1).normal(size=(30, y.shape[1])).astype(np.float32)
    ann.save(index, tmp_path / ann.FILE)
    again = ann.load(tmp_path / ann.FILE, y)
    np.testing.assert_array_equal(ann.search(index, q, 20)[0], ann.search(again, q, 20)[0])
    with pytest.raises(ValueError, match="ANN index"):
        ann.load(tmp_path / ann.FILE, y[:100])


def test_models_above_the_threshold_carry_an_index_and_recommend_through_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        monkeypatch.setattr(ann, "ANN_MIN_ITEMS", 2_000)
        y = factors(4_000, rank=16)
        ids = [f"p{i}" for i in range(y.shape[0])]
        params = {"kind": "ials", "reg": 0.1, "alpha": 9.0, "weight": "binary"}
        small = artifacts.load_model(artifacts.save_model(ids[:1_000], y[:1_000], params))
        assert small.ann is None and not (artifacts.models_dir() / small.version / ann.FILE).exists()
        big = artifacts.load_model(artifacts.save_model(ids, y, params))
        assert big.ann is not None and (artifacts.models_dir() / big.version / ann.FILE).exists()
        ease = artifacts.load_model(artifacts.save_model(ids[:2_500], np.zeros((2_500, 2_500)), {"kind": "ease"}))
        assert ease.ann is None

        exact = artifacts.load_model(big.version)
        exact.ann = None
        rng = np.random.default_rng(2)
        same = 0
        import scipy.sparse as sp

        histories = [rng.choice(4_000, 5, replace=False) for _ in range(100)]
        rated = sp.csr_matrix((np.ones(500), np.concatenate(histories), np.arange(0, 501, 5)), shape=(100, 4_000))
        by_ann, by_exact = recommend_many(big, rated, 20), recommend_many(exact, rated, 20)
        for h, a, e in zip(histories, by_ann, by_exact):
            one = recommend(big, {ids[i]: 1.0 for i in h}, 20, exclude=[e[0]["product_id"]])
            assert e[0]["product_id"] not in {r["product_id"] for r in one}
            assert not {ids[i] for i in h} & {r["product_id"] for r in a + one}
            plain = recommend(big, {ids[i]: 1.0 for i in h}, 20)  # the worker's path: the same index
            assert [r["product_id"] for r in plain] == [r["product_id"] for r in a]
            same += len({r["product_id"] for r in a} & {r["product_id"] for r in e})
        assert same / (100 * 20) >= 0.95

        unit = ann.build(ann.unit_rows(big.item_factors))
        items = np.arange(50)
        for a, e in zip(similar_many(big, items, 10, index=unit), similar_many(exact, items, 10)):
            assert len({r["product_id"] for r in a} & {r["product_id"] for r in e}) >= 8
    finally:
        get_settings.cache_clear()


def test_a_model_saved_with_an_index_does_not_load_without_it(tmp_path, monkeypatch):
    """A folder copied without its index file would load as exact scoring for good (the worker
    keeps a version it loaded): it fails to load instead, and the worker tries again later."""
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        monkeypatch.setattr(ann, "ANN_MIN_ITEMS", 500)
        y = factors(1_000, rank=8)
        version = artifacts.save_model([f"p{i}" for i in range(1_000)], y, {"kind": "ials", "reg": 0.1})
        assert artifacts.load_model(version).ann is not None
        (artifacts.models_dir() / version / ann.FILE).unlink()
        with pytest.raises(FileNotFoundError, match=ann.FILE):
            artifacts.load_model(version)
    finally:
        get_settings.cache_clear()
