"""publish's serving lists are reconciled: the files' lists = inserts the server acknowledged +
lists left out (empty ones, deleted accounts'), and a lost insert fails the publish."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pymongo.errors import BulkWriteError

from core import artifacts, mongo
from core.settings import get_settings
from spark_jobs.reconcile import Unbalanced


@pytest.fixture
def version(monkeypatch, tmp_path, mongo_db):
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    v = artifacts.save_model(["p1", "p2", "p3"], np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
                             {"kind": "ials", "reg": 0.1, "alpha": 2.0, "weight": "binary"})
    d = artifacts.models_dir() / v
    item = {"product_id": "p3", "score": 1.0, "because": "p1"}
    (d / "topn.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in [
        {"_id": "pub-u1", "items": [item]}, {"_id": "pub-u2", "items": [item]}, {"_id": "pub-u3", "items": []}]))
    (d / "similar.jsonl").write_text("".join(json.dumps({"_id": p, "items": [item]}) + "\n" for p in ("p1", "p2")))
    yield v
    monkeypatch.undo()
    get_settings.cache_clear()


def test_lists_are_acknowledged_or_left_out(version):
    from spark_jobs.publish import load_serving_lists

    assert load_serving_lists(version) == {mongo.BATCH_RECOMMENDATIONS: 2, mongo.SIMILAR_ITEMS: 2}
    db = mongo.get_db()
    assert db[mongo.per_version_name(mongo.BATCH_RECOMMENDATIONS, version)].count_documents({}) == 2


def test_a_lost_insert_fails_the_publish(version, monkeypatch):
    from spark_jobs.publish import load_serving_lists

    real_insert = mongo.insert_docs

    def lossy(collection, docs, *args, **kwargs):  # the server "acknowledges" one list fewer
        return real_insert(collection, list(docs)[1:], *args, **kwargs)

    monkeypatch.setattr(mongo, "insert_docs", lossy)
    with pytest.raises(Unbalanced, match="3 lists in the files, the server acknowledged 1 and 1 were left out"):
        load_serving_lists(version)


@pytest.mark.parametrize("threads", [1, 3])
def test_inserts_from_threads_are_all_acknowledged_and_errors_surface(mongo_db, threads):
    """Publish's lists go in from several threads: every batch counted once, a failed one raised."""
    name = f"insert_threads_{threads}"
    mongo_db.drop_collection(name)
    docs = ({"_id": f"u{k}", "items": [{"product_id": f"p{k % 7}", "score": 1.0}]} for k in range(1_003))
    assert mongo.insert_docs(name, docs, batch_size=50, db=mongo_db, threads=threads) == 1_003
    assert sorted(d["_id"] for d in mongo_db[name].find({}, {"_id": 1})) == sorted(f"u{k}" for k in range(1_003))
    again = ({"_id": f"u{k}"} for k in (5, 1_500, 1_501))  # one batch with an _id already there
    with pytest.raises(BulkWriteError):
        mongo.insert_docs(name, again, batch_size=2, db=mongo_db, threads=threads)
    mongo_db.drop_collection(name)
