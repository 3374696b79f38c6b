"""Exploratory data analysis of the clean reviews: summary.json plus one PNG per analysis.

Every aggregate is computed by Spark over all the clean data (groupBy/agg); only the small results
(a handful of rows per analysis) reach the driver, so the job runs the same on the 10k-review demo
and on the 233M-review 2018 release. The output goes to ``$EDA_DIR/<run-id>/`` and is then copied
to ``$EDA_DIR/latest/`` (what the site's dashboard shows), swapped in by renames so a reader never
sees a half-written folder. The earlier runs' folders are deleted then (one a day otherwise).

    spark-submit spark_jobs/eda.py [--run-id R]
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # no display on a cluster driver or in CI
from matplotlib.figure import Figure  # noqa: E402
from pyspark.sql import Column, DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from core.settings import get_settings  # noqa: E402
from spark_jobs.common import drop_earlier_runs, run_job  # noqa: E402

SENTIMENTS = ("negative", "neutral", "positive")
SENTIMENT_COLORS = {"negative": "#d62728", "neutral": "#7f7f7f", "positive": "#2ca02c"}
TOP_N = 10
LONG_TAIL_PCTS = (1, 10, 50)


class NoData(RuntimeError):
    """There are no clean reviews: an EDA of nothing would publish a misleading empty dashboard."""


@dataclass
class Analysis:
    """One analysis: its small table for summary.json and how to draw its figure.

    Drawing is a function rather than a finished figure so the Spark work (the expensive part) and
    the plotting stay separate and each analysis can be tested on its table alone.
    """

    name: str
    title: str
    table: list[dict[str, Any]]
    draw: Callable[[], Figure]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def png(self) -> str:
        return f"{self.name}.png"

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "png": self.png, "table": self.table, **self.extra}


# --- column helpers -------------------------------------------------------------------------------

def star_col() -> Column:
    """Rating as an integer star: Amazon ratings are whole stars, stored as doubles by clean."""
    return F.round("rating").cast("int")


def sentiment_col(star: Column) -> Column:
    """The usual star-to-sentiment buckets: 1-2 negative, 3 neutral, 4-5 positive."""
    return F.when(star <= 2, "negative").when(star == 3, "neutral").otherwise("positive")


def _sentiment(star: int) -> str:
    """The same buckets as :func:`sentiment_col`, for labelling rows already collected."""
    return "negative" if star <= 2 else "neutral" if star == 3 else "positive"


def words_col() -> Column:
    """Number of whitespace-separated words of review_text (empty text -> 0, not 1)."""
    tokens = F.split(F.coalesce(F.col("review_text"), F.lit("")), r"\s+")
    return F.size(F.filter(tokens, lambda t: t != ""))


def length_bin_col(words: Column) -> Column:
    """Log2 bins of a word count: 0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ...

    Review lengths are heavy-tailed, so equal-width bins would put almost everything in the first
    one. The bin is the bit length of the count (``bin()`` gives its binary digits), which is exact
    where ``floor(log2(n))`` can be off by one through floating point at powers of two.
    """
    return F.when(words <= 0, F.lit(0)).otherwise(F.length(F.bin(words.cast("long"))))


def length_bin_label(b: int) -> str:
    if b <= 1:
        return str(b)
    lo, hi = 2 ** (b - 1), 2 ** b - 1
    return f"{lo}-{hi}"


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def _short(text: str, width: int = 42) -> str:
    """A one-line, shortened label; "$" escaped so matplotlib does not read "$5 ... $10" as maths."""
    text = " ".join((text or "").split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _figure(width: float = 10, height: float = 5.5) -> Figure:
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


# --- analyses -------------------------------------------------------------------------------------

def dataset_counts(reviews: DataFrame, products: DataFrame) -> dict[str, int]:
    """Headline sizes; exact distinct counts because the dashboard quotes them as facts."""
    row = reviews.agg(
        F.count("*").alias("reviews"),
        F.countDistinct("user_id").alias("users"),
        F.countDistinct("product_id").alias("products"),
        F.countDistinct("category").alias("categories"),
    ).first()
    counts = {k: int(row[k]) for k in ("reviews", "users", "products", "categories")}
    counts["catalog_products"] = int(products.count())
    return counts


def rating_distribution(reviews: DataFrame) -> Analysis:
    """Count per star and sentiment shares: how skewed to 5 stars the data is decides whether
    "positive" means anything to a recommender and how a rating threshold should be chosen."""
    rows = (reviews.groupBy(star_col().alias("rating"))
            .agg(F.count("*").alias("n_reviews")).orderBy("rating").collect())
    total = sum(r["n_reviews"] for r in rows)
    table = [{"rating": int(r["rating"]), "sentiment": _sentiment(int(r["rating"])), "n_reviews": int(r["n_reviews"]),
              "share_pct": _pct(r["n_reviews"], total)} for r in rows]
    sentiment_rows = (reviews.groupBy(sentiment_col(star_col()).alias("sentiment"))
                      .agg(F.count("*").alias("n_reviews")).collect())
    by_sentiment = {r["sentiment"]: int(r["n_reviews"]) for r in sentiment_rows}
    sentiment = [{"sentiment": s, "n_reviews": by_sentiment.get(s, 0), "share_pct": _pct(by_sentiment.get(s, 0), total)}
                 for s in SENTIMENTS]

    def draw() -> Figure:
        fig = _figure(11, 5)
        ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 2])
        bars = ax.bar([str(r["rating"]) for r in table], [r["n_reviews"] for r in table],
                      color=[SENTIMENT_COLORS[r["sentiment"]] for r in table])
        ax.bar_label(bars, labels=[f"{r['n_reviews']:,}\n({r['share_pct']:.1f}%)" for r in table], fontsize=9)
        ax.set(title="Reviews per star rating", xlabel="rating (stars)", ylabel="number of reviews")
        ax.margins(y=0.15)
        bars2 = ax2.bar([s["sentiment"] for s in sentiment], [s["share_pct"] for s in sentiment],
                        color=[SENTIMENT_COLORS[s["sentiment"]] for s in sentiment])
        ax2.bar_label(bars2, labels=[f"{s['share_pct']:.1f}%" for s in sentiment])
        ax2.set(title="Sentiment share", xlabel="1-2★ negative, 3★ neutral, 4-5★ positive",
                ylabel="% of reviews", ylim=(0, 110))
        return fig

    return Analysis("rating_distribution", "Rating distribution and sentiment", table, draw,
                    {"sentiment": sentiment})


def length_vs_rating(reviews: DataFrame) -> Analysis:
    """Review length (words) against rating, as a 2D histogram built in Spark.

    Tells whether unhappy customers write more (they usually do), i.e. whether text length carries
    signal beyond the stars. Each cell is (rating, log2 length bin) -> count; the heatmap colours
    each rating's row by its own share so the dominant 5-star row does not drown the others.
    """
    with_len = reviews.select(star_col().alias("rating"), words_col().alias("words"))
    cells = (with_len.groupBy("rating", length_bin_col(F.col("words")).alias("bin"))
             .agg(F.count("*").alias("n_reviews")).collect())
    stats = (with_len.groupBy("rating").agg(
        F.count("*").alias("n_reviews"), F.avg("words").alias("mean_words"),
        F.percentile_approx("words", 0.5).alias("median_words"), F.max("words").alias("max_words"),
    ).orderBy("rating").collect())
    table = [{"rating": int(r["rating"]), "n_reviews": int(r["n_reviews"]), "mean_words": _r(r["mean_words"], 2),
              "median_words": int(r["median_words"]), "max_words": int(r["max_words"])} for r in stats]
    histogram = sorted(({"rating": int(c["rating"]), "bin": int(c["bin"]), "words": length_bin_label(int(c["bin"])),
                         "n_reviews": int(c["n_reviews"])} for c in cells), key=lambda c: (c["rating"], c["bin"]))

    def draw() -> Figure:
        ratings = [r["rating"] for r in table]
        n_bins = max(c["bin"] for c in histogram) + 1
        grid = [[0] * n_bins for _ in ratings]
        for c in histogram:
            grid[ratings.index(c["rating"])][c["bin"]] = c["n_reviews"]
        shares = [[100.0 * v / max(sum(row), 1) for v in row] for row in grid]
        fig = _figure(12, 5.5)
        ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 1])
        im = ax.imshow(shares, aspect="auto", origin="lower", cmap="viridis")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i][j] < 0.6 * max(map(max, shares)) else "black")
        ax.set_xticks(range(n_bins), [length_bin_label(b) for b in range(n_bins)], rotation=45, ha="right")
        ax.set_yticks(range(len(ratings)), [str(r) for r in ratings])
        ax.set(title="Review length vs rating (cell = number of reviews)",
               xlabel="review length (words, log2 bins)", ylabel="rating (stars)")
        fig.colorbar(im, ax=ax, label="% of that rating's reviews")
        ax2.barh([str(r) for r in ratings], [r["mean_words"] for r in table], color="#1f77b4")
        ax2.set(title="Mean length per rating", xlabel="mean words", ylabel="rating (stars)")
        return fig

    return Analysis("length_vs_rating", "Review length vs rating", table, draw, {"histogram": histogram})


def sentiment_by_product(reviews: DataFrame) -> DataFrame:
    """Per product: number of reviews, average rating and sentiment shares (shared by several analyses;
    not mongo_load.product_stats, the catalog's aggregates)."""
    star = star_col()
    return reviews.groupBy("product_id").agg(
        F.count("*").alias("n_reviews"),
        F.avg("rating").alias("avg_rating"),
        F.avg((star >= 4).cast("double")).alias("positive_share"),
        F.avg((star <= 2).cast("double")).alias("negative_share"),
    )


def _ranked_products(stats: DataFrame, products: DataFrame, ascending: bool) -> list[dict[str, Any]]:
    """The TOP_N products by review count (ties by product_id) with their title and price.

    Only the TOP_N rows are joined with the catalog, so the join costs nothing at any scale.
    Products missing from the catalog (review files without metadata) keep an empty title.
    """
    order = F.col("n_reviews").asc() if ascending else F.col("n_reviews").desc()
    top = stats.orderBy(order, F.col("product_id").asc()).limit(TOP_N)
    catalog = products.select("product_id", "title", "price").dropDuplicates(["product_id"])
    rows = (top.join(catalog, "product_id", "left")
            .withColumn("revenue_proxy", F.when(F.col("price") > 0, F.col("price") * F.col("n_reviews")))
            .collect())
    table = [{
        "product_id": r["product_id"], "title": r["title"] or "", "n_reviews": int(r["n_reviews"]),
        "avg_rating": _r(r["avg_rating"], 3), "positive_share": _r(r["positive_share"]),
        "negative_share": _r(r["negative_share"]), "price": _r(r["price"], 2) if r["price"] else None,
        "revenue_proxy": _r(r["revenue_proxy"], 2),
    } for r in rows]
    sign = 1 if ascending else -1
    return sorted(table, key=lambda t: (sign * t["n_reviews"], t["product_id"]))


def _product_label(row: dict[str, Any]) -> str:
    return f"{_short(row['title'])} ({row['product_id']})" if row["title"] else row["product_id"]


def most_reviewed(stats: DataFrame, products: DataFrame) -> Analysis:
    """Top-10 most reviewed products: where the data (and a popularity baseline) concentrates;
    price x reviews is a rough proxy of what they earn, shown only where a price is known."""
    table = _ranked_products(stats, products, ascending=False)

    def draw() -> Figure:
        fig = _figure(13, 6)
        ax, ax2 = fig.subplots(1, 2, sharey=True)
        labels = [_product_label(r) for r in table][::-1]
        bars = ax.barh(labels, [r["n_reviews"] for r in table][::-1],
                       color=[matplotlib.colormaps["RdYlGn"](r["positive_share"] or 0) for r in table][::-1])
        ax.bar_label(bars, labels=[f"{r['n_reviews']:,}  avg {r['avg_rating']:.2f}★  "
                                   f"{100 * r['positive_share']:.0f}% pos" for r in table][::-1], fontsize=8)
        ax.set(title=f"Top {TOP_N} most reviewed products", xlabel="number of reviews (colour: positive share)")
        ax.margins(x=0.45)
        proxies = [r["revenue_proxy"] or 0 for r in table][::-1]
        bars2 = ax2.barh(labels, proxies, color="#9467bd")
        ax2.bar_label(bars2, labels=[f"\\${p:,.0f}" if p else "no price" for p in proxies], fontsize=8)
        ax2.set(title="Profitability proxy: price × reviews", xlabel="price × number of reviews (\\$)")
        ax2.margins(x=0.3)
        return fig

    return Analysis("most_reviewed", f"Top {TOP_N} most reviewed products", table, draw)


def least_reviewed(stats: DataFrame, products: DataFrame) -> Analysis:
    """Top-10 least reviewed products (ties by product_id): the cold end a recommender must still
    serve, where averages rest on a few reviews and are not to be trusted."""
    table = _ranked_products(stats, products, ascending=True)

    def draw() -> Figure:
        fig = _figure(11, 6)
        ax = fig.subplots()
        labels = [_product_label(r) for r in table][::-1]
        bars = ax.barh(labels, [r["avg_rating"] for r in table][::-1],
                       color=[matplotlib.colormaps["RdYlGn"](r["positive_share"] or 0) for r in table][::-1])
        ax.bar_label(bars, labels=[f"{r['avg_rating']:.2f}★ from {r['n_reviews']} reviews, "
                                   f"{100 * r['positive_share']:.0f}% pos" for r in table][::-1], fontsize=8)
        ax.set(title=f"Top {TOP_N} least reviewed products", xlabel="average rating (colour: positive share)",
               xlim=(0, 8.5))
        return fig

    return Analysis("least_reviewed", f"Top {TOP_N} least reviewed products", table, draw)


def reviews_over_time(reviews: DataFrame) -> Analysis:
    """Reviews per month (and per year in the table): shows growth, collection gaps and whether a
    time-based train/test split leaves enough recent data. Undated reviews (ts 0) are counted apart."""
    dated = reviews.where(F.col("ts") > 0).withColumn("when", F.from_unixtime("ts"))
    monthly_rows = (dated.groupBy(F.date_format("when", "yyyy-MM").alias("month"))
                    .agg(F.count("*").alias("n_reviews"), F.avg("rating").alias("avg_rating"))
                    .orderBy("month").collect())
    yearly_rows = (dated.groupBy(F.year("when").alias("year"))
                   .agg(F.count("*").alias("n_reviews"), F.avg("rating").alias("avg_rating"))
                   .orderBy("year").collect())
    undated = int(reviews.where(F.col("ts") <= 0).count())
    table = [{"year": int(r["year"]), "n_reviews": int(r["n_reviews"]), "avg_rating": _r(r["avg_rating"], 3)}
             for r in yearly_rows]
    monthly = [{"month": r["month"], "n_reviews": int(r["n_reviews"]), "avg_rating": _r(r["avg_rating"], 3)}
               for r in monthly_rows]

    def draw() -> Figure:
        fig = _figure(12, 5)
        ax = fig.subplots()
        if not monthly:
            ax.text(0.5, 0.5, "no dated reviews", ha="center", va="center", transform=ax.transAxes)
        else:
            x = [datetime.strptime(m["month"], "%Y-%m") for m in monthly]
            ax.plot(x, [m["n_reviews"] for m in monthly], color="#1f77b4", lw=1.5)
            ax.fill_between(x, [m["n_reviews"] for m in monthly], alpha=0.2)
        note = f" ({undated:,} undated not shown)" if undated else ""
        ax.set(title=f"Reviews per month{note}", xlabel="month", ylabel="number of reviews")
        ax.grid(alpha=0.3)
        return fig

    return Analysis("reviews_over_time", "Reviews over time", table, draw,
                    {"monthly": monthly, "undated_reviews": undated})


def verified_purchases(reviews: DataFrame) -> Analysis:
    """Verified vs unverified reviews: unverified ones are rated differently on Amazon, which
    matters if they are to be down-weighted. (2014 files carry no flag, so all read as unverified.)"""
    rows = (reviews.groupBy("verified").agg(
        F.count("*").alias("n_reviews"), F.avg("rating").alias("avg_rating"),
        F.avg((star_col() >= 4).cast("double")).alias("positive_share"),
    ).orderBy("verified").collect())
    total = sum(r["n_reviews"] for r in rows)
    table = [{"verified": bool(r["verified"]), "n_reviews": int(r["n_reviews"]),
              "share_pct": _pct(r["n_reviews"], total), "avg_rating": _r(r["avg_rating"], 3),
              "positive_share": _r(r["positive_share"])} for r in rows]

    def draw() -> Figure:
        fig = _figure(10, 4.5)
        ax, ax2 = fig.subplots(1, 2)
        labels = ["verified" if r["verified"] else "not verified" for r in table]
        colors = ["#2ca02c" if r["verified"] else "#ff7f0e" for r in table]
        bars = ax.bar(labels, [r["n_reviews"] for r in table], color=colors)
        ax.bar_label(bars, labels=[f"{r['n_reviews']:,} ({r['share_pct']:.1f}%)" for r in table])
        ax.set(title="Reviews by verified purchase", ylabel="number of reviews")
        ax.margins(y=0.15)
        bars2 = ax2.bar(labels, [r["avg_rating"] for r in table], color=colors)
        ax2.bar_label(bars2, labels=[f"{r['avg_rating']:.2f}" for r in table])
        ax2.set(title="Average rating", ylabel="average rating (stars)", ylim=(0, 5.5))
        return fig

    return Analysis("verified", "Verified vs unverified purchases", table, draw)


def count_frequencies(reviews: DataFrame, key: str) -> list[tuple[int, int]]:
    """[(reviews per entity, number of entities with that many)], most reviewed first.

    This "frequency of frequencies" is tiny (one row per distinct count) yet determines every
    popularity rank exactly, so long-tail shares and the rank plot need no sort of all entities.
    """
    rows = (reviews.groupBy(key).agg(F.count("*").alias("n"))
            .groupBy("n").agg(F.count("*").alias("entities")).collect())
    return sorted(((int(r["n"]), int(r["entities"])) for r in rows), reverse=True)


def top_share(freqs: list[tuple[int, int]], pct: float) -> tuple[int, int]:
    """(k, reviews held by the k = ceil(pct% of entities) most reviewed entities)."""
    k = max(1, math.ceil(sum(m for _, m in freqs) * pct / 100.0))
    covered, left = 0, k
    for n, m in freqs:
        take = min(m, left)
        covered, left = covered + take * n, left - take
        if not left:
            break
    return k, covered


def long_tail(reviews: DataFrame) -> Analysis:
    """Share of reviews held by the top 1/10/50% of items and of users: how concentrated the data
    is sets how strong a popularity baseline will be and how many items a model can learn."""
    freqs = {"items": count_frequencies(reviews, "product_id"), "users": count_frequencies(reviews, "user_id")}
    table = []
    for population, f in freqs.items():
        total = sum(n * m for n, m in f)
        for pct in LONG_TAIL_PCTS:
            k, covered = top_share(f, pct)
            table.append({"population": population, "top_pct": pct, "entities": k,
                          "entities_total": sum(m for _, m in f), "reviews_covered": covered,
                          "share_of_reviews_pct": _pct(covered, total)})

    def draw() -> Figure:
        fig = _figure(10, 5.5)
        ax = fig.subplots()
        for population, color in (("items", "#1f77b4"), ("users", "#ff7f0e")):
            ranks, counts, rank = [], [], 0
            for n, m in freqs[population]:  # entities sharing a count occupy consecutive ranks
                ranks += [rank + 1, rank + m]
                counts += [n, n]
                rank += m
            ax.loglog(ranks, counts, color=color, lw=2, label=population)
        shares = ", ".join(f"top {t['top_pct']}% → {t['share_of_reviews_pct']:.0f}%"
                           for t in table if t["population"] == "items")
        ax.set(title=f"Long tail: popularity rank vs reviews (items: {shares} of reviews)",
               xlabel="rank (1 = most reviewed, log scale)", ylabel="number of reviews (log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        return fig

    # The frequencies behind the plot stay out of summary.json: up to ~20k rows at full scale.
    return Analysis("long_tail", "Long tail of items and users", table, draw)


# --- the job --------------------------------------------------------------------------------------

def _save(analysis: Analysis, out_dir: Path) -> None:
    fig = analysis.draw()
    fig.savefig(out_dir / analysis.png, dpi=110)


def _publish(tmp_dir: Path, eda_dir: Path, run_id: str) -> tuple[Path, Path]:
    """Move the finished output to <eda_dir>/<run_id> and swap a copy in as <eda_dir>/latest.

    The copy is made under a temporary name and renamed in, so the dashboard never sees a partial
    "latest": the old one is first renamed aside (a rename cannot replace a non-empty folder), then
    the new one renamed in, then the old one deleted. Between those two renames (an instant)
    "latest" is absent, which the site must treat as "no EDA yet", not as an error.
    """
    run_dir = eda_dir / run_id
    if run_dir.exists():
        shutil.rmtree(run_dir)
    tmp_dir.rename(run_dir)
    staged = eda_dir / f".latest-{uuid.uuid4().hex}"
    shutil.copytree(run_dir, staged)
    latest, old = eda_dir / "latest", eda_dir / f".old-latest-{uuid.uuid4().hex}"
    if latest.is_symlink():
        latest.unlink()
    elif latest.exists():
        latest.rename(old)
    staged.rename(latest)
    if old.exists():
        shutil.rmtree(old)
    return run_dir, latest


def run_eda(spark: SparkSession, clean_dir: Path, eda_dir: Path, run_id: str) -> dict[str, Any]:
    """Compute every analysis on ``clean_dir`` and publish summary.json and PNGs under ``eda_dir``."""
    started = time.time()
    reviews = spark.read.parquet(str(clean_dir / "reviews"))
    products = spark.read.parquet(str(clean_dir / "products"))
    counts = dataset_counts(reviews, products)
    if counts["reviews"] == 0:
        raise NoData(f"no clean reviews in {clean_dir / 'reviews'}; run load and clean first")

    stats = sentiment_by_product(reviews).persist()  # used by the two product rankings
    try:
        analyses = [
            rating_distribution(reviews), length_vs_rating(reviews),
            most_reviewed(stats, products), least_reviewed(stats, products),
            reviews_over_time(reviews), verified_purchases(reviews), long_tail(reviews),
        ]
    finally:
        stats.unpersist()

    eda_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = eda_dir / f".tmp-{run_id}-{uuid.uuid4().hex}"
    tmp_dir.mkdir()
    try:
        for analysis in analyses:
            _save(analysis, tmp_dir)
        summary = {
            "run_id": run_id,
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": str(clean_dir),
            "counts": counts,
            "analyses": [a.entry() for a in analyses],
        }
        (tmp_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        run_dir, latest = _publish(tmp_dir, eda_dir, run_id)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    dropped = drop_earlier_runs(run_dir, keep={latest.name})  # as train's work folders: one a day otherwise
    return {"status": "ok", "run_id": run_id, "out_dir": str(run_dir), "latest": str(latest),
            "analyses": [a.name for a in analyses], "counts": counts, "dropped_runs": dropped,
            "seconds": round(time.time() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    return run_job(
        "eda", __doc__, argv,
        lambda spark, args: run_eda(spark, settings.data_dir / "clean", settings.eda_dir, args.run_id),
        permanent=(NoData,),  # clean left no reviews: a retry reads the same folder
        summary=lambda record: (f"eda: {len(record['analyses'])} analyses in {record['out_dir']} "
                                f"(and {record['latest']}), {record['seconds']} s"))


if __name__ == "__main__":
    sys.exit(main())
