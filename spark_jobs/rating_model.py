"""Explicit rating models behind RMSE: ours (mean + user/item biases + ALS on the residual) and the
seed's plain explicit ALS, the baseline it replaces, both fitted by Spark.

At scale both are fitted and measured on the interactions of a random sample of users
(BASELINE_MAX_USERS, default 200,000; every user below it): six fits of our model and the seed's
on every one of tens of millions of interactions would cost more than the ranking model itself,
and RMSE on 200k users' test rows is precise to the third decimal. The ranking baselines (the
seed's factors scored on those users' held-out items) use the same sample.
"""
from __future__ import annotations


import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core.env import env_int
from spark_jobs.engines import K, factors_numpy, spark_als
from spark_jobs.evaluation import factor_scorer, rank_metrics

SEED_ALS = dict(rank=5, maxIter=30, regParam=0.5, nonnegative=True)
BASELINE_MAX_USERS = env_int("BASELINE_MAX_USERS", 200_000)


def rmse(model, df: DataFrame) -> tuple[float | None, int]:
    from pyspark.ml.evaluation import RegressionEvaluator

    pred = model.transform(df)
    n = pred.count()
    if n == 0:
        return None, 0
    return float(RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(pred)), n


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


def baseline_users(n_users: int, max_users: int = BASELINE_MAX_USERS, seed: int = 17) -> np.ndarray | None:
    """A fixed random sample of user indices for the Spark baselines, or None for everyone."""
    if max_users <= 0 or n_users <= max_users:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_users, max_users, replace=False))


def spark_baselines(spark: SparkSession, parted: DataFrame, x_trval, test: dict[int, list[int]],
                    shape: tuple[int, int], work, sample: np.ndarray | None = None, n_users: int = 0) -> dict:
    """The seed's explicit ALS (ranking on test, RMSE) and our rating model, on a sample of users at scale.

    ``sample``: the uids of ``x_trval``'s rows when it holds a sample of users (engine spark's held-out
    users, collect_sample) of ``n_users``; the baselines are then fitted and measured on that sample,
    and only its users' seed factors reach the driver.
    """
    ratings = parted.select("uid", "iid", F.col("rating").cast("float"), "part")
    users = baseline_users(shape[0]) if sample is None else np.asarray(sample)
    n_users = n_users or shape[0]
    if users is not None:
        chosen = spark.createDataFrame([(int(u),) for u in users.tolist()], "uid int")
        ratings = ratings.join(F.broadcast(chosen), "uid")
        if sample is None:
            keep = set(users.tolist())
            test = {u: v for u, v in test.items() if u in keep}
    seed = spark_als(spark, ratings.where("part <= 1"), False, **SEED_ALS)
    seed_rmse, seed_n = rmse(seed, ratings.where("part = 2"))
    s_uf, s_itf = factors_numpy(seed, *shape, tmp=work, user_rows=sample)
    seed_test = {**rank_metrics(factor_scorer(s_uf, s_itf), x_trval, test, K), "rmse": seed_rmse}
    del s_uf, s_itf
    model = fit_rating_model(spark, ratings)
    sample = {"users": int(users.size) if users is not None else n_users, "of": n_users}
    return {"seed_test": seed_test, "rating_model": {**model, "seed_rmse": seed_rmse, "seed_rmse_rows": seed_n,
                                                     "users_sampled": sample}}
