"""The batch pipeline end to end: load, clean, mongo_load, train and publish on real and fuzzed data.

Every job function runs in this process on the session's Spark (starting a JVM per job would cost
more than the jobs), against the session's own MongoDB database, data folder and artifact folder.
Expected numbers never come from the job under test: line counts come from reading the gzip files
with Python, fuzzed-file counts from the generator's manifest (bench/gen_reviews.py counts what it
writes), and Parquet outputs are re-read with pyarrow rather than Spark.
"""
from __future__ import annotations

import gzip
import json
import math
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import DEMO_FILE, real_files

pytestmark = pytest.mark.integration

MONGO_LOADED = ("products", "recent_reviews", "product_reviews", "user_history", "catalog_index", "search_index")


def _gz_lines(path: Path) -> int:
    """Lines in a file, gzipped or not, as Python counts them (a last line without a newline still counts)."""
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        return sum(1 for _ in f)


def _column(path: Path, name: str) -> list:
    """One column of a Parquet folder (Hive partitions included), read by pyarrow, not Spark."""
    return pq.read_table(str(path), columns=[name]).column(name).to_pylist()


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _run_id(name: str) -> str:
    return f"it-{name}-{uuid.uuid4().hex[:6]}"


# --- 1. load reconciliation on every real file -----------------------------------------------

def test_load_reconciles_every_real_file(spark, settings, mongo_db, monkeypatch):
    """All real files in one run: every line is a review, a product or quarantined, per file too."""
    import spark_jobs.load as load_job

    files = real_files()
    assert len(files) >= 10, f"expected the real sample files in data/demo and data/samples, found {[p.name for p in files]}"
    lines_per_file = {p.name: _gz_lines(p) for p in files}
    total_lines = sum(lines_per_file.values())

    # main() is what spark-submit runs (it writes the record); it would stop the shared session.
    monkeypatch.setattr("spark_jobs.common.spark_session", lambda app_name: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)
    run_id = _run_id("load-all")
    assert load_job.main([a for p in files for a in ("--input", str(p))] + ["--run-id", run_id]) == 0

    record_file = settings.data_dir / "runs" / run_id / "load.json"
    assert record_file.is_file(), "load did not write its reconciliation record"
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok" and record["balanced"] is True and record["run_id"] == run_id
    assert record["counts_in"] == {"lines": total_lines}
    out = record["counts_out"]
    assert set(out) == {"reviews", "products", "quarantined"}
    assert out["reviews"] + out["products"] + out["quarantined"] == total_lines
    assert sum(record["quarantine_reasons"].values()) == out["quarantined"]
    assert mongo_db["pipeline_runs"].count_documents({}) >= 1  # write_record's copy in MongoDB

    # The written Parquet, re-read with pyarrow, holds what the record says, file by file.
    raw = settings.data_dir / "raw"
    by_kind = {kind: Counter(_basename(u) for u in _column(raw / kind, "source_file"))
               for kind in ("reviews", "products", "quarantine")}
    assert {k: sum(c.values()) for k, c in by_kind.items()} == {
        "reviews": out["reviews"], "products": out["products"], "quarantine": out["quarantined"]}
    for name, n in lines_per_file.items():
        got = {kind: by_kind[kind][name] for kind in by_kind}
        assert sum(got.values()) == n, f"{name}: {n} lines in, {got} out"
        if "_meta_" in name:  # metadata files hold products, review files reviews: nothing crosses over
            assert got["reviews"] == 0, f"{name}: metadata lines loaded as reviews: {got}"
        else:
            assert got["products"] == 0, f"{name}: review lines loaded as products: {got}"
    assert out["reviews"] > 0 and out["products"] > 0


# --- 2. a fuzzed file reconciles exactly against the generator's manifest ---------------------

def test_fuzzed_file_matches_manifest(spark, tmp_path):
    from bench.gen_reviews import generate
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    manifest = generate(4000, tmp_path / "in", "2018", bad_fraction=0.05, duplicate_fraction=0.03,
                        repeat_fraction=0.03, seed=5)
    exp_load, exp_clean = manifest["expected"]["load"], manifest["expected"]["clean"]
    assert len(exp_load["quarantine_reasons"]) == 5 and min(exp_load["quarantine_reasons"].values()) > 0
    assert exp_clean["exact duplicate lines"] > 0 and exp_clean["repeated user-item pairs"] > 0

    files = [str(tmp_path / "in" / f["path"]) for f in manifest["files"]]
    assert sum(_gz_lines(Path(f)) for f in files) == exp_load["lines"]
    run_id = _run_id("fuzz")
    loaded = load(spark, files, str(tmp_path / "raw"), run_id)
    assert loaded["counts_in"] == {"lines": exp_load["lines"]}
    assert loaded["counts_out"] == {"reviews": exp_load["reviews"], "products": exp_load["products"],
                                    "quarantined": exp_load["quarantined"]}
    assert loaded["quarantine_reasons"] == exp_load["quarantine_reasons"]
    assert Counter(_column(tmp_path / "raw" / "quarantine", "reason")) == Counter(exp_load["quarantine_reasons"])

    cleaned = clean(spark, str(tmp_path / "raw"), str(tmp_path / "clean"), run_id)
    assert cleaned["counts_in"] == {"reviews": exp_clean["reviews_in"], "products": 0}
    assert cleaned["counts_out"] == {
        "reviews": exp_clean["reviews_out"],
        "exact duplicate lines": exp_clean["exact duplicate lines"],
        "repeated user-item pairs": exp_clean["repeated user-item pairs"],
        "pairs another category holds": 0,  # one file, one category: nothing held elsewhere
        "products": 0, "duplicate product records": 0, "products another category holds": 0,
    }
    users, items = _column(tmp_path / "clean" / "reviews", "user_id"), _column(tmp_path / "clean" / "reviews", "product_id")
    assert len(set(zip(users, items))) == len(users) == manifest["unique_pairs"]  # one review per pair


# --- shared: the demo file loaded and cleaned once --------------------------------------------

@pytest.fixture(scope="module")
def demo_clean(spark, settings, tmp_path_factory) -> Path:
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    assert DEMO_FILE.is_file(), f"demo file missing: {DEMO_FILE}"
    work = tmp_path_factory.mktemp("pipeline-demo")
    run_id = _run_id("demo")
    load(spark, [str(DEMO_FILE)], str(work / "raw"), run_id)
    clean(spark, str(work / "raw"), str(work / "clean"), run_id)
    return work / "clean"


# --- 3. mongo_load is idempotent and matches the clean data ----------------------------------

def _ids(db, name: str) -> list:
    return [d["_id"] for d in db[name].find({}, {"_id": 1})]


def test_mongo_load_idempotent(spark, mongo_db, demo_clean):
    from core import mongo, rating_history
    from spark_jobs.mongo_load import mongo_load

    users = _column(demo_clean / "reviews", "user_id")
    items = _column(demo_clean / "reviews", "product_id")
    categories = _column(demo_clean / "reviews", "category")
    deleted = rating_history.deleted_user_ids(db=mongo_db)  # accounts other tests of the session deleted: left out
    kept = [(u, i, c) for u, i, c in zip(users, items, categories) if u not in deleted]
    users, items, categories = [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]
    product_ids = set(items) | set(_column(demo_clean / "products", "product_id"))
    reviews_per_item = Counter(items)
    live_users = {d["user_id"] for d in mongo_db["ratings"].find({}, {"user_id": 1})}

    # force: a full reload both times (without it, the second finds every category loaded and skips)
    first = mongo_load(spark, str(demo_clean), _run_id("mongo1"), force=True)
    counts1 = {c: mongo_db[c].count_documents({}) for c in MONGO_LOADED}
    second = mongo_load(spark, str(demo_clean), _run_id("mongo2"), force=True)
    counts2 = {c: mongo_db[c].count_documents({}) for c in MONGO_LOADED}
    assert counts1 == counts2, f"a re-run changed the collections: {counts1} -> {counts2}"
    assert {c: v["documents"] for c, v in first["collections"].items()} == counts1
    assert {c: v["documents"] for c, v in second["collections"].items()} == counts2
    for c in MONGO_LOADED:
        ids = _ids(mongo_db, c)
        assert len(ids) == len(set(ids)) == counts2[c], f"{c}: duplicate _ids"
        generations = [n for n in mongo_db.list_collection_names() if n == c or n.startswith(f"{c}__")]
        assert generations == [mongo.physical_name(mongo_db, c)], f"{c}: old generations left behind: {generations}"

    # Each collection holds exactly what the clean data implies.
    # the recent reviews: those of the data's newest four weeks (the trending fallback)
    times = [t for t, u in zip(_column(demo_clean / "reviews", "ts"), _column(demo_clean / "reviews", "user_id"))
             if u not in deleted]
    assert counts2["recent_reviews"] == sum(1 for t in times if t >= max(times) - 28 * 86400) > 0
    assert "reviews" not in mongo_db.list_collection_names()  # no longer a collection of every review
    assert counts2["products"] == len(product_ids)
    assert set(_ids(mongo_db, "products")) == product_ids
    assert counts2["user_history"] == len(set(users) | live_users)
    assert counts2["product_reviews"] == sum(min(math.ceil(n / 10), 50) for n in reviews_per_item.values())
    cats_per_item = defaultdict(set)
    for item, cat in zip(items, categories):
        cats_per_item[item].add(cat)
    assert all(len(c) == 1 for c in cats_per_item.values())  # one file, one category: no ambiguity
    per_cat = Counter(next(iter(c)) for c in cats_per_item.values())
    per_cat["all"] = len(cats_per_item)
    # per category: its chunks of 5,000 ids and a count document; plus "categories" and "top_users"
    assert counts2["catalog_index"] == sum(math.ceil(n / 5000) + 1 for n in per_cat.values()) + 2

    n_reviews = {d["_id"]: d["n_reviews"] for d in mongo_db["products"].find({}, {"n_reviews": 1})}
    assert n_reviews == {p: reviews_per_item.get(p, 0) for p in product_ids}
    busiest = reviews_per_item.most_common(1)[0][0]
    doc = mongo_db["products"].find_one({"_id": busiest})
    assert doc["n_reviews"] == reviews_per_item[busiest] > 1
    assert doc["rating_hist"] and sum(doc["rating_hist"].values()) == doc["n_reviews"]


# --- 4. training beats the baselines; publish serves it ---------------------------------------

@pytest.fixture
def own_artifacts(monkeypatch, tmp_path):
    """A model folder of this test's own: the publish gate compares against the current version,
    and the site's session fixture may already have published one trained on other data."""
    from core.settings import get_settings

    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    yield get_settings().artifacts_dir
    monkeypatch.undo()  # before the cache is cleared, so the next reader sees the session's folder
    get_settings.cache_clear()


@pytest.mark.slow
def test_train_and_publish(spark, settings, mongo_db, demo_clean, own_artifacts):
    from core import artifacts, rating_history, stored_lists
    from spark_jobs.publish import publish
    from spark_jobs.train import train

    items = _column(demo_clean / "reviews", "product_id")
    users = _column(demo_clean / "reviews", "user_id")
    record = train(spark, str(demo_clean), _run_id("train"), engine="auto")
    assert record["status"] == "ok" and record["engine"] == "ease"
    m = record["metrics"]
    ours = m["test"]["ndcg@10"]
    pop = m["baselines"]["popularity"]["ndcg@10"]
    seed = m["baselines"]["seed_explicit_als"]["ndcg@10"]
    assert m["test"]["users"] == m["baselines"]["popularity"]["users"] == m["baselines"]["seed_explicit_als"]["users"] > 0
    assert ours >= 1.3 * pop, f"test NDCG@10 {ours:.4f} is not 1.3x popularity's {pop:.4f}"
    assert ours >= 10 * seed, f"test NDCG@10 {ours:.4f} is not 10x the seed ALS's {seed:.4f}"
    rmse = m["test"]["rmse"]
    assert isinstance(rmse, float) and 0 < rmse < 4, f"rmse {rmse!r}"
    assert m["rating_model"]["rmse_rows"] > 0
    assert 0 < m["test"]["coverage"] <= 1

    version = record["version"]
    model = artifacts.load_model(version)
    assert model is not None and model.kind == "ease"
    assert len(model.item_ids) == len(set(model.item_ids))
    assert sorted(model.item_ids) == sorted(set(items))
    assert model.item_factors.shape == (len(model.item_ids), len(model.item_ids))
    assert artifacts.load_metrics(version)["test"]["ndcg@10"] == ours

    published = publish(version)
    assert published["status"] == "published", published
    assert artifacts.current_version() == version
    deleted = rating_history.deleted_user_ids(db=mongo_db)  # other tests of the session may have deleted accounts
    user = next(u for u, _ in Counter(users).most_common() if u not in deleted)  # a batch user with many reviews
    recs = stored_lists.get_recommendations(user, db=mongo_db)  # the batch list of the published version
    assert recs is not None and recs["model_version"] == version and len(recs["items"]) > 0
    rated = {i for u, i in zip(users, items) if u == user}
    assert not rated & {r["product_id"] for r in recs["items"]}, "recommended an item the user already rated"
    item = Counter(items).most_common(1)[0][0]
    similar = mongo_db["similar_items"].find_one({"_id": item})
    assert similar is not None and len(similar["items"]) > 0
    assert mongo_db["similar_items"].count_documents({}) == len(model.item_ids)

    again = publish(version)
    assert again["status"] == "unchanged"
    assert artifacts.current_version() == version


@pytest.mark.slow
def test_train_spark_engine_keeps_users_off_the_driver(spark, settings, mongo_db, demo_clean, own_artifacts,
                                                       monkeypatch):
    """Engine spark (what auto picks when the data does not fit one node): evaluation and baselines
    on a sample of held-out users whose rows alone reach the driver, the serving lists written by
    the executors, and publish loading them."""
    from core import artifacts, rating_history, stored_lists
    from spark_jobs import engines, train as train_job
    from spark_jobs.publish import publish

    def no_full_collect(*args, **kwargs):
        raise AssertionError("engine spark collected every interaction to the driver")

    monkeypatch.setattr(train_job, "collect", no_full_collect)
    monkeypatch.setattr(engines, "EVAL_MAX_USERS", 150)
    monkeypatch.setattr(engines, "EVAL_MIN_USERS", 150)
    monkeypatch.setattr(engines, "grid", lambda engine: [dict(factors=16, reg=r, alpha=10.0, iterations=8)
                                                         for r in (0.01, 0.1)])
    deleted = rating_history.deleted_user_ids(db=mongo_db)  # accounts other tests of the session deleted: left out
    kept = [(u, i) for u, i in zip(_column(demo_clean / "reviews", "user_id"),
                                   _column(demo_clean / "reviews", "product_id")) if u not in deleted]
    users, items = [u for u, _ in kept], [i for _, i in kept]
    per_user = Counter(users)
    record = train_job.train(spark, str(demo_clean), _run_id("train-spark"), engine="spark")
    assert record["status"] == "ok" and record["engine"] == "spark"
    m = record["metrics"]
    held_out = sum(1 for n in per_user.values() if n >= 3)
    assert m["counts"]["users"] == len(per_user) and m["counts"]["interactions"] == len(users)
    assert m["counts"]["test"] == held_out
    sampled = min(150, held_out)
    assert m["test"]["users"] == m["baselines"]["popularity"]["users"] == sampled
    assert m["baselines"]["seed_explicit_als"]["users"] == sampled
    assert m["rating_model"]["users_sampled"] == {"users": sampled, "of": len(per_user)}
    for value in (m["validation"]["ndcg@10"], m["validation"]["popularity_ndcg@10"], m["test"]["ndcg@10"]):
        assert isinstance(value, float) and math.isfinite(value)
    assert m["serving_lists"]["users_listed"] == len(per_user) and m["serving_lists"]["items_listed"] == len(set(items))

    version = record["version"]
    model = artifacts.load_model(version)
    assert model.kind == "ials" and model.params["engine"] == "spark" and sorted(model.item_ids) == sorted(set(items))
    published = publish(version, force=True)
    assert published["status"] == "published", published
    user = per_user.most_common(1)[0][0]
    recs = stored_lists.get_recommendations(user, db=mongo_db)
    assert recs is not None and recs["model_version"] == version and len(recs["items"]) == settings.top_n
    rated = {i for u, i in zip(users, items) if u == user}
    assert not rated & {r["product_id"] for r in recs["items"]}, "recommended an item the user already rated"
    assert all(r["because"] in rated for r in recs["items"])
    assert mongo_db["similar_items"].count_documents({}) == len(model.item_ids)


# --- 5. the publish gate ----------------------------------------------------------------------

def _metrics(ndcg: float, pop: float, current: float | None = None) -> dict:
    """Validation metrics as train records them; ``current``: the current version "V1" on this split."""
    val = {"ndcg@10": ndcg, "popularity_ndcg@10": pop}
    if current is not None:
        val["current"] = {"version": "V1", "ndcg@10": current, "users": 10}
    return {"validation": val}


def test_publish_gate():
    from spark_jobs.publish import gate

    ok, reason = gate(_metrics(0.030, 0.040), None)
    assert not ok and "popularity" in reason
    ok, reason = gate(_metrics(0.040, 0.040), None)  # a tie does not beat popularity
    assert not ok and "popularity" in reason
    ok, reason = gate(_metrics(0.050, 0.030, current=0.060), "V1")
    assert not ok and "current" in reason
    ok, reason = gate(_metrics(0.070, 0.030, current=0.060), "V1")
    assert ok and reason
    ok, _ = gate(_metrics(0.060, 0.030, current=0.060), "V1")  # equal to current is enough
    assert ok
    ok, reason = gate(_metrics(0.070, 0.030), "V1")  # not scored against the current version
    assert not ok and "V1" in reason
    ok, reason = gate(_metrics(0.050, 0.030), None)  # first model of a fresh install
    assert ok
    ok, reason = gate({}, None)
    assert not ok and "no validation metrics" in reason


def test_split_breaks_same_time_ties_without_favouring_higher_product_ids(spark):
    """Each user rates products A..E on the same day: which one is "latest" must not follow the id."""
    from spark_jobs.interactions import split_by_time

    rows = [(f"u{u}", f"P{p}", 5.0, 86400.0 * 100, u, p) for u in range(200) for p in range(5)]
    inter = spark.createDataFrame(rows, "user_id string, product_id string, rating double, ts double, uid int, iid int")
    parts = split_by_time(inter)
    assert parts.groupBy("uid").count().where("count != 5").count() == 0  # nothing lost
    test_items = [r.iid for r in parts.where("part = 2").collect()]
    val_items = [r.iid for r in parts.where("part = 1").collect()]
    assert len(test_items) == len(val_items) == 200
    for chosen in (test_items, val_items):  # about 40 of 200 each; by id it was 200 for one product
        counts = [chosen.count(p) for p in range(5)]
        assert max(counts) < 80 and min(counts) > 10, counts
    later = [(f"u{u}", "P0", 5.0, 86400.0 * 101, u, 0) for u in range(3)]  # a later day still wins
    newer = split_by_time(spark.createDataFrame(rows[:15] + later, inter.schema))
    assert sorted((r.uid, r.iid) for r in newer.where("part = 2").collect()) == [(0, 0), (1, 0), (2, 0)]
