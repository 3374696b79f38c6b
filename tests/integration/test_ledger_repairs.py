"""The load and clean ledgers claim only what is on disk, on the real Spark, Parquet and MongoDB.

A ``--force`` load or clean killed while it replaces partitions (after the old one is deleted,
before the staged one is moved in) leaves those units / categories out of its ledger, so the next
ordinary run redoes them. ``load --remove`` takes a loaded file out: its category is cleaned again
without it, or removed with its dependents cleaned again, and mongo_load reloads in full.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core import mongo
from spark_jobs import hadoop_fs, units

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _write_reviews(path, rows) -> None:
    path.write_text("".join(json.dumps({"overall": r, "verified": True, "reviewerID": u, "asin": p,
                                        "reviewerName": u, "reviewText": f"{u} on {p}", "summary": "ok",
                                        "unixReviewTime": ts}) + "\n" for u, p, r, ts in rows))


def _write_products(path, rows) -> None:
    path.write_text("".join(json.dumps({"asin": p, "title": t, "description": [t], "price": "$1.00"}) + "\n"
                            for p, t in rows))


def _pairs(cleaned) -> dict[tuple[str, str], str]:
    t = pq.read_table(str(cleaned / "reviews"), columns=["user_id", "product_id", "category"]).to_pylist()
    return {(r["user_id"], r["product_id"]): r["category"] for r in t}


def _rows(path) -> int:
    return pq.read_table(str(path), columns=["product_id"]).num_rows if path.exists() else 0


def _dies_after_deleting(spark, src, dst):
    """hadoop_fs.move killed after deleting its destination, before renaming the staged folder in."""
    hadoop_fs.delete(spark, dst)
    raise RuntimeError("killed mid-replace")


def test_a_forced_load_or_clean_killed_mid_replace_is_redone_by_the_next_run(spark, tmp_path, monkeypatch):
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    alpha = tmp_path / "amazon2018_alpha.jsonl"
    _write_reviews(alpha, [("u1", "p1", 5.0, 100), ("u2", "p2", 4.0, 100)])
    load(spark, [str(alpha)], str(raw), "kill-1")
    clean(spark, str(raw), str(cleaned), "kill-1")
    raw_part, clean_part = raw / "reviews" / f"unit={alpha.name}", cleaned / "reviews" / "category=Alpha"
    assert _rows(raw_part) == _rows(clean_part) == 2

    with monkeypatch.context() as patch:
        patch.setattr(hadoop_fs, "move", _dies_after_deleting)
        with pytest.raises(RuntimeError, match="killed"):
            load(spark, [str(alpha)], str(raw), "kill-2", force=True)
    assert _rows(raw_part) == 0
    assert alpha.name not in units.read_ledger(str(raw)).get("units", {})
    again = load(spark, [str(alpha)], str(raw), "kill-3")  # no --force: the ledger alone says to
    assert again["loaded"] == [alpha.name] and _rows(raw_part) == 2

    clean(spark, str(raw), str(cleaned), "kill-3")  # the reload gave Alpha the same fingerprint
    with monkeypatch.context() as patch:
        patch.setattr(hadoop_fs, "move", _dies_after_deleting)
        with pytest.raises(RuntimeError, match="killed"):
            clean(spark, str(raw), str(cleaned), "kill-4", force=True)
    assert _rows(clean_part) == 0
    assert "Alpha" not in units.read_ledger(str(cleaned)).get("categories", {})
    redone = clean(spark, str(raw), str(cleaned), "kill-5")
    assert redone["cleaned"] == ["Alpha"] and _rows(clean_part) == 2


@pytest.fixture
def own_db(monkeypatch, settings, mongo_db):
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "remove")


@pytest.mark.timeout(1800)
def test_removing_a_loaded_file_redoes_or_drops_its_category_and_reloads_mongodb(spark, tmp_path, own_db):
    from spark_jobs.clean import clean
    from core.inputs import input_patterns
    from spark_jobs.load import KINDS, load
    from spark_jobs.mongo_load import INGEST_LEDGER, mongo_load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    alpha, beta = tmp_path / "amazon2018_alpha.jsonl", tmp_path / "amazon2018_beta.jsonl"
    beta_meta = tmp_path / "amazon2018_meta_beta.jsonl"
    _write_reviews(alpha, [("u1", "p1", 5.0, 200), ("u2", "p2", 4.0, 100)])  # alpha's u1-p1 is the newer
    _write_reviews(beta, [("u1", "p1", 3.0, 100), ("u3", "p3", 2.0, 100)])
    _write_products(beta_meta, [("p3", "Beta three"), ("p9", "Beta nine")])
    for reviews in (alpha, beta):  # a quarantined line each
        reviews.write_text(reviews.read_text() + "not json\n")
    load(spark, [str(alpha), str(beta), str(beta_meta)], str(raw), "rm-1")
    assert clean(spark, str(raw), str(cleaned), "rm-1")["cleaned"] == ["Alpha", "Beta"]
    assert _pairs(cleaned)[("u1", "p1")] == "Alpha"  # Beta defers to Alpha for it
    assert mongo_load(spark, str(cleaned), "rm-1")["mode"] == "full"
    assert own_db[mongo.PRODUCTS].find_one({"_id": "p9"})

    # a file that is also an input, or the last loaded file: refused; a name not loaded: nothing to
    # remove (a resumed run passes the same names again); nothing changed
    ledger = units.read_ledger(str(raw))
    assert load(spark, [str(alpha)], str(raw), "rm-x", remove=["nope.jsonl"])["removed"] == []
    with pytest.raises(ValueError, match=beta.name):
        load(spark, [str(beta)], str(raw), "rm-x", remove=[beta.name])
    with pytest.raises(ValueError, match="no file loaded"):
        load(spark, [], str(raw), "rm-x", remove=[alpha.name, beta.name, beta_meta.name])
    assert units.read_ledger(str(raw)) == ledger

    # one file of a category: the category is cleaned again without it, MongoDB reloaded in full
    removed = load(spark, [str(alpha), str(beta)], str(raw), "rm-2", remove=[str(beta_meta)])  # a path names its file
    assert removed["removed"] == [beta_meta.name] and removed["loaded"] == []
    assert not (raw / "products" / f"unit={beta_meta.name}").exists()
    assert beta_meta.name not in units.read_ledger(str(raw))["units"]
    second = clean(spark, str(raw), str(cleaned), "rm-2")
    assert second["cleaned"] == ["Beta"] and second["removed"] == [] and second["balanced"]
    assert _rows(cleaned / "products" / "file_category=Beta") == 0
    loaded = mongo_load(spark, str(cleaned), "rm-2")
    assert loaded["mode"] == "full"
    assert own_db[mongo.PRODUCTS].find_one({"_id": "p9"}) is None  # only beta's metadata had it

    # every file of a category, by a load that only removes (``load --remove`` without --input):
    # the other file's rows and ledger entry stay as they were, and its lines still balance
    kept = units.read_ledger(str(raw))["units"][beta.name]
    only = load(spark, input_patterns(None, [alpha.name], "the demo files"), str(raw), "rm-3", remove=[alpha.name])
    assert only["removed"] == [alpha.name] and only["loaded"] == only["skipped"] == [] and only["balanced"]
    assert units.read_ledger(str(raw))["units"] == {beta.name: kept}
    assert {f: _rows(raw / f) for f in KINDS.values()} == {"reviews": 2, "products": 0, "quarantine": 1}
    on_disk = {f: _rows(raw / f / f"unit={beta.name}") for f in KINDS.values()}
    assert on_disk == {f: kept["counts"][f] for f in KINDS.values()}
    assert sum(on_disk.values()) == kept["counts"]["lines"] == 3
    # the category goes, and the one that deferred to it takes its pair back
    third = clean(spark, str(raw), str(cleaned), "rm-3")
    assert third["removed"] == ["Alpha"] and third["cleaned"] == ["Beta"] and third["balanced"]
    assert not (cleaned / "reviews" / "category=Alpha").exists()
    assert _pairs(cleaned) == {("u1", "p1"): "Beta", ("u3", "p3"): "Beta"}
    assert set(units.read_ledger(str(cleaned))["categories"]) == {"Beta"}
    assert mongo_load(spark, str(cleaned), "rm-3")["mode"] == "full"
    assert {d["_id"] for d in own_db[INGEST_LEDGER].find({})} == {"Beta"}
    assert own_db[mongo.USER_HISTORY].find_one({"_id": "u2"}) is None  # alpha's reviewer alone
    assert own_db[mongo.PRODUCTS].find_one({"_id": "p2"}) is None
    # nothing changed since: nothing to do
    assert clean(spark, str(raw), str(cleaned), "rm-4")["cleaned"] == []


def test_a_new_version_of_load_or_clean_reprocesses_what_the_ledgers_hold(spark, tmp_path, monkeypatch):
    import spark_jobs.clean as clean_job
    import spark_jobs.load as load_job

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    alpha = tmp_path / "amazon2018_alpha.jsonl"
    _write_reviews(alpha, [("u1", "p1", 5.0, 100)])
    load_job.load(spark, [str(alpha)], str(raw), "ver-1")
    clean_job.clean(spark, str(raw), str(cleaned), "ver-1")
    fingerprint = units.read_ledger(str(cleaned))["categories"]["Alpha"]

    monkeypatch.setattr(load_job, "LOAD_VERSION", load_job.LOAD_VERSION + 1)  # a fix to load deployed
    assert load_job.load(spark, [str(alpha)], str(raw), "ver-2")["loaded"] == [alpha.name]  # without --force
    assert clean_job.clean(spark, str(raw), str(cleaned), "ver-2")["cleaned"] == ["Alpha"]
    after_load = units.read_ledger(str(cleaned))["categories"]["Alpha"]
    assert after_load != fingerprint  # what mongo_load compares: it reloads

    monkeypatch.setattr(clean_job, "CLEAN_VERSION", clean_job.CLEAN_VERSION + 1)  # a fix to clean deployed
    assert load_job.load(spark, [str(alpha)], str(raw), "ver-3")["loaded"] == []
    assert clean_job.clean(spark, str(raw), str(cleaned), "ver-3")["cleaned"] == ["Alpha"]
    assert units.read_ledger(str(cleaned))["categories"]["Alpha"] not in (fingerprint, after_load)


@pytest.fixture
def own_data(monkeypatch, settings, mongo_db, tmp_path):
    """This test's own DATA_DIR and MongoDB database (its records, its batch lock)."""
    from realtime_support import own_database

    yield from own_database(monkeypatch, settings.mongo_db, "rerun", DATA_DIR=str(tmp_path / "data"))


def test_the_rerun_param_makes_load_read_again_a_file_its_ledger_says_is_loaded(spark, tmp_path, monkeypatch, own_data):
    """A bad ledger (it lists a file whose rows are gone): a load skips the file, a load the DAG's
    ``rerun`` param forces (the --force bin/pipeline --rerun passes too) reads it again."""
    import importlib.util

    from core.runs import read_record
    from core.settings import get_settings
    from spark_jobs import load as job

    spec = importlib.util.spec_from_file_location("dag_params", ROOT / "dags" / "recommender" / "params.py")
    params = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(params)
    # main() is what spark-submit runs (it writes the record); it would stop the shared session
    monkeypatch.setattr("spark_jobs.common.spark_session", lambda app_name: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)
    alpha = tmp_path / "amazon2018_alpha.jsonl"
    _write_reviews(alpha, [("u1", "p1", 5.0, 100), ("u2", "p2", 4.0, 100)])
    part = get_settings().data_dir / "raw" / "reviews" / f"unit={alpha.name}"
    assert job.main(["--input", str(alpha), "--run-id", "rerun-1"]) == 0 and _rows(part) == 2
    hadoop_fs.delete(spark, str(part))  # the ledger still lists the file

    for run_id, rerun, loaded in (("rerun-2", [], []), ("rerun-3", ["load"], [alpha.name])):
        assert job.main([*params.load_args({"inputs": [str(alpha)], "rerun": rerun}), "--run-id", run_id]) == 0
        assert read_record(run_id, "load")["loaded"] == loaded
    assert _rows(part) == 2
