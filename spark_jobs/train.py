"""Train and evaluate the recommender: ranking model, rating model, baselines, artifacts.

    spark-submit spark_jobs/train.py [--run-id R] [--engine auto|spark|implicit|ease]

Steps, all on the clean reviews:
1. Integer ids for users and items, assigned by Spark (``zipWithIndex``, no driver-side map), so
   they scale to tens of millions of users and items; the driver holds the pairs once, compactly
   (interactions.py). Engine spark keeps them in Spark: its driver gets the pairs of a sample of
   held-out users (eval_users(), ``collect_sample``) for evaluation and the baselines, per-item
   counts and item factors, nothing per user of the whole data; the executors write its serving
   lists (serving_lists_spark.py).
2. Split by time, leave-last-out: each user's latest interaction is the test item, the one before
   the validation item (users with at least 3 interactions); everything else trains.
3. Hyper-parameters are chosen on the validation split only (of a sample of users at scale); the
   chosen configuration is fitted on every user's training pairs for the publish gate's validation
   numbers, then refitted on train + validation and measured once on the test split.
4. Engines (engines.py): ``ease`` and ``implicit`` run on one node (see single_node.py); ``spark``
   is MLlib's implicit ALS for data that does not fit one machine. ``auto`` picks EASE when the catalog is
   small enough, else implicit's iALS when the interactions fit in memory, else Spark (memory
   estimated by ``single_node_bytes`` against SINGLE_NODE_MEMORY_GB, default 60% of RAM).
5. Baselines measured on the same split: popularity, and the seed's explicit ALS (rank 5, maxIter
   30, regParam 0.5, nonnegative) for ranking and RMSE; our RMSE comes from a rating model of
   mean + user/item biases + explicit ALS on the residual, chosen on validation (rating_model.py;
   on a sample of users at scale).
6. Artifacts: a new model version (factors or EASE weights, id maps, params, metrics, the ANN index
   above ANN_MIN_ITEMS items), top-N for every user and similar items per product for publish.py
   to load into MongoDB (serving_lists.py; for engine spark written by the executors,
   serving_lists_spark.py).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import scipy.sparse as sp
from pyspark.sql import SparkSession

from core import artifacts, mongo
from core.runs import DEFAULT_ENGINE, ENGINES
from core.settings import get_settings
from spark_jobs.common import drop_earlier_runs, run_job, without_deleted_users
from spark_jobs.engines import K, choose_engine, eval_users, select_and_test, served_model
from spark_jobs.evaluation import fold_in_ndcg
from spark_jobs.interactions import collect, collect_sample, index_ids, spark_counts, split_by_time
from spark_jobs.rating_model import spark_baselines
from spark_jobs.serving_lists import write_serving_lists
from spark_jobs.serving_lists_spark import write_serving_lists_spark


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
        model.ann = None  # an exact top-k, as the candidate's: the HNSW index would miss some hits
        return {"version": current, **fold_in_ndcg(model, x_train, val, item_ids, k)}
    except Exception as exc:  # noqa: BLE001  recorded, and the gate fails on the missing number
        return {"version": current, f"ndcg@{k}": None, "error": f"{exc.__class__.__name__}: {exc}"}


def train(spark: SparkSession, clean_dir: str, run_id: str, engine: str = DEFAULT_ENGINE) -> dict:
    started = time.time()
    timings: dict[str, float] = {}  # seconds per phase, in the record: where a big run spends its time
    mark = [started]

    def lap(phase: str) -> None:
        now = time.time()
        timings[phase] = round(now - mark[0], 2)
        mark[0] = now

    work = get_settings().data_dir / "train" / run_id
    reviews, n_deleted = without_deleted_users(spark.read.parquet(f"{clean_dir}/reviews"))
    inter, users, items = index_ids(reviews)
    parted = split_by_time(inter).cache()
    counts = {**spark_counts(parted), "deleted_users_left_out": n_deleted}
    print(f"train: {counts}")
    engine = choose_engine(engine, counts["items"], counts["interactions"], counts["users"])
    # MLlib's data stays in Spark: the driver gets the pairs of a sample of held-out users only
    data = (collect_sample(parted, users, items, work, eval_users(counts["items"])) if engine == "spark"
            else collect(parted, users, items, work))
    lap("prepare (ids, split, matrices)")

    # model selection on validation, refit on train+validation, one measurement on test
    ranked = select_and_test(engine, data, spark, parted, work,
                             current=lambda x_train, val: current_on_validation(x_train, val, data.item_ids, K))
    test_m, best = ranked["test"], ranked["best"]
    lap(f"{engine}: validation grid ({len(ranked['trials'])}) + refit + test + popularity")

    x_trval = data.matrix(1)
    test = data.heldout(2, eval_users(data.shape[1]))
    base = spark_baselines(spark, parted, x_trval, test, data.shape, work, sample=data.uids, n_users=counts["users"])
    del x_trval, test
    seed_test, rating_model = base["seed_test"], base["rating_model"]
    test_m["rmse"] = rating_model["rmse"]
    lap("seed ALS and rating model for RMSE (Spark)")

    pop_test = ranked["popularity_test"]
    metrics = {
        "engine": engine, "split": "leave-last-out by time (latest = test, second latest = validation)",
        "k": K, "counts": counts, "test": test_m,
        "validation": {"ndcg@10": ranked["validation"]["ndcg@10"], "popularity_ndcg@10": ranked["popularity_validation"]["ndcg@10"],
                       **({"current": ranked["current_validation"]} if ranked["current_validation"] else {})},
        "baselines": {"popularity": pop_test, "seed_explicit_als": seed_test},
        "rating_model": rating_model,
        "selection": {"best": best, "trials": ranked["trials"], "tuning_sample": ranked["tuning"]},
        "fit_seconds": ranked["fit_seconds"],
    }
    print(json.dumps({k: metrics[k] for k in ("engine", "test", "validation")}, indent=2, default=str))
    print(f"train: popularity ndcg@10={pop_test['ndcg@10']:.4f}  seed ndcg@10={seed_test['ndcg@10']:.4f}  "
          f"ours ndcg@10={test_m['ndcg@10']:.4f}  rmse ours={rating_model['rmse']} seed={rating_model['seed_rmse']}")

    # the served model is fitted on everything we know (train + validation + test)
    factors, params = served_model(engine, best, data, spark, parted, work)
    version = artifacts.save_model(data.item_ids, factors, params, metrics)
    del factors
    lap("served model (fit on all, ANN index)")
    # in the MongoDB record of the version (metrics.json beside the model was written before)
    if engine == "spark":  # by the executors, from the pairs in Spark: nothing per user on the driver
        metrics["serving_lists"] = write_serving_lists_spark(
            spark, version, parted.select("user_id", "iid"))
    else:
        metrics["serving_lists"] = write_serving_lists(version, data.matrix(2), data.user_ids, data.item_ids)
    lap("serving lists (top-N of every user, similar items)")
    mongo.record_model_version(version, {"engine": engine, "published": False, "metrics": metrics,
                                         "params": params, "run_id": run_id, "trained_at": time.time()})
    print("train: seconds per phase: " + ", ".join(f"{k} {v:g}" for k, v in timings.items()))
    # the work folders of earlier runs, each a copy of the interactions (this one stays for
    # bench/pipeline_scale.py, which reads it, until the next train)
    drop_earlier_runs(work)
    return {"status": "ok", "run_id": run_id, "version": version, "engine": engine, "metrics": metrics,
            "timings": timings, "seconds": round(time.time() - started, 2)}


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "train", __doc__, argv,
        lambda spark, args: train(spark, str(get_settings().data_dir / "clean"), args.run_id, args.engine),
        options=lambda parser: parser.add_argument("--engine", default=DEFAULT_ENGINE, choices=ENGINES),
        summary=lambda record: f"train: model version {record['version']} ({record['engine']})")


if __name__ == "__main__":
    sys.exit(main())
