"""The EDA job on real data: every number in summary.json matches an independent count.

The clean data is built by the real load and clean functions from the demo file plus the 2018 Gift
Cards reviews and metadata (the demo file has no metadata, so titles, prices and the verified flag
would otherwise go untested). Expected values are computed here from the clean Parquet with plain
Python over collected columns, a different route from the job's Spark aggregates.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INPUTS = [
    ROOT / "data" / "demo" / "amazon2014_musical_instruments_5.jsonl.gz",
    ROOT / "data" / "demo" / "amazon2018_gift_cards_5.jsonl.gz",
    ROOT / "data" / "demo" / "amazon2018_meta_gift_cards.jsonl.gz",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JAVA_WHITESPACE = re.compile(r"[ \t\n\x0b\f\r]+")  # what Spark's split on \s+ splits on


@pytest.fixture(scope="module")
def clean_dir(spark, settings, tmp_path_factory) -> Path:
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    for path in INPUTS:
        assert path.exists(), f"test input missing: {path}"
    work = tmp_path_factory.mktemp("eda-data")
    load(spark, [str(p) for p in INPUTS], str(work / "raw"), "test-eda")
    clean(spark, str(work / "raw"), str(work / "clean"), "test-eda")
    return work / "clean"


@pytest.fixture(scope="module")
def eda(spark, clean_dir, tmp_path_factory) -> tuple[dict, dict, Path]:
    from spark_jobs.eda import run_eda

    eda_dir = tmp_path_factory.mktemp("eda-out")
    (eda_dir / "earlier-run").mkdir()  # an earlier run's output: pruned, as train's work folders are
    (eda_dir / "earlier-run" / "summary.json").write_text("{}")
    record = run_eda(spark, clean_dir, eda_dir, "test-run")
    summary = json.loads((eda_dir / "latest" / "summary.json").read_text())
    return record, summary, eda_dir


@pytest.fixture(scope="module")
def rows(spark, clean_dir) -> list:
    """The clean reviews' analysed columns, collected: fine for ~13k test rows, never in the job."""
    return spark.read.parquet(str(clean_dir / "reviews")).select(
        "user_id", "product_id", "rating", "ts", "review_text", "verified", "category").collect()


@pytest.fixture(scope="module")
def catalog(spark, clean_dir) -> dict[str, tuple[str, float]]:
    return {r["product_id"]: (r["title"], r["price"])
            for r in spark.read.parquet(str(clean_dir / "products")).collect()}


def _analysis(summary: dict, name: str) -> dict:
    matches = [a for a in summary["analyses"] if a["name"] == name]
    assert len(matches) == 1, f"{name} missing from summary.json"
    return matches[0]


def _star(rating: float) -> int:
    return int(round(rating))


def _sentiment(star: int) -> str:
    return "negative" if star <= 2 else "neutral" if star == 3 else "positive"


def test_counts_match_spark(spark, clean_dir, eda, rows, catalog):
    record, summary, _ = eda
    reviews = spark.read.parquet(str(clean_dir / "reviews"))
    expected = {
        "reviews": reviews.count(),
        "users": reviews.select("user_id").distinct().count(),
        "products": reviews.select("product_id").distinct().count(),
        "categories": reviews.select("category").distinct().count(),
        "catalog_products": len(catalog),
    }
    assert expected["reviews"] == len(rows) > 10_000
    assert expected["categories"] == 2 and expected["catalog_products"] > 0
    assert summary["counts"] == expected
    assert record["counts"] == expected and record["status"] == "ok"


def test_summary_lists_every_analysis_with_a_png(eda):
    record, summary, eda_dir = eda
    names = [a["name"] for a in summary["analyses"]]
    assert names == record["analyses"]
    assert set(names) == {"rating_distribution", "length_vs_rating", "most_reviewed", "least_reviewed",
                          "reviews_over_time", "verified", "long_tail"}
    for folder in (eda_dir / "test-run", eda_dir / "latest"):
        for a in summary["analyses"]:
            png = folder / a["png"]
            data = png.read_bytes()
            assert data.startswith(PNG_MAGIC), f"{png} is not a PNG"
            assert len(data) > 5_000, f"{png} is suspiciously small ({len(data)} bytes)"
            assert a["table"], f"{a['name']} has an empty table"
    assert (eda_dir / "test-run" / "summary.json").read_text() == (eda_dir / "latest" / "summary.json").read_text()
    assert record["out_dir"] == str(eda_dir / "test-run")
    assert sorted(p.name for p in eda_dir.iterdir()) == ["latest", "test-run"], "earlier or temporary folders left"
    assert record["dropped_runs"] == ["earlier-run"]


def test_rating_distribution(eda, rows):
    _, summary, _ = eda
    a = _analysis(summary, "rating_distribution")
    stars = Counter(_star(r["rating"]) for r in rows)
    assert sum(t["n_reviews"] for t in a["table"]) == len(rows)
    assert {t["rating"]: t["n_reviews"] for t in a["table"]} == dict(stars)
    assert [t["rating"] for t in a["table"]] == sorted(stars)
    sentiments = Counter(_sentiment(s) for s in (_star(r["rating"]) for r in rows))
    assert {s["sentiment"]: s["n_reviews"] for s in a["sentiment"]} == {k: sentiments.get(k, 0)
                                                                         for k in ("negative", "neutral", "positive")}
    for s in a["sentiment"]:
        assert s["share_pct"] == pytest.approx(100 * sentiments[s["sentiment"]] / len(rows), abs=0.01)
    assert sum(s["share_pct"] for s in a["sentiment"]) == pytest.approx(100, abs=0.05)


def test_length_vs_rating(eda, rows):
    _, summary, _ = eda
    a = _analysis(summary, "length_vs_rating")
    words_by_star: dict[int, list[int]] = defaultdict(list)
    cells: Counter = Counter()
    for r in rows:
        n = len([t for t in JAVA_WHITESPACE.split(r["review_text"] or "") if t])
        words_by_star[_star(r["rating"])].append(n)
        cells[(_star(r["rating"]), n.bit_length())] += 1  # 0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3 ...
    assert {(c["rating"], c["bin"]): c["n_reviews"] for c in a["histogram"]} == dict(cells)
    assert sum(c["n_reviews"] for c in a["histogram"]) == len(rows)
    for t in a["table"]:
        words = words_by_star[t["rating"]]
        assert t["n_reviews"] == len(words)
        assert t["mean_words"] == pytest.approx(sum(words) / len(words), abs=0.006)
        assert t["max_words"] == max(words)
        assert min(words) <= t["median_words"] <= max(words)
    assert {c["words"] for c in a["histogram"] if c["bin"] == 3} <= {"4-7"}


def _product_stats(rows) -> dict[str, list[float]]:
    ratings: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        ratings[r["product_id"]].append(r["rating"])
    return ratings


def _check_product_row(t: dict, ratings: list[float], catalog: dict) -> None:
    assert t["n_reviews"] == len(ratings)
    assert t["avg_rating"] == pytest.approx(sum(ratings) / len(ratings), abs=0.001)
    assert t["positive_share"] == pytest.approx(sum(_star(x) >= 4 for x in ratings) / len(ratings), abs=1e-4)
    title, price = catalog.get(t["product_id"], ("", 0.0))
    assert t["title"] == title
    if price and price > 0:
        assert t["revenue_proxy"] == pytest.approx(price * len(ratings), abs=0.01)
    else:
        assert t["revenue_proxy"] is None


def test_most_reviewed(eda, rows, catalog):
    _, summary, _ = eda
    table = _analysis(summary, "most_reviewed")["table"]
    stats = _product_stats(rows)
    expected = sorted(stats, key=lambda p: (-len(stats[p]), p))[:10]
    assert [t["product_id"] for t in table] == expected
    counts = [t["n_reviews"] for t in table]
    assert counts == sorted(counts, reverse=True) and counts[0] == max(len(v) for v in stats.values())
    for t in table:
        _check_product_row(t, stats[t["product_id"]], catalog)
    assert any(t["title"] for t in table), "no top product got its catalog title"
    assert any(t["revenue_proxy"] for t in table), "no top product has a price: the proxy went untested"


def test_least_reviewed(eda, rows, catalog):
    _, summary, _ = eda
    table = _analysis(summary, "least_reviewed")["table"]
    stats = _product_stats(rows)
    expected = sorted(stats, key=lambda p: (len(stats[p]), p))[:10]
    assert [t["product_id"] for t in table] == expected
    assert table[0]["n_reviews"] == min(len(v) for v in stats.values())
    for t in table:
        _check_product_row(t, stats[t["product_id"]], catalog)


def test_reviews_over_time(eda, rows):
    _, summary, _ = eda
    a = _analysis(summary, "reviews_over_time")
    dated = [datetime.fromtimestamp(r["ts"], tz=timezone.utc) for r in rows if r["ts"] > 0]
    assert a["undated_reviews"] == len(rows) - len(dated)
    assert {t["year"]: t["n_reviews"] for t in a["table"]} == dict(Counter(d.year for d in dated))
    assert {m["month"]: m["n_reviews"] for m in a["monthly"]} == dict(Counter(d.strftime("%Y-%m") for d in dated))
    assert sum(t["n_reviews"] for t in a["table"]) + a["undated_reviews"] == len(rows)
    assert [m["month"] for m in a["monthly"]] == sorted(m["month"] for m in a["monthly"])


def test_verified(eda, rows):
    _, summary, _ = eda
    table = _analysis(summary, "verified")["table"]
    by_flag: dict[bool, list[float]] = defaultdict(list)
    for r in rows:
        by_flag[bool(r["verified"])].append(r["rating"])
    assert {t["verified"]: t["n_reviews"] for t in table} == {k: len(v) for k, v in by_flag.items()}
    assert len(table) == 2, "the Gift Cards file has both verified and unverified reviews"
    for t in table:
        ratings = by_flag[t["verified"]]
        assert t["avg_rating"] == pytest.approx(sum(ratings) / len(ratings), abs=0.001)


def test_long_tail(eda, rows):
    _, summary, _ = eda
    a = _analysis(summary, "long_tail")
    for population, key in (("items", "product_id"), ("users", "user_id")):
        counts = sorted(Counter(r[key] for r in rows).values(), reverse=True)
        got = {t["top_pct"]: t for t in a["table"] if t["population"] == population}
        assert set(got) == {1, 10, 50}
        for pct, t in got.items():
            k = math.ceil(len(counts) * pct / 100)
            assert t["entities"] == k and t["entities_total"] == len(counts)
            assert t["reviews_covered"] == sum(counts[:k])
            assert t["share_of_reviews_pct"] == pytest.approx(100 * sum(counts[:k]) / len(rows), abs=0.01)
        assert got[1]["share_of_reviews_pct"] < got[10]["share_of_reviews_pct"] < got[50]["share_of_reviews_pct"]


def test_publish_replaces_latest_without_leftovers(tmp_path):
    """A second run swaps "latest" whole: nothing of the old one survives, nothing temporary stays."""
    from spark_jobs.eda import _publish

    eda_dir = tmp_path / "eda"
    (eda_dir / "latest").mkdir(parents=True)
    (eda_dir / "latest" / "stale.png").write_bytes(PNG_MAGIC)
    for run_id in ("run-a", "run-b"):
        tmp = eda_dir / f".tmp-{run_id}"
        tmp.mkdir()
        (tmp / "summary.json").write_text(json.dumps({"run_id": run_id}))
        run_dir, latest = _publish(tmp, eda_dir, run_id)
        assert run_dir == eda_dir / run_id and latest == eda_dir / "latest"
        assert json.loads((latest / "summary.json").read_text()) == {"run_id": run_id}
        assert sorted(p.name for p in latest.iterdir()) == ["summary.json"]
    assert sorted(p.name for p in eda_dir.iterdir()) == ["latest", "run-a", "run-b"]


def test_no_reviews_fails_loudly(spark, tmp_path):
    from spark_jobs.eda import NoData, run_eda

    clean = tmp_path / "clean"
    spark.createDataFrame([], "user_id string, product_id string, rating double, ts long, review_text string, "
                              "verified boolean, category string").write.parquet(str(clean / "reviews"))
    spark.createDataFrame([], "product_id string, title string, price double").write.parquet(str(clean / "products"))
    with pytest.raises(NoData):
        run_eda(spark, clean, tmp_path / "eda", "empty")
    assert not (tmp_path / "eda" / "latest").exists()
