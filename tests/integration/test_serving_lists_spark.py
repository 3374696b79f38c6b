"""Engine spark's serving lists, computed and written by the executors (serving_lists_spark.py):
the same lists as the driver's write_serving_lists and as an exact top-N from the same factors,
loaded by publish from the folder of part files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from core import ann, artifacts, mongo, recommend, shopper_controls, storage
from core.settings import get_settings

N = 5


def _docs(path) -> dict[str, list]:
    """{_id: items} of a JSON lines file or of a folder of Spark part files."""
    docs = list(artifacts.serving_list_docs(path))
    out = {d["_id"]: d["items"] for d in docs}
    assert len(out) == len(docs), "a user or item listed twice"
    return out


@pytest.fixture
def own_artifacts(monkeypatch, tmp_path):
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _data(seed: int, n_users: int = 80, n_items: int = 50):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < np.linspace(0.04, 0.5, n_users)[:, None]
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # everyone has a pair
    return rng, sp.csr_matrix(dense.astype(np.float32)), [f"u{u:03d}" for u in range(n_users)], \
        [f"p{i:03d}" for i in range(n_items)]


def _pairs(spark, x: sp.csr_matrix, user_ids: list[str]):
    coo = x.tocoo()
    rows = [(user_ids[u], int(i)) for u, i in zip(coo.row.tolist(), coo.col.tolist())]
    rows += rows[:7]  # a pair seen twice (two reviews) counts once, as in the driver's binary matrix
    return spark.createDataFrame(rows, "user_id string, iid int")


@pytest.mark.parametrize("with_ann", [False, True], ids=["exact", "ann"])
def test_executor_lists_match_the_driver_and_exact_top_n(spark, mongo_db, own_artifacts, monkeypatch, with_ann):
    from spark_jobs.publish import load_serving_lists
    from spark_jobs.serving_lists import write_serving_lists
    from spark_jobs.serving_lists_spark import COSINE_FILE, write_serving_lists_spark

    monkeypatch.setattr(ann, "ANN_MIN_ITEMS", 10 if with_ann else 10 ** 9)
    rng, x, user_ids, item_ids = _data(5 if with_ann else 3)
    params = {"kind": "ials", "reg": 0.1, "alpha": 2.0, "weight": "binary"}
    version = artifacts.save_model(item_ids, rng.normal(size=(len(item_ids), 8)), params)
    model = artifacts.load_model(version)
    assert (model.ann is not None) == with_ann
    # a "not interested" product is left out, as the driver's lists do
    picky = user_ids[-1]
    hidden = recommend.recommend(model, {item_ids[i]: 1.0 for i in x[len(user_ids) - 1].indices}, N)[0]["product_id"]
    shopper_controls.change_exclusion(picky, hidden, hide=True, ts=1.0, db=mongo_db)
    d = artifacts.models_dir() / version

    out = write_serving_lists_spark(spark, version, _pairs(spark, x, user_ids).repartition(3), n=N, block=16)
    assert out == {"users_listed": len(user_ids), "users": len(user_ids), "items_listed": len(item_ids),
                   "items": len(item_ids), "written_by": "spark executors"}
    assert storage.exists(d / "topn.jsonl" / "_SUCCESS") and not storage.is_file(d / "topn.jsonl")
    assert storage.exists(d / COSINE_FILE) == with_ann
    spark_top, spark_similar = _docs(d / "topn.jsonl"), _docs(d / "similar.jsonl")

    # the driver's lists of the same version, written to another folder's files
    twin = artifacts.save_model(item_ids, model.item_factors, params)
    write_serving_lists(twin, x, user_ids, item_ids, n=N)
    driver_top = _docs(artifacts.models_dir() / twin / "topn.jsonl")
    driver_similar = _docs(artifacts.models_dir() / twin / "similar.jsonl")
    assert set(spark_top) == set(driver_top) == set(user_ids)
    for uid, items in spark_top.items():
        assert [(r["product_id"], r["because"]) for r in items] == \
            [(r["product_id"], r["because"]) for r in driver_top[uid]], uid
        assert [r["score"] for r in items] == pytest.approx([r["score"] for r in driver_top[uid]], rel=1e-5)
    assert set(spark_similar) == set(driver_similar) == set(item_ids)
    for pid in item_ids:
        assert [r["product_id"] for r in spark_similar[pid]] == [r["product_id"] for r in driver_similar[pid]], pid

    # exact top-N from the same factors: the worker's fold-in (recommend) with no ANN index, so
    # every unrated item is scored and the N best are kept
    exact_model = artifacts.load_model(version)
    exact_model.ann = None
    hits = total = 0
    for u, uid in enumerate(user_ids):
        seen = x[u].indices
        exact = [r["product_id"] for r in recommend.recommend(exact_model, {item_ids[i]: 1.0 for i in seen}, N,
                                                              exclude={hidden} if uid == picky else ())]
        got = [r["product_id"] for r in spark_top[uid]]
        assert len(got) == N and not {item_ids[i] for i in seen} & set(got), uid
        assert all(r["because"] in {item_ids[i] for i in seen} for r in spark_top[uid])
        if with_ann:
            hits, total = hits + len(set(got) & set(exact)), total + N
        else:
            assert got == exact, uid
    assert hidden not in {r["product_id"] for r in spark_top[picky]}
    if with_ann:
        assert hits / total >= 0.95
    for i, pid in enumerate(item_ids):
        assert [r["product_id"] for r in spark_similar[pid]][:3] == \
            [r["product_id"] for r in recommend.similar_items(model, pid, 10)][:3] or with_ann

    # publish loads the folder of parts into the version's collections
    loaded = load_serving_lists(version)
    assert loaded == {mongo.BATCH_RECOMMENDATIONS: len(user_ids), mongo.SIMILAR_ITEMS: len(item_ids)}


def test_executor_lists_keep_the_caps(spark, mongo_db, own_artifacts):
    from spark_jobs.serving_lists_spark import write_serving_lists_spark

    rng, x, user_ids, item_ids = _data(9)
    version = artifacts.save_model(item_ids, rng.normal(size=(len(item_ids), 6)),
                                   {"kind": "ials", "reg": 0.1, "alpha": 2.0, "weight": "binary"})
    out = write_serving_lists_spark(spark, version, _pairs(spark, x, user_ids), n=N, max_users=10, max_items=4)
    assert out["users_listed"] == 10 and out["items_listed"] == 4
    d = artifacts.models_dir() / version
    counts = np.diff(x.indptr)
    expected = sorted(np.lexsort((np.arange(counts.size), -counts))[:10].tolist())
    assert sorted(_docs(d / "topn.jsonl")) == [user_ids[u] for u in expected]
    by_item = np.asarray(x.sum(axis=0)).ravel()
    expected_items = sorted(np.lexsort((np.arange(by_item.size), -by_item))[:4].tolist())
    assert sorted(_docs(d / "similar.jsonl")) == [item_ids[i] for i in expected_items]


def test_publish_refuses_an_unfinished_folder_of_parts(own_artifacts, tmp_path):
    folder = tmp_path / "topn.jsonl"
    folder.mkdir()
    (folder / "part-00000.txt").write_text(json.dumps({"_id": "u", "items": []}) + "\n")
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        list(artifacts.serving_list_docs(folder))
    (folder / "_SUCCESS").write_text("")
    assert list(artifacts.serving_list_docs(folder)) == [{"_id": "u", "items": []}]
