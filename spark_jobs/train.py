"""Train and evaluate the recommender: ranking model, rating model, baselines, artifacts.

    spark-submit spark_jobs/train.py [--run-id R] [--engine auto|spark|implicit|ease]

Steps, all on the clean reviews:
1. Integer ids for users and items, assigned by Spark (``zipWithIndex``, no driver-side map), so
   they scale to tens of millions of users and items.
2. Split by time, leave-last-out: each user's latest interaction is the test item, the one before
   the validation item (users with at least 3 interactions); everything else trains.
3. Hyper-parameters are chosen on the validation split only; the chosen configuration is then
   refitted on train + validation and measured once on the test split.
4. Engines: ``ease`` and ``implicit`` run on one node (see single_node.py); ``spark`` is MLlib's
   implicit ALS for data that does not fit one machine. ``auto`` picks EASE when the catalog is
   small enough, else implicit's iALS when the interactions fit in memory, else Spark.
5. Baselines measured on the same split: popularity, and the seed's explicit ALS (rank 5, maxIter
   30, regParam 0.5, nonnegative) for ranking and RMSE; plus our own tuned explicit ALS for RMSE.
6. Artifacts: a new model version (factors or EASE weights, id maps, params, metrics), top-N per
   user and similar items per product for publish.py to load into MongoDB.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script by spark-submit: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import artifacts, mongo, recommend
from core.settings import get_settings
from spark_jobs.common import run_id_arg, spark_session
from spark_jobs.evaluation import ease_scorer, factor_scorer, popularity_scorer, rank_metrics
from spark_jobs.reconcile import write_record
from spark_jobs.single_node import EASE_MAX_ITEMS, ease_weights, ials_factors

SINGLE_NODE_MAX_INTERACTIONS = int(os.environ.get("SINGLE_NODE_MAX_INTERACTIONS", "300000000"))
EVAL_MAX_USERS = int(os.environ.get("EVAL_MAX_USERS", "50000"))  # sample of users scored in evaluation
K = 10
EASE_GRID = [float(x) for x in os.environ.get("EASE_LAMBDAS", "50,100,200,400,800").split(",")]
IALS_GRID = [dict(factors=f, reg=r, alpha=a, iterations=15)
             for f in (32, 64) for r in (0.01, 0.1) for a in (2.0, 10.0)]
SEED_ALS = dict(rank=5, maxIter=30, regParam=0.5, nonnegative=True)


# --- data ----------------------------------------------------------------------------------

def index_ids(reviews: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(interactions with int uid/iid, users(uid, user_id), items(iid, product_id))."""
    spark = reviews.sparkSession

    def dense(col: str, idx: str) -> DataFrame:
        rdd = reviews.select(col).distinct().orderBy(col).rdd.map(lambda r: r[0]).zipWithIndex()
        return spark.createDataFrame(rdd, f"{col} string, {idx} long").withColumn(idx, F.col(idx).cast("int"))

    users, items = dense("user_id", "uid"), dense("product_id", "iid")
    inter = reviews.select("user_id", "product_id", "rating", "ts").join(users, "user_id").join(items, "product_id")
    return inter, users, items


def split_by_time(inter: DataFrame) -> DataFrame:
    """Add ``part``: 2 = test (latest), 1 = validation (second latest), 0 = train."""
    w = Window.partitionBy("uid").orderBy(F.col("ts").desc(), F.col("iid").desc())
    n = F.count("*").over(Window.partitionBy("uid"))
    ranked = inter.withColumn("_rn", F.row_number().over(w)).withColumn("_n", n)
    part = (F.when((F.col("_n") >= 3) & (F.col("_rn") == 1), 2)
            .when((F.col("_n") >= 3) & (F.col("_rn") == 2), 1).otherwise(0))
    return ranked.withColumn("part", part.cast("byte")).drop("_rn", "_n")


def to_numpy(df: DataFrame, out_dir: Path) -> dict[str, np.ndarray]:
    """Interactions as numpy arrays via Parquet (no Py4J row transfer, bounded driver memory)."""
    path = str(out_dir / "interactions")
    df.select("uid", "iid", F.col("rating").cast("float"), "part").write.mode("overwrite").parquet(path)
    table = pq.read_table(path)
    return {c: table.column(c).to_numpy() for c in ("uid", "iid", "rating", "part")}


def csr(arr: dict[str, np.ndarray], mask: np.ndarray, shape: tuple[int, int], values: str | None = None) -> sp.csr_matrix:
    data = arr[values][mask] if values else np.ones(int(mask.sum()), dtype=np.float32)
    return sp.csr_matrix((data, (arr["uid"][mask], arr["iid"][mask])), shape=shape, dtype=np.float32)


def heldout(arr: dict[str, np.ndarray], part: int, max_users: int, seed: int = 11) -> dict[int, list[int]]:
    mask = arr["part"] == part
    users, items = arr["uid"][mask], arr["iid"][mask]
    out: dict[int, list[int]] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        out.setdefault(u, []).append(i)
    if len(out) > max_users:  # a fixed random sample keeps evaluation time bounded at any scale
        keep = np.random.default_rng(seed).choice(np.array(sorted(out)), max_users, replace=False)
        out = {int(u): out[int(u)] for u in keep}
    return out


# --- engines -------------------------------------------------------------------------------

def choose_engine(requested: str, n_items: int, n_interactions: int) -> str:
    if requested != "auto":
        return requested
    if n_interactions > SINGLE_NODE_MAX_INTERACTIONS:
        return "spark"
    return "ease" if n_items <= EASE_MAX_ITEMS else "implicit"


def fit_ease(train: sp.csr_matrix, val: dict, grid: list[float]) -> tuple[dict, list[dict]]:
    trials = []
    for lam in grid:
        m = rank_metrics(ease_scorer(train, ease_weights(train, lam)), train, val, K)
        trials.append({"params": {"lambda": lam}, "validation": m})
        print(f"train: ease lambda={lam:g} validation ndcg@10={m['ndcg@10']:.4f}")
    return max(trials, key=lambda t: t["validation"]["ndcg@10"])["params"], trials


def fit_ials(train: sp.csr_matrix, val: dict, grid: list[dict]) -> tuple[dict, list[dict]]:
    trials = []
    for params in grid:
        uf, itf = ials_factors(train, **params)
        m = rank_metrics(factor_scorer(uf, itf), train, val, K)
        trials.append({"params": params, "validation": m})
        print(f"train: ials {params} validation ndcg@10={m['ndcg@10']:.4f}")
    return max(trials, key=lambda t: t["validation"]["ndcg@10"])["params"], trials


def spark_als(spark: SparkSession, df: DataFrame, implicit: bool, **params):
    from pyspark.ml.recommendation import ALS

    als = ALS(userCol="uid", itemCol="iid", ratingCol="rating", implicitPrefs=implicit, seed=7,
              coldStartStrategy="drop", checkpointInterval=10, **params)
    return als.fit(df)


def factors_numpy(model, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Spark ALS factors as dense arrays indexed by uid/iid (missing rows stay zero)."""
    rank = model.rank
    uf, itf = np.zeros((n_users, rank), np.float32), np.zeros((n_items, rank), np.float32)
    for r in model.userFactors.toLocalIterator():
        uf[r["id"]] = r["features"]
    for r in model.itemFactors.toLocalIterator():
        itf[r["id"]] = r["features"]
    return uf, itf


def rmse(model, df: DataFrame) -> tuple[float | None, int]:
    from pyspark.ml.evaluation import RegressionEvaluator

    pred = model.transform(df)
    n = pred.count()
    if n == 0:
        return None, 0
    return float(RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(pred)), n


# --- the job -------------------------------------------------------------------------------

def train(spark: SparkSession, clean_dir: str, run_id: str, engine: str = "auto") -> dict:
    started = time.time()
    settings = get_settings()
    work = settings.data_dir / "train" / run_id
    reviews = spark.read.parquet(f"{clean_dir}/reviews")
    inter, users, items = index_ids(reviews)
    parted = split_by_time(inter).cache()
    arr = to_numpy(parted, work)
    user_ids = [r["user_id"] for r in users.orderBy("uid").toLocalIterator()]
    item_ids = [r["product_id"] for r in items.orderBy("iid").toLocalIterator()]
    shape = (len(user_ids), len(item_ids))
    n_inter = int(arr["uid"].size)
    counts = {"interactions": n_inter, "users": shape[0], "items": shape[1],
              "train": int((arr["part"] == 0).sum()), "validation": int((arr["part"] == 1).sum()),
              "test": int((arr["part"] == 2).sum())}
    print(f"train: {counts}")
    engine = choose_engine(engine, shape[1], n_inter)
    tr, tr_val, everything = arr["part"] == 0, arr["part"] <= 1, np.ones(n_inter, bool)
    x_train, x_trval = csr(arr, tr, shape), csr(arr, tr_val, shape)
    val, test = heldout(arr, 1, EVAL_MAX_USERS), heldout(arr, 2, EVAL_MAX_USERS)

    # model selection on validation, refit on train+validation, one measurement on test
    t0 = time.time()
    if engine == "ease":
        best, trials = fit_ease(x_train, val, EASE_GRID)
        weights = ease_weights(x_trval, best["lambda"])
        test_m = rank_metrics(ease_scorer(x_trval, weights), x_trval, test, K)
    elif engine == "implicit":
        best, trials = fit_ials(x_train, val, IALS_GRID)
        uf, itf = ials_factors(x_trval, **best)
        test_m = rank_metrics(factor_scorer(uf, itf), x_trval, test, K)
    elif engine == "spark":
        trials = []
        for p in IALS_GRID[:4]:
            m_ = spark_als(spark, parted.where("part = 0").withColumn("rating", F.lit(1.0)), True,
                           rank=p["factors"], regParam=p["reg"], alpha=p["alpha"], maxIter=p["iterations"])
            uf, itf = factors_numpy(m_, *shape)
            trials.append({"params": p, "validation": rank_metrics(factor_scorer(uf, itf), x_train, val, K)})
        best = max(trials, key=lambda t: t["validation"]["ndcg@10"])["params"]
        m_ = spark_als(spark, parted.where("part <= 1").withColumn("rating", F.lit(1.0)), True,
                       rank=best["factors"], regParam=best["reg"], alpha=best["alpha"], maxIter=best["iterations"])
        uf, itf = factors_numpy(m_, *shape)
        test_m = rank_metrics(factor_scorer(uf, itf), x_trval, test, K)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    fit_seconds = round(time.time() - t0, 2)
    validation_best = max(t["validation"]["ndcg@10"] for t in trials)

    # baselines on the same split
    pop_val = rank_metrics(popularity_scorer(x_train), x_train, val, K)
    pop_test = rank_metrics(popularity_scorer(x_trval), x_trval, test, K)
    ratings_df = parted.select("uid", "iid", F.col("rating").cast("float"), "part")
    seed = spark_als(spark, ratings_df.where("part <= 1"), False, **SEED_ALS)
    seed_rmse, seed_n = rmse(seed, ratings_df.where("part = 2"))
    s_uf, s_itf = factors_numpy(seed, *shape)
    seed_test = {**rank_metrics(factor_scorer(s_uf, s_itf), x_trval, test, K), "rmse": seed_rmse}
    explicit_trials = []
    for reg in (0.05, 0.1, 0.3):
        m_ = spark_als(spark, ratings_df.where("part = 0"), False, rank=10, maxIter=15, regParam=reg)
        explicit_trials.append((rmse(m_, ratings_df.where("part = 1"))[0] or 9e9, reg))
    best_reg = min(explicit_trials)[1]
    explicit = spark_als(spark, ratings_df.where("part <= 1"), False, rank=10, maxIter=15, regParam=best_reg)
    our_rmse, rmse_n = rmse(explicit, ratings_df.where("part = 2"))
    test_m["rmse"] = our_rmse

    metrics = {
        "engine": engine, "split": "leave-last-out by time (latest = test, second latest = validation)",
        "k": K, "counts": counts, "test": test_m,
        "validation": {"ndcg@10": validation_best, "popularity_ndcg@10": pop_val["ndcg@10"]},
        "baselines": {"popularity": pop_test, "seed_explicit_als": seed_test},
        "rating_model": {"kind": "spark explicit ALS", "rank": 10, "maxIter": 15, "regParam": best_reg,
                         "rmse": our_rmse, "rmse_rows": rmse_n, "seed_rmse": seed_rmse, "seed_rmse_rows": seed_n},
        "selection": {"best": best, "trials": trials},
        "fit_seconds": fit_seconds,
    }
    print(json.dumps({k: metrics[k] for k in ("engine", "test", "validation")}, indent=2, default=str))
    print(f"train: popularity ndcg@10={pop_test['ndcg@10']:.4f}  seed ndcg@10={seed_test['ndcg@10']:.4f}  "
          f"ours ndcg@10={test_m['ndcg@10']:.4f}  rmse ours={our_rmse} seed={seed_rmse}")

    # the served model is fitted on everything we know (train + validation + test)
    x_all = csr(arr, everything, shape)
    if engine == "ease":
        params = {"kind": "ease", "lambda": best["lambda"], "engine": engine}
        factors = ease_weights(x_all, best["lambda"])
    else:
        if engine == "implicit":
            _, factors = ials_factors(x_all, **best)
        else:
            m_ = spark_als(spark, parted.withColumn("rating", F.lit(1.0)), True, rank=best["factors"],
                           regParam=best["reg"], alpha=best["alpha"], maxIter=best["iterations"])
            factors = factors_numpy(m_, *shape)[1]
        # implicit/Spark use confidence c = alpha * w for w = 1; fold-in uses c = 1 + alpha' * w.
        params = {"kind": "ials", "factors": best["factors"], "reg": best["reg"], "alpha": best["alpha"] - 1.0,
                  "weight": "binary", "engine": engine}
    version = artifacts.save_model(item_ids, factors, params, metrics)
    write_serving_lists(version, x_all, user_ids, item_ids)
    mongo.record_model_version(version, {"engine": engine, "published": False, "metrics": metrics,
                                         "params": params, "run_id": run_id, "trained_at": time.time()})
    return {"status": "ok", "run_id": run_id, "version": version, "engine": engine, "metrics": metrics,
            "seconds": round(time.time() - started, 2)}


def write_serving_lists(version: str, x_all: sp.csr_matrix, user_ids: list[str], item_ids: list[str],
                        n: int | None = None) -> None:
    """Top-N per user and similar items per product, as JSON lines beside the model for publish.py."""
    model = artifacts.load_model(version)
    n = n or get_settings().top_n
    d = artifacts.models_dir() / version
    with open(d / "topn.jsonl", "w") as f:
        for u in range(x_all.shape[0]):
            row = x_all[u]
            rated = {item_ids[i]: 1.0 for i in row.indices.tolist()}
            f.write(json.dumps({"_id": user_ids[u], "items": recommend.recommend(model, rated, n)}) + "\n")
    with open(d / "similar.jsonl", "w") as f:
        for pid in item_ids:
            f.write(json.dumps({"_id": pid, "items": recommend.similar_items(model, pid, 10)}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_id_arg(parser)
    parser.add_argument("--engine", default="auto", choices=["auto", "ease", "implicit", "spark"])
    args = parser.parse_args(argv)
    spark = spark_session("train")
    try:
        record = train(spark, str(get_settings().data_dir / "clean"), args.run_id, args.engine)
    finally:
        spark.stop()
    write_record(args.run_id, "train", record)
    print(f"train: model version {record['version']} ({record['engine']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
