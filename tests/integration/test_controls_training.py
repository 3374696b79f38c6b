"""The batch side of the shopper controls, with the real batch jobs (Spark) on the bundled demo file.

"Delete my account" of a demo account linked to a reviewer of the data: the next model version is
trained without that reviewer. A rating removed on the site stays removed when the batch load
rebuilds the histories. The load and clean jobs run once for the module; the deletion and the
trainings run in a database and artifacts directory of this module's own.
"""
from __future__ import annotations

import time

import pytest

from core import artifacts, mongo, rating_history
from core.events import NOT_INTERESTED, UNRATE, RatingEvent
from realtime_support import reset_core_caches
from tests.conftest import DEMO_FILE
from tests.site_catalog import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(scope="module")
def demo_clean(spark, tmp_path_factory) -> str:
    """The demo file through the real load and clean jobs; returns the clean Parquet folder."""
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    work = tmp_path_factory.mktemp("controls-batch")
    load(spark, [str(DEMO_FILE)], str(work / "raw"), "it-controls")
    clean(spark, str(work / "raw"), str(work / "clean"), "it-controls")
    return str(work / "clean")


@pytest.fixture
def own_db(settings, mongo_db, kafka_topics, site_cache, tmp_path, monkeypatch):
    """A database and artifacts directory of this test's own (dropped afterwards)."""
    name = f"{settings.mongo_db}_ctrltrain"[:60]
    monkeypatch.setenv("MONGO_DB", name)
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    reset_core_caches()
    try:
        yield mongo.get_db()
    finally:
        mongo.get_client().drop_database(name)
        monkeypatch.undo()
        reset_core_caches()


def _reviewers(spark, clean_dir: str) -> list[tuple[str, int]]:
    """(reviewer, number of clean reviews), most reviews first."""
    rows = spark.read.parquet(f"{clean_dir}/reviews").groupBy("user_id").count().collect()
    return sorted(((r["user_id"], int(r["count"])) for r in rows), key=lambda x: (-x[1], x[0]))


def _users_listed(models_dir, version: str) -> set[str]:
    return {doc["_id"] for doc in artifacts.serving_list_docs(models_dir / version / artifacts.TOPN_LISTS)}


@pytest.mark.timeout(1800)  # a whole training run (with its Spark baselines) on a shared 2-core machine
def test_deleted_linked_reviewer_is_left_out_of_the_next_training(demo_clean, spark, own_db, client, make_user):
    from accounts.models import AccountDeletion
    from spark_jobs.train import train

    db = own_db
    reviewers = _reviewers(spark, demo_clean)
    reviewer, n_reviews = reviewers[0]  # the most active reviewer: the pipeline's first demo account

    user = make_user(reviewer_id=reviewer)
    client.force_login(user)
    done = client.post("/accounts/delete/", {"password": PASSWORD, "confirm": "on"})
    assert done.status_code == 200
    assert AccountDeletion.objects.get().kind == "linked_reviewer"
    assert rating_history.deleted_user_ids(db=db) == {reviewer}

    record = train(spark, demo_clean, "it-controls-after", engine="ease")
    counts = record["metrics"]["counts"]
    assert counts["deleted_users_left_out"] == 1
    assert counts["users"] == len(reviewers) - 1
    assert counts["interactions"] == sum(n for _, n in reviewers) - n_reviews
    listed = _users_listed(artifacts.models_dir(), record["version"])
    assert reviewer not in listed and len(listed) == len(reviewers) - 1


def test_batch_reload_keeps_removed_ratings_removed(demo_clean, spark, own_db):
    from spark_jobs.mongo_load import live_ratings, user_history_docs

    db = own_db
    reviews = spark.read.parquet(f"{demo_clean}/reviews")
    reviewer = _reviewers(spark, demo_clean)[1][0]
    batch = {r.product_id: r.rating for r in reviews.where(reviews.user_id == reviewer).collect()}
    dropped, kept = sorted(batch)[:2]
    now = time.time()
    events = [RatingEvent(user_id=reviewer, product_id=dropped, rating=0, ts=now - 5, action=UNRATE),
              RatingEvent(user_id=reviewer, product_id=kept, rating=1, ts=now - 4),
              RatingEvent(user_id="site-x", product_id=kept, rating=5, ts=now - 3),
              RatingEvent(user_id="site-x", product_id=kept, rating=0, ts=now - 2, action=UNRATE),
              RatingEvent(user_id="site-x", product_id=kept, rating=3, ts=now - 1),  # rated again
              RatingEvent(user_id="site-x", product_id=dropped, rating=0, ts=now, action=NOT_INTERESTED)]
    for e in events:
        assert rating_history.store_rating(e.to_dict(), db=db)
    docs = {r["_id"]: rating_history.history_entries(r.asDict(recursive=True))[0] for r in user_history_docs(reviews, live_ratings(spark)).where(
        "_id in ('%s', 'site-x')" % reviewer).collect()}
    want = {p: float(r) for p, r in batch.items() if p != dropped}
    want[kept] = 1.0
    assert {p: v[0] for p, v in docs[reviewer].items()} == want
    assert {p: v[0] for p, v in docs["site-x"].items()} == {kept: 3.0}  # "not interested" is no rating
