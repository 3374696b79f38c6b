"""The product review pages mongo_load builds (spark_jobs.mongo_load.review_page_docs), on Spark."""
from __future__ import annotations

import pytest

from spark_jobs import mongo_load

SCHEMA = ("user_id string, product_id string, rating double, ts long, review_text string, text_clean string, "
          "summary string, verified boolean, helpful_votes long, reviewer_name string")


def _reviews(spark, rows):
    return spark.createDataFrame([(u, p, r, ts, f"text of {u}", "", f"summary of {u}", True, votes, u.upper())
                                  for u, p, r, ts, votes in rows], SCHEMA)


def test_pages_rank_most_helpful_then_newest_and_stop_at_the_cap(spark, monkeypatch):
    monkeypatch.setattr(mongo_load, "MAX_REVIEW_PAGES", 2)
    rows = [(f"u{i}", "p1", 1.0 + i % 5, 1_000 + i, i % 3) for i in range(7)] + [("u0", "p2", 4.0, 5, 0)]
    docs = {d["_id"]: d.asDict(recursive=True) for d in mongo_load.review_page_docs(_reviews(spark, rows), 2).collect()}
    assert sorted(docs) == ["p1:1", "p1:2", "p2:1"]  # 7 reviews of p1, 2 per page, at most 2 pages
    ranked = [(r["helpful_votes"], r["ts"]) for page in ("p1:1", "p1:2") for r in docs[page]["items"]]
    # the 4 most helpful of p1's 7, ties newest first: votes 2 (u5, u2), then votes 1 (u4, u1)
    assert ranked == [(2, 1_005), (2, 1_002), (1, 1_004), (1, 1_001)]
    assert docs["p1:1"]["items"][0] == {"user_id": "u5", "reviewer_name": "U5", "rating": 1.0, "ts": 1_005,
                                        "summary": "summary of u5", "review_text": "text of u5",
                                        "verified": True, "helpful_votes": 2}
    assert docs["p1:1"]["pages"] == docs["p1:2"]["pages"] == 2
    assert docs["p2:1"]["pages"] == 1 and [r["user_id"] for r in docs["p2:1"]["items"]] == ["u0"]


def _shuffles(plan, of: str | None = None) -> int:
    """Shuffles in a physical plan (a py4j SparkPlan, adaptive or not); with ``of``, only those
    whose rows carry that column."""
    name = plan.nodeName()
    if name == "AdaptiveSparkPlan":  # the plan it settled on, once run
        return _shuffles(plan.finalPhysicalPlan(), of)
    if name.endswith("QueryStage"):
        return _shuffles(plan.plan(), of)
    children = plan.children()
    here = name == "Exchange" and (of is None or f"{of}#" in plan.output().toString())
    return int(here) + sum(_shuffles(children.apply(i), of) for i in range(children.size()))


@pytest.fixture
def no_broadcast(spark):
    """Joins as at scale: a few test rows would otherwise be broadcast, not shuffled."""
    before = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    yield spark
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", before)


def test_the_review_text_is_shuffled_once(no_broadcast):
    """At 51M reviews the text is most of the shuffled bytes: one shuffle of it, for the join and
    the pages together, not one per operator (the window over text ran out of memory)."""
    spark = no_broadcast
    mongo_load.allow_subset_copartitioning(spark)
    rows = [(f"u{i}", f"p{i % 3}", 5.0, i, i % 2) for i in range(30)]
    pages = mongo_load.review_page_docs(_reviews(spark, rows), 2)
    assert len(pages.collect()) == 15  # 10 reviews per product, 2 per page
    plan = pages._jdf.queryExecution().executedPlan()
    assert _shuffles(plan, "review_text") == 1  # by product, for the join and the pages
    assert _shuffles(plan) == 2  # and the keys, by product for the ranking

