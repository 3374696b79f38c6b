"""The ranking engines (EASE, implicit's iALS on one node, Spark MLlib ALS), the ``auto`` choice
between them, and model selection: tuned on a sample, refitted on everything.

``auto`` picks EASE when the catalog is small enough, else implicit's iALS when the interactions
fit in memory, else Spark (memory estimated by ``single_node_bytes`` against
SINGLE_NODE_MEMORY_GB, default 60% of RAM). Hyper-parameters are chosen on the validation split
of a random sample of users (at most TUNE_MAX_INTERACTIONS of their training pairs): the choice
of a regularisation or a rank does not need every user, and the grid's eight fits then cost what
one small fit costs. The chosen configuration is then fitted on every user's training pairs for the
publish gate's validation numbers (the sample's model is smaller than the one published, so its
number is not the candidate's), refitted on every user's train + validation and measured once on
test, and the served model on everything.

train's --engine choices and the default, ``auto``, are core.runs.ENGINES and DEFAULT_ENGINE, which
the DAG and bin/pipeline offer too.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core import storage
from core.env import env_float, env_floats, env_int
from core.settings import get_settings
from spark_jobs.evaluation import ease_scorer, factor_scorer, popularity_scorer, rank_metrics
from spark_jobs.interactions import Interactions, via_parquet
from spark_jobs.single_node import EASE_MAX_ITEMS, ease_weights, ials_factors

SINGLE_NODE_MAX_INTERACTIONS = env_int("SINGLE_NODE_MAX_INTERACTIONS", 300_000_000)


def single_node_memory() -> float:
    """Bytes the single-node engines may use (``SINGLE_NODE_MEMORY_GB``, unset: 60% of this machine's
    RAM): auto switches to Spark MLlib before an estimate of the job's driver memory passes it
    (single_node_bytes). A value set must be at least 0.1 GB: 0 used to mean 60% of RAM, silently."""
    gb = env_float("SINGLE_NODE_MEMORY_GB", None, minimum=0.1)
    return gb * 2 ** 30 if gb is not None else 0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


SINGLE_NODE_MEMORY = single_node_memory()
EVAL_MAX_USERS = env_int("EVAL_MAX_USERS", 50_000)  # sample of users scored in evaluation
# Full-catalog evaluation scores users x items; on a big catalog the sample shrinks to this many
# scores per evaluation (but keeps >= EVAL_MIN_USERS users: +-0.003 on an NDCG@10 of 0.05), so
# the ~12 evaluations of a run stay minutes, not hours, on 2 cores.
EVAL_MAX_SCORES = env_int("EVAL_MAX_SCORES", 10 ** 9)
EVAL_MIN_USERS = env_int("EVAL_MIN_USERS", 10_000)
# Tuning sample: the grid is fitted on the training pairs of a random sample of users holding about
# this many pairs (all users below it, so small files are tuned on everything).
TUNE_MAX_INTERACTIONS = env_int("TUNE_MAX_INTERACTIONS", 2_000_000)
K = 10
EASE_GRID = env_floats("EASE_LAMBDAS", (50, 100, 200, 400, 800), minimum=1)  # 0: a singular Gram matrix
# Each configuration MLlib tries is a distributed fit over every user (25M interactions: 24-41 min
# per fit on this machine's 2 cores, docs/benchmarks.md), so at the full release's size an operator
# tries fewer than the 4 default.
SPARK_GRID_SIZE = env_int("SPARK_GRID_SIZE", 4, minimum=1)
IALS_GRID = [dict(factors=f, reg=r, alpha=a, iterations=15)
             for f in (32, 64) for r in (0.01, 0.1) for a in (2.0, 10.0)]
# Measured by bench/train_memory.py (train's driver path after Spark hands over the split, on
# 1M, 5M and 10M synthetic interactions; docs/benchmarks.md): peak RSS above the process's base
# was 0.37 GB at 1M (exact serving lists), 1.05 GB at 5M (0.70 GB through the served model's fit,
# then the ANN indexes and the lists' blocks) and 1.51 GB at 10M: 110 bytes per interaction of
# growth between 1M and 10M (before the
# compact layout the whole job grew by 650). The estimate below covers both with a margin: a
# fixed part (evaluation and serving-list blocks on two threads), a part per pair, and one per
# user and item (float32 factor copies at a fit's peak, the HNSW graphs, the id).
FIXED_BYTES = 0.25 * 2 ** 30
BYTES_PER_INTERACTION = 60.0
BYTES_PER_USER_OR_ITEM_BESIDES_FACTORS = 60.0


def single_node_bytes(engine: str, n_interactions: int, n_users: int, n_items: int) -> float:
    """Estimated peak memory of the job's Python driver with a single-node engine, JVM excluded.

    Per interaction: the pairs (5 bytes), the binary CSR matrices cut from them one phase at a time
    (8 bytes each), implicit's scaled and transposed copies during a fit (16); per user and item:
    float32 factors (~3 copies of 4 bytes x factors at the peak of a fit) and the string id; a
    fixed part for the blocks of evaluation and serving lists. Calibrated by bench/train_memory.py
    (see FIXED_BYTES). EASE adds ~4 dense items² float64 matrices.
    """
    factors = max(p["factors"] for p in IALS_GRID)
    total = FIXED_BYTES + BYTES_PER_INTERACTION * n_interactions + (n_users + n_items) * (
        12.0 * factors + BYTES_PER_USER_OR_ITEM_BESIDES_FACTORS)
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


def eval_users(n_items: int) -> int:
    """How many held-out users to score: EVAL_MAX_USERS, fewer on a catalog too big to score them all."""
    return min(EVAL_MAX_USERS, max(EVAL_MIN_USERS, EVAL_MAX_SCORES // max(1, n_items)))


def tuning_sample(data: Interactions, budget: int = TUNE_MAX_INTERACTIONS, seed: int = 13) -> Interactions:
    """A random sample of users holding about ``budget`` training pairs (everyone below it)."""
    n_train = int((data.part == 0).sum())
    if n_train <= budget:
        return data
    n_users = data.shape[0]
    keep = max(1, int(n_users * budget / n_train))
    return data.subset(np.sort(np.random.default_rng(seed).choice(n_users, keep, replace=False)))


def spark_als(spark: SparkSession, df: DataFrame, implicit: bool, **params):
    from pyspark.ml.recommendation import ALS

    als = ALS(userCol="uid", itemCol="iid", ratingCol="rating", implicitPrefs=implicit, seed=7,
              coldStartStrategy="drop", checkpointInterval=10, **params)
    return als.fit(df)


def factors_numpy(model, n_users: int, n_items: int, tmp: Path | str | None = None,
                  user_rows: np.ndarray | None = None, users: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Spark ALS factors as dense arrays indexed by uid/iid (missing rows stay zero), via Parquet
    under ``tmp`` (default DATA_DIR/tmp), which the executors must be able to write.

    ``user_rows``: only these uids' factors, row r for ``user_rows[r]`` (a sample of users: engine
    spark never brings every user's factors to the driver); ``users=False``: items only (None)."""
    rank = model.rank
    out: list[np.ndarray | None] = []
    where = storage.scratch(tmp or get_settings().data_dir / "tmp", "als-factors-")
    user_frame = model.userFactors
    if user_rows is not None:
        spark = model.userFactors.sparkSession
        rows = spark.createDataFrame([(int(u), r) for r, u in enumerate(np.asarray(user_rows).tolist())], "uid int, row int")
        user_frame = (model.userFactors.join(F.broadcast(rows), F.col("id") == F.col("uid"))
                      .select(F.col("row").alias("id"), "features"))
        n_users = len(user_rows)
    try:
        for name, frame, n in (("users", user_frame, n_users), ("items", model.itemFactors, n_items)):
            if name == "users" and not users:
                out.append(None)
                continue
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


def _spark_ials(spark: SparkSession, df: DataFrame, p: dict, shape: tuple[int, int], work: Path,
                user_rows: np.ndarray | None = None, users: bool = True):
    m_ = spark_als(spark, df.withColumn("rating", F.lit(1.0)), True, rank=p["factors"], regParam=p["reg"],
                   alpha=p["alpha"] - 1.0, maxIter=p["iterations"])
    return factors_numpy(m_, *shape, tmp=work, user_rows=user_rows, users=users)


def fit_and_measure(engine: str, params: dict, x: sp.csr_matrix, heldout: dict, parts: int,
                    spark: SparkSession | None = None, parted: DataFrame | None = None,
                    shape: tuple[int, int] = (0, 0), work: Path | None = None,
                    user_rows: np.ndarray | None = None) -> dict:
    """Fit ``params`` on ``x`` (MLlib: on ``parted``'s parts <= ``parts``, every user's pairs, of
    which ``x`` holds the rows of the sampled users ``user_rows``) and rank ``heldout`` with the
    model, which is then dropped."""
    if engine == "ease":
        scorer = ease_scorer(x, ease_weights(x, params["lambda"]))
    elif engine == "implicit":
        scorer = factor_scorer(*ials_factors(x, **params))
    elif engine == "spark":
        scorer = factor_scorer(*_spark_ials(spark, parted.where(f"part <= {parts}"), params, shape, work, user_rows))
    else:
        raise ValueError(f"unknown engine {engine!r}")
    return rank_metrics(scorer, x, heldout, K)


def grid(engine: str) -> list[dict]:
    """The hyper-parameters tried: EASE's lambdas, iALS's grid (its first SPARK_GRID_SIZE for
    MLlib, half of it by default: each MLlib fit is a distributed job over every user)."""
    if engine == "ease":
        return [{"lambda": lam} for lam in EASE_GRID]
    return IALS_GRID[:SPARK_GRID_SIZE] if engine == "spark" else IALS_GRID


def select_and_test(engine: str, data: Interactions, spark: SparkSession | None = None,
                    parted: DataFrame | None = None, work: Path | None = None,
                    current: Any = None) -> dict[str, Any]:
    """Model selection on validation (tuning sample), the gate's validation numbers, refit on
    train + validation, one test measurement, and popularity on the same users.

    The grid is tried on the tuning sample, but the numbers the publish gate compares (ours,
    popularity's, and ``current(x_train, val)``'s: the published version) all come from every
    user's validation split, ours from the chosen configuration refitted on every user's training
    pairs: a model fitted on a 2M-pair sample is a smaller model than the one published, and at
    51M interactions it lost to popularity on validation while the full model beat it on test.
    ``spark``/``parted`` only for engine spark (MLlib fits every user anyway: no tuning sample);
    there ``data`` is the sample of held-out users of ``collect_sample`` (every pair of theirs,
    the whole data's popularity), so evaluation never holds every user on the driver.
    """
    t0 = time.time()
    tune = data if engine == "spark" else tuning_sample(data)
    n_eval = eval_users(data.shape[1])
    fit = dict(spark=spark, parted=parted, shape=data.shape, work=work, user_rows=data.uids)
    x_train, val = tune.matrix(0), tune.heldout(1, n_eval)
    trials = []
    for params in grid(engine):
        trials.append({"params": params, "validation": fit_and_measure(engine, params, x_train, val, 0, **fit)})
        print(f"train: {engine} {params} validation ndcg@10={trials[-1]['validation']['ndcg@10']:.4f}")
    chosen = max(trials, key=lambda t: t["validation"]["ndcg@10"])
    best = chosen["params"]
    if tune is data:
        gate_val = chosen["validation"]
    else:
        del x_train, val
        x_train, val = data.matrix(0), data.heldout(1, n_eval)
        gate_val = fit_and_measure(engine, best, x_train, val, 0, **fit)
        print(f"train: {engine} {best} on every user's training pairs: validation ndcg@10={gate_val['ndcg@10']:.4f}")
    pop_val = rank_metrics(popularity_scorer(x_train, data.popularity(0)), x_train, val, K)
    current_val = current(x_train, val) if current is not None else None
    del x_train, val
    x_trval, test = data.matrix(1), data.heldout(2, n_eval)
    test_m = fit_and_measure(engine, best, x_trval, test, 1, **fit)
    pop_test = rank_metrics(popularity_scorer(x_trval, data.popularity(1)), x_trval, test, K)
    return {"best": best, "trials": trials, "test": test_m, "fit_seconds": round(time.time() - t0, 2),
            "validation": gate_val,
            "tuning": ({"users": "all (MLlib fits every user)", "evaluated_users": tune.shape[0]}
                       if engine == "spark" else {"users": tune.shape[0], "train_pairs": int((tune.part == 0).sum())})
            | {"validation_best_on_sample": chosen["validation"]["ndcg@10"]},
            "popularity_validation": pop_val, "popularity_test": pop_test, "current_validation": current_val}


def served_model(engine: str, best: dict, data: Interactions, spark: SparkSession | None = None,
                 parted: DataFrame | None = None, work: Path | None = None) -> tuple[np.ndarray, dict]:
    """(item factors or EASE weights, params) of the model served: fitted on everything we know
    (MLlib: on ``parted``, of which only the item factors reach the driver)."""
    if engine == "ease":
        return ease_weights(data.matrix(2), best["lambda"]), {"kind": "ease", "lambda": best["lambda"], "engine": engine}
    if engine == "implicit":
        _, factors = ials_factors(data.matrix(2), **best)
    else:
        factors = _spark_ials(spark, parted, best, data.shape, work, users=False)[1]
    # implicit's confidence is c = alpha * w (w = 1), Spark's c = 1 + alpha_spark * w (it gets
    # alpha - 1, the same c); fold-in uses c = 1 + alpha' * w, so alpha' = alpha - 1.
    return factors, {"kind": "ials", "factors": best["factors"], "reg": best["reg"], "alpha": best["alpha"] - 1.0,
                     "weight": "binary", "engine": engine}
