"""The publish gate, the switch of the serving lists and loading broken models (issue 11, item 14).

Real MongoDB (a database of this module's own) and real model folders; publish() runs as the
DAG runs it. What a reader sees is read through the same ``core.mongo`` functions the site uses.
"""
from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import pytest
import scipy.sparse as sp

from core import artifacts, mongo, stored_lists
from realtime_support import own_database

pytestmark = pytest.mark.integration

ITEMS = [f"PG{i:03d}" for i in range(40)]
USERS = [f"PGU{i:03d}" for i in range(6)]


@pytest.fixture
def own(monkeypatch, tmp_path, settings, mongo_db, kafka_topics):
    """This test's own artifacts folder and MongoDB database."""
    yield from own_database(monkeypatch, settings.mongo_db, "publish", ARTIFACTS_DIR=str(tmp_path / "artifacts"))


def _version(metrics: dict, seed: int = 0, lists: bool = True) -> str:
    """A saved (unpublished) model version with its serving lists, as train writes them."""
    rng = np.random.default_rng(seed)
    version = artifacts.save_model(ITEMS, rng.normal(size=(len(ITEMS), 4)).astype(np.float32),
                                   {"kind": "ials", "reg": 0.1, "alpha": 10.0, "weight": "binary"}, metrics=metrics)
    if lists:
        d = artifacts.models_dir() / version
        with open(d / "topn.jsonl", "w") as f:
            for u in USERS:
                f.write(json.dumps({"_id": u, "items": [{"product_id": ITEMS[seed % 40], "score": 1.0,
                                                         "because": None}]}) + "\n")
        with open(d / "similar.jsonl", "w") as f:
            for p in ITEMS:
                f.write(json.dumps({"_id": p, "items": [{"product_id": ITEMS[(seed + 1) % 40], "score": 0.5}]}) + "\n")
    return version


def _val(ours: float, pop: float, current: str | None = None, current_ndcg: float | None = None) -> dict:
    val = {"ndcg@10": ours, "popularity_ndcg@10": pop}
    if current is not None:
        val["current"] = {"version": current, "ndcg@10": current_ndcg, "users": 100}
    return {"validation": val}


# --- the gate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("metrics", [_val(float("nan"), 0.01), _val(0.05, float("nan")), _val(float("inf"), 0.01)])
def test_a_nan_metric_fails_the_gate(own, metrics):
    from spark_jobs.publish import publish

    version = _version(metrics)
    out = publish(version)
    assert out["status"] == "rejected", out
    assert artifacts.current_version() is None


def test_the_gate_compares_both_versions_on_the_new_runs_split(own):
    from spark_jobs.publish import publish

    first = _version(_val(0.50, 0.01), seed=1)  # a high number, but on its own (older) split
    assert publish(first, force=True)["status"] == "published"

    # Scored on the new run's split, the current version does worse than the candidate: publish,
    # although the candidate's number is below the one the current version once got elsewhere.
    better = _version(_val(0.20, 0.05, current=first, current_ndcg=0.10), seed=2)
    out = publish(better)
    assert out["status"] == "published", out
    assert artifacts.current_version() == better

    # The current version does better than the candidate on the candidate's own split: keep it,
    # although the candidate's number equals the one the current version got on its split.
    worse = _version(_val(0.20, 0.05, current=better, current_ndcg=0.30), seed=3)
    out = publish(worse)
    assert out["status"] == "rejected" and "current" in out["decision"], out
    assert artifacts.current_version() == better

    # Not scored against the version that is current now (trained before it was published, or
    # NaN): no like-for-like comparison, no publish.
    for metrics in (_val(0.90, 0.05), _val(0.90, 0.05, current=first, current_ndcg=0.01),
                    _val(0.90, 0.05, current=better, current_ndcg=float("nan"))):
        out = publish(_version(metrics, seed=4))
        assert out["status"] == "rejected", (metrics, out)
        assert artifacts.current_version() == better


def test_train_scores_the_current_version_by_folding_in_the_validation_users(own):
    """The current version's validation NDCG@10 on a new split equals what the worker's fold-in
    (``recommend.recommend``, one user at a time) recommends those users, measured by hand."""
    from core import recommend
    from spark_jobs.train import current_on_validation

    current = _version({}, seed=5, lists=False)
    artifacts.publish(current)
    model = artifacts.load_model(current)
    # The new run knows two items the current model never saw, in another column order.
    new_items = ["NEW1"] + ITEMS[::-1] + ["NEW2"]
    rng = np.random.default_rng(7)
    rows, cols, val = [], [], {}
    for u in range(60):
        seen = rng.choice(len(new_items), size=6, replace=False)
        rows += [u] * 5
        cols += seen[:5].tolist()
        val[u] = [int(seen[5])]
    x_train = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(60, len(new_items)))

    got = current_on_validation(x_train, val, new_items, k=10)

    discounts = 1.0 / np.log2(np.arange(2, 12))
    total = 0.0
    for u, held in val.items():
        history = {new_items[j]: 1.0 for j in x_train[u].indices if new_items[j] in model.item_index}
        top = [r["product_id"] for r in recommend.recommend(model, history, n=10)] if history else []
        total += sum(d for d, p in zip(discounts, top) if p == new_items[held[0]])
    assert got["version"] == current and got["users"] == 60
    assert math.isclose(got["ndcg@10"], total / 60, rel_tol=1e-6, abs_tol=1e-9), (got, total / 60)
    assert got["ndcg@10"] > 0, "no hit at all: the test data does not tell right from wrong"


# --- the switch -------------------------------------------------------------------------------

def _killed_in(monkeypatch, module, name: str, version: str) -> None:
    """publish(version) dies in ``module.name``, as a process killed there: nothing after it runs."""
    from spark_jobs import publish as job

    def killed(*args, **kwargs):
        raise KeyboardInterrupt(f"killed in {name}")

    with monkeypatch.context() as mp:
        mp.setattr(module, name, killed)
        with pytest.raises(KeyboardInterrupt):
            job.publish(version)


def test_a_crash_before_current_moves_leaves_the_old_lists(own, monkeypatch):
    from spark_jobs import publish as job

    old = _version(_val(0.1, 0.01), seed=11)
    assert job.publish(old, force=True)["status"] == "published"
    assert stored_lists.get_recommendations(USERS[0])["model_version"] == old
    old_similar = stored_lists.get_similar_items(ITEMS[0])
    assert old_similar[0]["product_id"] == ITEMS[12]

    new = _version(_val(0.2, 0.01, current=old, current_ndcg=0.1), seed=21)

    _killed_in(monkeypatch, job.artifacts, "publish", new)  # the machine died before CURRENT moved
    assert artifacts.current_version() == old
    assert stored_lists.get_recommendations(USERS[0])["model_version"] == old, "a reader sees the new version's lists"
    assert stored_lists.get_similar_items(ITEMS[0]) == old_similar, "a reader sees the new version's similar items"

    # The re-run finishes the job: the new lists and the model switch together.
    assert job.publish(new)["status"] == "published"
    assert stored_lists.get_recommendations(USERS[0])["model_version"] == new
    assert stored_lists.get_similar_items(ITEMS[0])[0]["product_id"] == ITEMS[22]
    assert mongo.get_db()[mongo.SIMILAR_ITEMS].count_documents({}) == len(ITEMS)
    # A list a worker wrote after the publish is newer than the batch one and wins.
    stored_lists.write_recommendations(USERS[1], [{"product_id": ITEMS[3], "score": 1.0}], new, source_event_id="e1")
    assert stored_lists.get_recommendations(USERS[1])["source_event_id"] == "e1"


def test_a_crash_after_current_moves_is_finished_by_the_rerun(own, monkeypatch):
    """Killed between the CURRENT switch and its records (review-batch #8): the retry or resume
    finds CURRENT naming the version already and must finish the job, not report "unchanged"."""
    from spark_jobs import publish as job

    def versions_with_lists() -> set[str]:
        names = mongo.get_db().list_collection_names()
        return {v for v in (oldest, old, new) if mongo.per_version_name(mongo.BATCH_RECOMMENDATIONS, v) in names}

    oldest = _version(_val(0.1, 0.01), seed=12)
    assert job.publish(oldest, force=True)["status"] == "published"
    old = _version(_val(0.2, 0.01, current=oldest, current_ndcg=0.1), seed=13)
    assert job.publish(old)["status"] == "published"
    new = _version(_val(0.3, 0.01, current=old, current_ndcg=0.2), seed=14)

    _killed_in(monkeypatch, job.stored_lists, "drop_serving_lists", new)  # after the CURRENT switch
    assert artifacts.current_version() == new
    assert versions_with_lists() == {oldest, old, new}

    out = job.publish(new)  # the retry
    assert (out["status"], out.get("replaced")) == ("published", old), out
    record = mongo.get_db()[mongo.MODEL_VERSIONS].find_one({"_id": new})
    assert record["published"] is True and record["replaced"] == old
    assert versions_with_lists() == {old, new}, "as after an uninterrupted publish: the replaced version's lists stay"

    again = job.publish(new)  # a plain re-publish of the current version
    assert again["status"] == "unchanged", again
    assert versions_with_lists() == {old, new}
    assert stored_lists.get_recommendations(USERS[0])["model_version"] == new


def test_a_new_database_gets_the_current_versions_lists_from_a_rerun(own, monkeypatch):
    """Artifacts kept, MongoDB new (a restore, another server, a bench's fresh database): CURRENT
    names the version already, and the publish must load its lists, not call it "unchanged"."""
    from realtime_support import reset_core_caches
    from spark_jobs import publish as job

    version = _version(_val(0.1, 0.01), seed=15)
    assert job.publish(version, force=True)["status"] == "published"

    fresh = f"{mongo.get_db().name}_new"[:60]
    monkeypatch.setenv("MONGO_DB", fresh)
    reset_core_caches()
    try:
        assert stored_lists.get_recommendations(USERS[0]) is None
        out = job.publish(version)
        assert out["status"] == "published", out
        assert stored_lists.get_recommendations(USERS[0])["model_version"] == version
        assert stored_lists.get_similar_items(ITEMS[0])[0]["product_id"] == ITEMS[16]
        assert mongo.get_db()[mongo.MODEL_VERSIONS].find_one({"_id": version})["published"] is True
        assert job.publish(version)["status"] == "unchanged", "its lists are there now"
        # the same with the records kept and the lists gone (a partial restore)
        mongo.get_db().drop_collection(mongo.per_version_name(mongo.SIMILAR_ITEMS, version))
        mongo.forget_pointers()
        assert job.publish(version)["status"] == "published"
        assert stored_lists.get_similar_items(ITEMS[0])[0]["product_id"] == ITEMS[16]
    finally:
        mongo.get_client().drop_database(fresh)


def test_an_account_deleted_while_publishing_has_no_list_in_the_new_version(own, monkeypatch):
    """The lists are read with the deleted accounts of their start; an account deleted after that
    is erased by the site from the lists it reads then (the replaced version's, also for a moment
    after the switch, by a process whose CURRENT is not yet re-read). Its list in the new version
    must go too, or the new model serves a deleted account's recommendations."""
    from core import erasure, popular
    from spark_jobs import publish as job

    old = _version(_val(0.1, 0.01), seed=15)
    assert job.publish(old, force=True)["status"] == "published"
    new = _version(_val(0.2, 0.01, current=old, current_ndcg=0.1), seed=16)
    during, after = USERS[2], USERS[3]
    real_refresh, real_drop = popular.refresh_all, stored_lists.drop_serving_lists

    def deleted_while_the_lists_are_written(*args, **kwargs):
        erasure.record_deleted_user(during)  # the site's "delete my account"
        erasure.delete_user_data(during)
        return real_refresh(*args, **kwargs)

    def deleted_by_a_site_process_with_the_old_current(*args, **kwargs):
        erasure.record_deleted_user(after)
        mongo.get_db()[mongo.per_version_name(mongo.BATCH_RECOMMENDATIONS, old)].delete_one({"_id": after})
        return real_drop(*args, **kwargs)

    monkeypatch.setattr(popular, "refresh_all", deleted_while_the_lists_are_written)
    monkeypatch.setattr(stored_lists, "drop_serving_lists", deleted_by_a_site_process_with_the_old_current)
    out = job.publish(new)
    assert out["status"] == "published", out
    lists = mongo.get_db()[mongo.per_version_name(mongo.BATCH_RECOMMENDATIONS, new)]
    assert sorted(d["_id"] for d in lists.find({}, {"_id": 1})) == sorted(set(USERS) - {during, after})
    assert stored_lists.get_recommendations(during) is None and stored_lists.get_recommendations(after) is None
    assert out["loaded"]["lists_of_deleted_accounts"] == 2, out
    assert stored_lists.get_recommendations(USERS[0])["model_version"] == new


# --- loading broken versions ------------------------------------------------------------------

def _broken(kind: str) -> str:
    version = _version({"validation": {}}, seed=31, lists=False)
    d = artifacts.models_dir() / version
    if kind == "empty npy":  # a copy that created the file but wrote nothing yet
        (d / "item_factors.npy").write_bytes(b"")
    elif kind == "truncated npy":
        data = (d / "item_factors.npy").read_bytes()
        (d / "item_factors.npy").write_bytes(data[: len(data) // 2])
    elif kind == "ids and factors disagree":
        (d / "item_ids.json").write_text(json.dumps(ITEMS[:10]))
    elif kind == "metrics half written":
        (d / "metrics.json").write_text('{"test": {"ndcg@10": 0.')
    elif kind == "no params":
        (d / "params.json").unlink()
    return version


@pytest.mark.parametrize("kind", ["empty npy", "truncated npy", "ids and factors disagree", "metrics half written",
                                  "no params"])
def test_the_worker_keeps_its_model_when_a_version_cannot_be_loaded(own, kind, caplog):
    from kafka_workers.model_holder import ModelHolder

    good = _version({}, seed=30, lists=False)
    artifacts.publish(good)
    holder = ModelHolder()
    assert holder.refresh(force=True) and holder.version == good
    broken = _broken(kind)
    artifacts.publish(broken)
    with caplog.at_level(logging.WARNING, logger="kafka_workers.model_holder"):
        assert holder.refresh(force=True) is False
    assert holder.version == good
    assert broken in caplog.text, "the failed load was not logged"


@pytest.mark.parametrize("kind", ["empty npy", "metrics half written", "no metrics", "metrics of another shape"])
def test_the_dashboard_survives_a_half_copied_version(own, kind, client, site_cache, db):
    version = _broken(kind if kind in ("empty npy", "metrics half written") else "")
    d = artifacts.models_dir() / version
    if kind == "no metrics":
        (d / "metrics.json").unlink()
    elif kind == "metrics of another shape":
        (d / "metrics.json").write_text(json.dumps({"test": [1, 2], "baselines": {"popularity": None, "x": 3},
                                                    "engine": {"a": 1}}))
    artifacts.publish(version)
    response = client.get("/dashboard/")
    assert response.status_code == 200, response.content[:500]
    assert version in response.content.decode()


def test_collection_names_are_resolved_once_per_refresh_and_lists_once_per_version(own, monkeypatch):
    """physical_name reads the pointers and CURRENT once per POINTER_TTL_S for every collection,
    looks a version's lists up once while it is current, and follows a publish."""
    from pymongo.database import Database

    from spark_jobs import publish as job

    old = _version(_val(0.1, 0.01), seed=11)
    assert job.publish(old, force=True)["status"] == "published"
    new = _version(_val(0.2, 0.01, current=old, current_ndcg=0.1), seed=21)
    pointer_reads, listings = [0], [0]
    raw, listed = mongo.raw_collection, Database.list_collection_names

    def counting_raw(db, name):
        pointer_reads[0] += name == mongo.POINTERS
        return raw(db, name)

    def counting_list(self, *args, **kwargs):
        listings[0] += 1
        return listed(self, *args, **kwargs)

    monkeypatch.setattr(mongo, "raw_collection", counting_raw)
    monkeypatch.setattr(Database, "list_collection_names", counting_list)
    monkeypatch.setattr(mongo, "POINTER_TTL_S", 0.05)
    mongo.forget_pointers()
    db, names = mongo.get_db(), sorted(mongo.RELOADED | mongo.PER_MODEL_VERSION)
    start, calls = time.monotonic(), 0
    while time.monotonic() - start < 0.6:
        for name in names:
            mongo.physical_name(db, name)
            calls += 1
    refreshes = (time.monotonic() - start) / 0.05 + 2
    assert calls > 100 and pointer_reads[0] <= refreshes, (calls, pointer_reads[0], refreshes)
    assert listings[0] == len(mongo.PER_MODEL_VERSION), "a version's lists were looked up again"
    assert mongo.physical_name(db, mongo.SIMILAR_ITEMS) == mongo.per_version_name(mongo.SIMILAR_ITEMS, old)

    # Another process publishes (this one's cache is not told): the next refresh follows CURRENT.
    monkeypatch.setattr(mongo, "forget_pointers", lambda: None)
    assert job.publish(new)["status"] == "published"
    time.sleep(0.06)
    assert mongo.physical_name(db, mongo.SIMILAR_ITEMS) == mongo.per_version_name(mongo.SIMILAR_ITEMS, new)
    assert stored_lists.get_similar_items(ITEMS[0])[0]["product_id"] == ITEMS[22]


def test_the_publish_job_deletes_versions_beyond_the_kept_ones(own, monkeypatch):
    """Every train writes a version; the job keeps MODEL_VERSIONS_KEPT of them besides the current
    one and the one it replaced (a rollback target), and says which it deleted in its record."""
    from spark_jobs import publish as job

    monkeypatch.setattr(artifacts, "VERSIONS_KEPT", 2)
    first = _version(_val(0.5, 0.01), seed=1)
    assert job.main(["--run-id", "it-prune-1", "--version", first, "--force"]) == 0
    rejected = [_version(_val(0.1, 0.5), seed=s) for s in (2, 3, 4)]  # below popularity: rejected
    for i, v in enumerate(rejected):
        assert job.main(["--run-id", f"it-prune-r{i}", "--version", v]) == 0
    assert artifacts.current_version() == first
    left = {p.name for p in artifacts.models_dir().iterdir()} - {artifacts.CURRENT_FILE}
    assert left == {first, *rejected[-2:]}  # the oldest rejected one went
    from core.runs import read_record

    # the job that evaluated rejected[0] kept it (its own version); the next one deleted it
    assert [read_record(f"it-prune-r{i}", "publish")["pruned"] for i in range(3)] == [[], [rejected[0]], []]
    # its record stays, with its metrics, marked pruned; the others are not marked
    records = {d["_id"]: d for d in mongo.get_db()[mongo.MODEL_VERSIONS].find({})}
    assert records[rejected[0]]["pruned_at"] > 0 and records[rejected[0]]["decision"].startswith("kept")
    assert [v for v, d in records.items() if "pruned_at" in d] == [rejected[0]]


def test_rejected_publishes_keep_the_version_the_current_one_replaced(own, monkeypatch):
    """The rollback target is kept by every publish, not only by the one that published: after
    MODEL_VERSIONS_KEPT rejected trainings it was pruned, as the record of a rejected publish
    has no ``replaced`` of its own."""
    from spark_jobs import publish as job

    monkeypatch.setattr(artifacts, "VERSIONS_KEPT", 2)
    first, second = _version(_val(0.5, 0.01), seed=1), _version(_val(0.6, 0.01), seed=2)
    assert job.main(["--run-id", "it-keep-1", "--version", first, "--force"]) == 0
    assert job.main(["--run-id", "it-keep-2", "--version", second, "--force"]) == 0
    rejected = []
    for i in range(4):  # a daily train each, below popularity: rejected
        rejected.append(_version(_val(0.1, 0.5), seed=3 + i))
        assert job.main(["--run-id", f"it-keep-r{i}", "--version", rejected[-1]]) == 0
    assert artifacts.current_version() == second
    left = {p.name for p in artifacts.models_dir().iterdir()} - {artifacts.CURRENT_FILE}
    assert left == {first, second, *rejected[-2:]}


def test_a_pruned_version_is_refused_saying_so_and_nothing_changes(own):
    """A rollback (``publish --version X --force``, the admin's make current) to a version whose
    folder publish pruned fails before anything changes, with a message that says it was pruned."""
    from spark_jobs import publish as job

    current = _version(_val(0.5, 0.01), seed=1)
    job.publish(current, force=True)
    gone = _version(_val(0.5, 0.01), seed=2)
    mongo.record_model_version(gone, {"published": False, "metrics": {"validation": {"ndcg@10": 0.5}}})
    assert artifacts.prune_versions(protect={current}, keep=0) == [gone]
    mongo.record_pruned_versions([gone])
    with pytest.raises(job.VersionGone, match=f"{gone} was pruned at .* cannot be made current"):
        job.publish(gone, force=True)
    assert artifacts.current_version() == current
    assert mongo.get_db()[mongo.MODEL_VERSIONS].find_one({"_id": gone})["published"] is False


def test_versions_pruned_before_publish_marked_them_are_marked_by_the_next_prune(own):
    """Before 17b2c23 publish deleted old version folders without marking their records: the admin
    listed them as if they could be made current. The next publish's prune marks every recorded
    version whose folder is gone (metrics kept), and no version that still has its folder."""
    from spark_jobs import publish as job

    old = "20250101T000000000000-00000001"  # pruned by an older publish: a record, no folder, no mark
    mongo.record_model_version(old, {"published": False, "metrics": {"validation": {"ndcg@10": 0.4}}})
    kept = _version(_val(0.4, 0.01), seed=1)
    mongo.record_model_version(kept, {"published": False})
    version = _version(_val(0.5, 0.01), seed=2)
    assert job.main(["--run-id", "it-prune-backfill", "--version", version, "--force"]) == 0
    records = {d["_id"]: d for d in mongo.get_db()[mongo.MODEL_VERSIONS].find({})}
    assert records[old]["pruned_at"] > 0 and records[old]["metrics"] == {"validation": {"ndcg@10": 0.4}}
    assert [v for v, d in records.items() if "pruned_at" in d] == [old]


def test_a_failed_prune_does_not_fail_the_publish_it_follows(own, monkeypatch):
    """Deleting old versions is housekeeping after the switch: when it fails (a bucket's permission,
    a folder gone) the publish is still recorded as done, with the error, and not retried for ever."""
    from core.runs import read_record
    from spark_jobs import publish as job

    def denied(protect, keep=None, root=None):
        raise PermissionError("delete denied")

    monkeypatch.setattr(artifacts, "prune_versions", denied)
    version = _version(_val(0.5, 0.01), seed=1)
    assert job.main(["--run-id", "it-prune-denied", "--version", version, "--force"]) == 0
    record = read_record("it-prune-denied", "publish")
    assert record["status"] == "published" and "delete denied" in record["prune_error"]
    assert artifacts.current_version() == version


def test_the_versions_just_pruned_are_marked_when_the_check_of_older_ones_fails(own, monkeypatch):
    """The marks of versions pruned before (pruned_unmarked, one storage check each) were computed
    in the same call that marked the versions just pruned: one failed check left those unmarked
    too, and the admin offered a rollback to files that are gone."""
    from spark_jobs import publish as job

    monkeypatch.setattr(artifacts, "VERSIONS_KEPT", 0)
    first = _version(_val(0.5, 0.01), seed=1)
    assert job.main(["--run-id", "it-mark-0", "--version", first, "--force"]) == 0
    rejected = [_version(_val(0.1, 0.5), seed=2)]  # below popularity: rejected
    assert job.main(["--run-id", "it-mark-1", "--version", rejected[0]]) == 0
    rejected.append(_version(_val(0.1, 0.5), seed=3))  # the next: its publish prunes rejected[0]
    old = "20250101T000000000000-00000001"  # a record without a mark, whose storage check fails
    mongo.record_model_version(old, {"published": False})
    has_version = artifacts.has_version

    def unreachable_for_old(version, *args, **kwargs):
        if version == old:
            raise OSError("storage unreachable")
        return has_version(version, *args, **kwargs)

    monkeypatch.setattr(artifacts, "has_version", unreachable_for_old)
    assert job.main(["--run-id", "it-mark-2", "--version", rejected[1]]) == 0
    from core.runs import read_record

    assert read_record("it-mark-2", "publish")["pruned"] == [rejected[0]]
    records = {d["_id"]: d for d in mongo.get_db()[mongo.MODEL_VERSIONS].find({})}
    assert records[rejected[0]].get("pruned_at", 0) > 0 and "pruned_at" not in records[old]
