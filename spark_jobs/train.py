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
   small enough, else implicit's iALS when the interactions fit in memory, else Spark (memory
   estimated by ``single_node_bytes`` against SINGLE_NODE_MEMORY_GB, default 60% of RAM).
5. Baselines measured on the same split: popularity, and the seed's explicit ALS (rank 5, maxIter
   30, regParam 0.5, nonnegative) for ranking and RMSE; our RMSE comes from a rating model of
   mean + user/item biases + explicit ALS on the residual, chosen on validation (fit_rating_model).
6. Artifacts: a new model version (factors or EASE weights, id maps, params, metrics), top-N per
   user and similar items per product for publish.py to load into MongoDB.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core import artifacts, mongo, recommend, storage
from core.settings import get_settings
from spark_jobs.common import run_job, without_deleted_users
from spark_jobs.evaluation import ease_scorer, factor_scorer, fold_in_ndcg, popularity_scorer, rank_metrics
from spark_jobs.single_node import EASE_MAX_ITEMS, ease_weights, ials_factors

SINGLE_NODE_MAX_INTERACTIONS = int(os.environ.get("SINGLE_NODE_MAX_INTERACTIONS", "300000000"))
# Memory the single-node engines may use (default 60% of this machine's RAM): auto switches to
# Spark MLlib before an estimate of the job's driver memory passes it (single_node_bytes).
SINGLE_NODE_MEMORY = float(os.environ.get("SINGLE_NODE_MEMORY_GB", "0")) * 2 ** 30 or 0.6 * (
    os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
EVAL_MAX_USERS = int(os.environ.get("EVAL_MAX_USERS", "50000"))  # sample of users scored in evaluation
# Full-catalog evaluation scores users x items; on a big catalog the sample shrinks to this many
# scores per evaluation (but keeps >= EVAL_MIN_USERS users: +-0.003 on an NDCG@10 of 0.05), so
# the ~12 evaluations of a run stay minutes, not hours, on 2 cores.
EVAL_MAX_SCORES = int(float(os.environ.get("EVAL_MAX_SCORES", "1e9")))
EVAL_MIN_USERS = int(os.environ.get("EVAL_MIN_USERS", "10000"))
K = 10
EASE_GRID = [float(x) for x in os.environ.get("EASE_LAMBDAS", "50,100,200,400,800").split(",")]
IALS_GRID = [dict(factors=f, reg=r, alpha=a, iterations=15)
             for f in (32, 64) for r in (0.01, 0.1) for a in (2.0, 10.0)]
SEED_ALS = dict(rank=5, maxIter=30, regParam=0.5, nonnegative=True)
SERVING_BLOCK = int(os.environ.get("SERVING_BLOCK_USERS", "2048"))  # users per batch of serving lists
# Exact lists score every item for every user: users x items x factors multiply-adds, compute-bound
# at ~20 GFLOP/s on 2 cores: ~1 h at 10M reviews (1.7M users x 630k items), ~50 days for the full
# 2018 release (43M x 15M). Above these caps the job writes lists for the most active users and
# similar items for the most rated products only (0 = all). Everyone else still gets a personal
# list: the worker folds in the user's whole stored history at their next rating.
SERVING_MAX_USERS = int(os.environ.get("SERVING_MAX_USERS", "0"))
SERVING_MAX_ITEMS = int(os.environ.get("SERVING_MAX_ITEMS", "0"))


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
    """Add ``part``: 2 = test (latest), 1 = validation (second latest), 0 = train.

    Review times are often whole days, so a user's latest interactions tie. Ties are broken by a
    hash of (user, product), not by product id: ids grow with a product's age in the Amazon data,
    and breaking ties by id put the newer product in test for 64% of Gift Cards users, which a
    model could score on by preferring higher ids rather than by recommending better.
    """
    w = Window.partitionBy("uid").orderBy(F.col("ts").desc(), F.xxhash64("user_id", "product_id").desc())
    n = F.count("*").over(Window.partitionBy("uid"))
    ranked = inter.withColumn("_rn", F.row_number().over(w)).withColumn("_n", n)
    part = (F.when((F.col("_n") >= 3) & (F.col("_rn") == 1), 2)
            .when((F.col("_n") >= 3) & (F.col("_rn") == 2), 1).otherwise(0))
    return ranked.withColumn("part", part.cast("byte")).drop("_rn", "_n")


def via_parquet(df: DataFrame, path: Path | str) -> pa.Table:
    """A DataFrame on the driver as an Arrow table, written by Spark and read back by pyarrow.

    Millions of rows: collecting them as Python rows over Py4J took minutes (the users and factors
    of a 10M-review run) and holds every row as an object; Parquet is columnar and bounded. ``path``
    may be in a bucket (DATA_DIR=s3a://..., core/storage.py), where a cluster's executors can write.
    """
    df.write.mode("overwrite").parquet(storage.spark_uri(path))
    return storage.read_parquet(path)


def to_numpy(df: DataFrame, out_dir: Path) -> dict[str, np.ndarray]:
    """Interactions as numpy arrays (the path is also what bench/pipeline_scale.py reads)."""
    table = via_parquet(df.select("uid", "iid", F.col("rating").cast("float"), "part"), out_dir / "interactions")
    return {c: table.column(c).to_numpy() for c in ("uid", "iid", "rating", "part")}


def id_list(ids: DataFrame, index: str, name: str, out_dir: Path) -> list[str]:
    """The string ids in index order."""
    table = via_parquet(ids, out_dir / f"{name}s")
    positions = table.column(index).to_numpy()
    order = np.argsort(positions, kind="stable")
    if not np.array_equal(positions[order], np.arange(order.size)):
        raise ValueError(f"{index} is not 0..{order.size - 1}")
    values = table.column(name).to_pylist()
    return [values[i] for i in order.tolist()]


def csr(arr: dict[str, np.ndarray], mask: np.ndarray, shape: tuple[int, int], values: str | None = None) -> sp.csr_matrix:
    data = arr[values][mask] if values else np.ones(int(mask.sum()), dtype=np.float32)
    return sp.csr_matrix((data, (arr["uid"][mask], arr["iid"][mask])), shape=shape, dtype=np.float32)


def eval_users(n_items: int) -> int:
    """How many held-out users to score: EVAL_MAX_USERS, fewer on a catalog too big to score them all."""
    return min(EVAL_MAX_USERS, max(EVAL_MIN_USERS, EVAL_MAX_SCORES // max(1, n_items)))


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

def single_node_bytes(engine: str, n_interactions: int, n_users: int, n_items: int) -> float:
    """Estimated peak memory of the job's Python driver with a single-node engine, JVM excluded.

    Calibrated on the scale benchmark (bench/pipeline_scale.py, 2026-11-25): the train job's peak
    RSS grew by 650 bytes per interaction between 1M and 10M synthetic reviews (implicit engine,
    1.7M users and 630k items at 10M). Of that, per user and item: factors in float32 held about
    three times (12 bytes x factors) and the string id (~100); the rest, ~450 bytes per
    interaction, is the (uid, iid, rating, part) arrays, three CSR matrices (train,
    train+validation, all), implicit's binary, scaled and transposed copies, and the temporaries
    of evaluation and serving lists. An earlier guess of 100 bytes was half the truth, and would
    have let ``auto`` pick a single node for ~45M interactions, which need ~30 GB.
    EASE adds ~4 dense items² float64 matrices.
    """
    factors = max(p["factors"] for p in IALS_GRID)
    total = 450.0 * n_interactions + (n_users + n_items) * (12.0 * factors + 100.0)
    if engine == "ease":
        total += 32.0 * n_items ** 2
    return total


def choose_engine(requested: str, n_items: int, n_interactions: int, n_users: int = 0) -> str:
    if requested != "auto":
        return requested
    if n_interactions > SINGLE_NODE_MAX_INTERACTIONS:
        return "spark"
    if n_items <= EASE_MAX_ITEMS and single_node_bytes("ease", n_interactions, n_users, n_items) <= SINGLE_NODE_MEMORY:
        return "ease"
    if single_node_bytes("implicit", n_interactions, n_users, n_items) <= SINGLE_NODE_MEMORY:
        return "implicit"
    return "spark"


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


def factors_numpy(model, n_users: int, n_items: int, tmp: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spark ALS factors as dense arrays indexed by uid/iid (missing rows stay zero), via Parquet
    under ``tmp`` (default DATA_DIR/tmp), which the executors must be able to write."""
    rank = model.rank
    out = []
    where = storage.scratch(tmp or get_settings().data_dir / "tmp", "als-factors-")
    try:
        for name, frame, n in (("users", model.userFactors, n_users), ("items", model.itemFactors, n_items)):
            table = via_parquet(frame, where / name)
            dense = np.zeros((n, rank), np.float32)
            ids = table.column("id").to_numpy()
            if ids.size:
                flat = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                dense[ids] = flat.reshape(ids.size, rank)
            out.append(dense)
    finally:
        storage.remove_tree(where)
    return out[0], out[1]


def rmse(model, df: DataFrame) -> tuple[float | None, int]:
    from pyspark.ml.evaluation import RegressionEvaluator

    pred = model.transform(df)
    n = pred.count()
    if n == 0:
        return None, 0
    return float(RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(pred)), n


# --- the rating model (RMSE) ------------------------------------------------------------------

RATING_BIAS_LAMBDAS = (5.0, 25.0)
RATING_ALS_REGS = (0.1, 0.3, 1.0)


def _biases(df: DataFrame, mu: float, lam: float) -> tuple[DataFrame, DataFrame]:
    """Damped item then user offsets from the mean: b_i = Σ(r − μ)/(n_i + λ), b_u likewise after b_i."""
    bi = df.groupBy("iid").agg((F.sum(F.col("rating") - mu) / (F.count("*") + lam)).alias("bi"))
    bu = (df.join(bi, "iid").groupBy("uid")
          .agg((F.sum(F.col("rating") - mu - F.col("bi")) / (F.count("*") + lam)).alias("bu")))
    return bi, bu


def _rating_rmse(fit: dict, df: DataFrame) -> tuple[float | None, int]:
    """RMSE of μ + b_u + b_i (+ ALS on the residual) on ``df``'s rows whose user and item were fitted.

    Those are the rows Spark ALS with coldStartStrategy="drop" predicts, so the seed's RMSE is
    measured on the same rows.
    """
    pred = df.join(fit["bi"], "iid").join(fit["bu"], "uid")
    pred = pred.withColumn("prediction", F.lit(fit["mu"]) + F.col("bi") + F.col("bu"))
    if fit["als"] is not None:
        pred = (fit["als"].transform(pred.withColumnRenamed("prediction", "base"))
                .withColumn("prediction", F.col("prediction") + F.col("base")))
    row = pred.agg(F.count("*").alias("n"), F.sqrt(F.avg((F.col("prediction") - F.col("rating")) ** 2)).alias("rmse")).first()
    return (float(row["rmse"]) if row["n"] else None), int(row["n"])


def _fit_rating(spark: SparkSession, df: DataFrame, lam: float, reg: float | None) -> dict:
    mu = float(df.agg(F.avg("rating")).first()[0])
    bi, bu = _biases(df, mu, lam)
    bi, bu = bi.cache(), bu.cache()
    als = None
    if reg is not None:
        residual = (df.join(bi, "iid").join(bu, "uid")
                    .select("uid", "iid", (F.col("rating") - mu - F.col("bi") - F.col("bu")).cast("float").alias("rating")))
        als = spark_als(spark, residual, False, rank=10, maxIter=15, regParam=reg)
    return {"mu": mu, "bi": bi, "bu": bu, "als": als}


def _measured(spark: SparkSession, fit_on: DataFrame, measure_on: DataFrame, lam: float,
              reg: float | None) -> tuple[float | None, int]:
    """RMSE on ``measure_on`` of a rating model fitted on ``fit_on``; its cached biases are released
    afterwards (a run fits six, and each caches a row per user and per item)."""
    fit = _fit_rating(spark, fit_on, lam, reg)
    try:
        return _rating_rmse(fit, measure_on)
    finally:
        fit["bi"].unpersist()
        fit["bu"].unpersist()


def fit_rating_model(spark: SparkSession, ratings: DataFrame) -> dict:
    """The explicit rating predictor behind our RMSE: mean + user and item biases + ALS on the rest.

    Plain explicit ALS predicts a dot product that regularisation pulls towards 0 for users and items
    with few ratings; on sparse files (2023 Subscription Boxes, ~1 review per user) that gave RMSE ~4
    on a 1-5 scale, worse than predicting the mean. Modelling the mean and the biases first and the
    residual with ALS is the standard remedy (Koren, Bell & Volinsky 2009). Chosen on validation
    RMSE: the bias damping, then bias-only or ALS on the residual with one of RATING_ALS_REGS; then
    refitted on train + validation and measured once on test.
    """
    train_df, val_df = ratings.where("part = 0"), ratings.where("part = 1")
    trials = []
    for lam in RATING_BIAS_LAMBDAS:
        trials.append({"bias_lambda": lam, "als_reg": None,
                       "validation_rmse": _measured(spark, train_df, val_df, lam, None)[0]})
    best_lam = min(trials, key=lambda t: t["validation_rmse"] if t["validation_rmse"] is not None else 9e9)["bias_lambda"]
    for reg in RATING_ALS_REGS:
        trials.append({"bias_lambda": best_lam, "als_reg": reg,
                       "validation_rmse": _measured(spark, train_df, val_df, best_lam, reg)[0]})
    best = min(trials, key=lambda t: t["validation_rmse"] if t["validation_rmse"] is not None else 9e9)
    test_rmse, n = _measured(spark, ratings.where("part <= 1"), ratings.where("part = 2"),
                             best["bias_lambda"], best["als_reg"])
    print(f"train: rating model {best} test rmse={test_rmse}")
    return {"kind": "mean + user/item biases" + (" + Spark explicit ALS on the residual" if best["als_reg"] else ""),
            "bias_lambda": best["bias_lambda"],
            "als": None if best["als_reg"] is None else {"rank": 10, "maxIter": 15, "regParam": best["als_reg"]},
            "rmse": test_rmse, "rmse_rows": n, "trials": trials}


# --- the job -------------------------------------------------------------------------------

def current_on_validation(x_train: sp.csr_matrix, val: dict[int, list[int]], item_ids: list[str],
                          k: int = K) -> dict[str, Any] | None:
    """The published version's NDCG@k on this run's validation split, for the publish gate.

    The candidate's validation number and this one then come from the same users and held-out
    items in the same run, which is the only fair comparison; a version that cannot be loaded or
    scored is recorded with the error and a ``None`` score (the gate then refuses to publish).
    """
    current = artifacts.current_version()
    if current is None:
        return None
    try:
        model = artifacts.load_model(current)
        return {"version": current, **fold_in_ndcg(model, x_train, val, item_ids, k)}
    except Exception as exc:  # noqa: BLE001  recorded, and the gate fails on the missing number
        return {"version": current, f"ndcg@{k}": None, "error": f"{exc.__class__.__name__}: {exc}"}


def train(spark: SparkSession, clean_dir: str, run_id: str, engine: str = "auto") -> dict:
    started = time.time()
    timings: dict[str, float] = {}  # seconds per phase, in the record: where a big run spends its time
    mark = [started]

    def lap(phase: str) -> None:
        now = time.time()
        timings[phase] = round(now - mark[0], 2)
        mark[0] = now

    settings = get_settings()
    work = settings.data_dir / "train" / run_id
    reviews, n_deleted = without_deleted_users(spark.read.parquet(f"{clean_dir}/reviews"))
    inter, users, items = index_ids(reviews)
    parted = split_by_time(inter).cache()
    arr = to_numpy(parted, work)
    user_ids, item_ids = id_list(users, "uid", "user_id", work), id_list(items, "iid", "product_id", work)
    shape = (len(user_ids), len(item_ids))
    n_inter = int(arr["uid"].size)
    counts = {"interactions": n_inter, "users": shape[0], "items": shape[1], "deleted_users_left_out": n_deleted,
              "train": int((arr["part"] == 0).sum()), "validation": int((arr["part"] == 1).sum()),
              "test": int((arr["part"] == 2).sum())}
    print(f"train: {counts}")
    engine = choose_engine(engine, shape[1], n_inter, shape[0])
    tr, tr_val, everything = arr["part"] == 0, arr["part"] <= 1, np.ones(n_inter, bool)
    x_train, x_trval = csr(arr, tr, shape), csr(arr, tr_val, shape)
    n_eval = eval_users(shape[1])
    val, test = heldout(arr, 1, n_eval), heldout(arr, 2, n_eval)
    lap("prepare (ids, split, matrices)")

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
                           rank=p["factors"], regParam=p["reg"], alpha=p["alpha"] - 1.0, maxIter=p["iterations"])
            uf, itf = factors_numpy(m_, *shape, tmp=work)
            trials.append({"params": p, "validation": rank_metrics(factor_scorer(uf, itf), x_train, val, K)})
        best = max(trials, key=lambda t: t["validation"]["ndcg@10"])["params"]
        m_ = spark_als(spark, parted.where("part <= 1").withColumn("rating", F.lit(1.0)), True,
                       rank=best["factors"], regParam=best["reg"], alpha=best["alpha"] - 1.0, maxIter=best["iterations"])
        uf, itf = factors_numpy(m_, *shape, tmp=work)
        test_m = rank_metrics(factor_scorer(uf, itf), x_trval, test, K)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    fit_seconds = round(time.time() - t0, 2)
    validation_best = max(t["validation"]["ndcg@10"] for t in trials)
    lap(f"{engine}: validation grid ({len(trials)}) + refit + test")

    # baselines on the same split
    pop_val = rank_metrics(popularity_scorer(x_train), x_train, val, K)
    current_val = current_on_validation(x_train, val, item_ids, K)
    pop_test = rank_metrics(popularity_scorer(x_trval), x_trval, test, K)
    lap("popularity")
    ratings_df = parted.select("uid", "iid", F.col("rating").cast("float"), "part")
    seed = spark_als(spark, ratings_df.where("part <= 1"), False, **SEED_ALS)
    seed_rmse, seed_n = rmse(seed, ratings_df.where("part = 2"))
    s_uf, s_itf = factors_numpy(seed, *shape, tmp=work)
    seed_test = {**rank_metrics(factor_scorer(s_uf, s_itf), x_trval, test, K), "rmse": seed_rmse}
    lap("seed ALS (Spark)")
    rating_model = fit_rating_model(spark, ratings_df)
    our_rmse, rmse_n = rating_model["rmse"], rating_model["rmse_rows"]
    test_m["rmse"] = our_rmse
    lap("explicit ALS for RMSE (Spark)")

    metrics = {
        "engine": engine, "split": "leave-last-out by time (latest = test, second latest = validation)",
        "k": K, "counts": counts, "test": test_m,
        "validation": {"ndcg@10": validation_best, "popularity_ndcg@10": pop_val["ndcg@10"],
                       **({"current": current_val} if current_val else {})},
        "baselines": {"popularity": pop_test, "seed_explicit_als": seed_test},
        "rating_model": {**rating_model, "seed_rmse": seed_rmse, "seed_rmse_rows": seed_n},
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
                           regParam=best["reg"], alpha=best["alpha"] - 1.0, maxIter=best["iterations"])
            factors = factors_numpy(m_, *shape, tmp=work)[1]
        # implicit's confidence is c = alpha * w (w = 1), Spark's c = 1 + alpha_spark * w (it gets
        # alpha - 1, the same c); fold-in uses c = 1 + alpha' * w, so alpha' = alpha - 1.
        params = {"kind": "ials", "factors": best["factors"], "reg": best["reg"], "alpha": best["alpha"] - 1.0,
                  "weight": "binary", "engine": engine}
    version = artifacts.save_model(item_ids, factors, params, metrics)
    lap("served model (fit on all)")
    # in the MongoDB record of the version (metrics.json beside the model was written before)
    metrics["serving_lists"] = write_serving_lists(version, x_all, user_ids, item_ids)
    lap("serving lists (top-N of every user, similar items)")
    mongo.record_model_version(version, {"engine": engine, "published": False, "metrics": metrics,
                                         "params": params, "run_id": run_id, "trained_at": time.time()})
    print("train: seconds per phase: " + ", ".join(f"{k} {v:g}" for k, v in timings.items()))
    return {"status": "ok", "run_id": run_id, "version": version, "engine": engine, "metrics": metrics,
            "timings": timings, "seconds": round(time.time() - started, 2)}


def most_active(counts: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the ``cap`` rows with the largest counts (ties by index), in index order; all if cap <= 0."""
    if cap <= 0 or cap >= counts.size:
        return np.arange(counts.size)
    order = np.lexsort((np.arange(counts.size), -counts))
    return np.sort(order[:cap])


def write_serving_lists(version: str, x_all: sp.csr_matrix, user_ids: list[str], item_ids: list[str],
                        n: int | None = None, block: int = SERVING_BLOCK, max_users: int = SERVING_MAX_USERS,
                        max_items: int = SERVING_MAX_ITEMS) -> dict[str, int]:
    """Top-N per user and similar items per product, as JSON lines beside the model for publish.py.

    The lists are what ``recommend``/``similar_items`` give one user or item (every rated item
    counts 1.0, as the worker's fold-in of the same history), computed ``block`` users at a time by
    ``recommend_many``: one call per user took 8 ms on a 60k-item catalog (3 h for 1.5M users);
    blocks are ~16x faster there and ~6x at 600k items, where scoring every item dominates
    (bench/serving_lists.py). Returns how many users and items got lists, of how many.
    """
    model = artifacts.load_model(version)
    if list(model.item_ids) != list(item_ids):
        raise ValueError("the model's items are not the matrix's columns")
    n = n or get_settings().top_n
    d = artifacts.models_dir() / version
    excluded = mongo.all_exclusions()  # "not interested": asked for n more, then left out
    extra = max((len(v) for v in excluded.values()), default=0)
    rated = (x_all > 0).astype(np.float64).tocsr()
    users = most_active(np.diff(rated.indptr), max_users)
    items = most_active(np.asarray(rated.getnnz(axis=0)), max_items)
    if model.kind == "ease":  # dense (block x items) scores: keep a block near 2^24 cells
        block = max(1, min(block, 2 ** 24 // max(1, len(item_ids))))
    with storage.open_text_output(d / "topn.jsonl") as f:
        for start in range(0, users.size, block):
            rows = users[start:start + block]
            lists = recommend.recommend_many(model, rated[rows], n + extra)
            f.write("".join(json.dumps({"_id": user_ids[u], "items": recommend.without_excluded(
                got, excluded.get(user_ids[u], ()), n)}) + "\n" for u, got in zip(rows.tolist(), lists)))
    with storage.open_text_output(d / "similar.jsonl") as f:
        for start in range(0, items.size, block):
            idx = items[start:start + block]
            f.write("".join(json.dumps({"_id": item_ids[i], "items": got}) + "\n"
                            for i, got in zip(idx.tolist(), recommend.similar_many(model, idx, 10))))
    out = {"users_listed": int(users.size), "users": int(rated.shape[0]),
           "items_listed": int(items.size), "items": int(rated.shape[1])}
    if users.size < rated.shape[0] or items.size < rated.shape[1]:
        print(f"train: serving lists capped: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "train", __doc__, argv,
        lambda spark, args: train(spark, str(get_settings().data_dir / "clean"), args.run_id, args.engine),
        options=lambda parser: parser.add_argument("--engine", default="auto",
                                                   choices=["auto", "ease", "implicit", "spark"]),
        summary=lambda record: f"train: model version {record['version']} ({record['engine']})")


if __name__ == "__main__":
    sys.exit(main())
