"""The ranking engines (EASE, implicit's iALS on one node, Spark MLlib ALS), the ``auto`` choice
between them, and model selection: tuned on a sample, refitted on everything.

``auto`` picks EASE when the catalog is small enough, else implicit's iALS when the interactions
fit in memory, else Spark (memory estimated by ``single_node_bytes`` against
SINGLE_NODE_MEMORY_GB, default 60% of RAM). Hyper-parameters are chosen on the validation split
of a random sample of users (at most TUNE_MAX_INTERACTIONS of their training pairs): the choice
of a regularisation or a rank does not need every user, and the grid's eight fits then cost what
one small fit costs. The chosen configuration is refitted on every user's train + validation and
measured once on test, and the served model on everything.
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
from core.settings import get_settings
from spark_jobs.evaluation import ease_scorer, factor_scorer, popularity_scorer, rank_metrics
from spark_jobs.interactions import Interactions, via_parquet
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
# Tuning sample: the grid is fitted on the training pairs of a random sample of users holding about
# this many pairs (all users below it, so small files are tuned on everything).
TUNE_MAX_INTERACTIONS = int(float(os.environ.get("TUNE_MAX_INTERACTIONS", "2e6")))
K = 10
EASE_GRID = [float(x) for x in os.environ.get("EASE_LAMBDAS", "50,100,200,400,800").split(",")]
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
        del uf, itf
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


def _spark_ials(spark: SparkSession, df: DataFrame, p: dict, shape: tuple[int, int], work: Path):
    m_ = spark_als(spark, df.withColumn("rating", F.lit(1.0)), True, rank=p["factors"], regParam=p["reg"],
                   alpha=p["alpha"] - 1.0, maxIter=p["iterations"])
    return factors_numpy(m_, *shape, tmp=work)


def select_and_test(engine: str, data: Interactions, spark: SparkSession | None = None,
                    parted: DataFrame | None = None, work: Path | None = None,
                    current: Any = None) -> dict[str, Any]:
    """Model selection on validation (tuning sample), refit on train + validation, one test measurement,
    and popularity on the same users. ``current(x_train, val)`` scores the published version on the
    tuning validation split (the publish gate's comparison). ``spark``/``parted`` only for engine spark.
    """
    t0 = time.time()
    tune = tuning_sample(data)
    n_eval = eval_users(data.shape[1])
    x_train, val = tune.matrix(0), tune.heldout(1, n_eval)
    if engine == "ease":
        best, trials = fit_ease(x_train, val, EASE_GRID)
    elif engine == "implicit":
        best, trials = fit_ials(x_train, val, IALS_GRID)
    elif engine == "spark":
        trials = []
        x_train, val = data.matrix(0), data.heldout(1, n_eval)  # MLlib fits every user anyway
        for p in IALS_GRID[:4]:
            uf, itf = _spark_ials(spark, parted.where("part = 0"), p, data.shape, work)
            trials.append({"params": p, "validation": rank_metrics(factor_scorer(uf, itf), x_train, val, K)})
        best = max(trials, key=lambda t: t["validation"]["ndcg@10"])["params"]
    else:
        raise ValueError(f"unknown engine {engine!r}")
    pop_val = rank_metrics(popularity_scorer(x_train), x_train, val, K)
    current_val = current(x_train, val) if current is not None else None
    del x_train, val
    x_trval, test = data.matrix(1), data.heldout(2, n_eval)
    if engine == "ease":
        test_m = rank_metrics(ease_scorer(x_trval, ease_weights(x_trval, best["lambda"])), x_trval, test, K)
    elif engine == "implicit":
        uf, itf = ials_factors(x_trval, **best)
        test_m = rank_metrics(factor_scorer(uf, itf), x_trval, test, K)
        del uf, itf
    else:
        uf, itf = _spark_ials(spark, parted.where("part <= 1"), best, data.shape, work)
        test_m = rank_metrics(factor_scorer(uf, itf), x_trval, test, K)
        del uf, itf
    pop_test = rank_metrics(popularity_scorer(x_trval), x_trval, test, K)
    return {"best": best, "trials": trials, "test": test_m, "fit_seconds": round(time.time() - t0, 2),
            "validation_best": max(t["validation"]["ndcg@10"] for t in trials),
            "tuning": {"users": tune.shape[0], "train_pairs": int((tune.part == 0).sum())},
            "popularity_validation": pop_val, "popularity_test": pop_test, "current_validation": current_val}


def served_model(engine: str, best: dict, data: Interactions, spark: SparkSession | None = None,
                 parted: DataFrame | None = None, work: Path | None = None) -> tuple[np.ndarray, dict]:
    """(item factors or EASE weights, params) of the model served: fitted on everything we know."""
    x_all = data.matrix(2)
    if engine == "ease":
        return ease_weights(x_all, best["lambda"]), {"kind": "ease", "lambda": best["lambda"], "engine": engine}
    if engine == "implicit":
        _, factors = ials_factors(x_all, **best)
    else:
        factors = _spark_ials(spark, parted, best, data.shape, work)[1]
    # implicit's confidence is c = alpha * w (w = 1), Spark's c = 1 + alpha_spark * w (it gets
    # alpha - 1, the same c); fold-in uses c = 1 + alpha' * w, so alpha' = alpha - 1.
    return factors, {"kind": "ials", "factors": best["factors"], "reg": best["reg"], "alpha": best["alpha"] - 1.0,
                     "weight": "binary", "engine": engine}
