"""The serving lists of an MLlib-trained version, computed and written by Spark's executors.

``serving_lists.write_serving_lists`` scores users on the driver from a CSR matrix of every pair:
memory per user and per pair on one machine, which is what engine ``spark`` is there to avoid (the
full release has tens of millions of users). Here each executor task takes a batch of users with
the items they have (grouped by Spark), loads the saved model version once per Python worker, and
runs the very same ``core.recommend.recommend_many`` on them (the fold-in of every rated item as
1.0, top-N without the items they have and without their "not interested" products, the "because"
item of each entry), then ``similar_many`` per item; the JSON lines are written by the executors as
the gzipped part files of a folder named like the driver's lists (``topn.jsonl/part-*.txt.gz``,
``similar.jsonl/`` with Spark's ``_SUCCESS`` marker), which publish.py reads part by part. The driver holds only the
item factors (per item), the exclusions of the few users who have any, and a cosine ANN index
over the items when the model has one.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from core import ann, artifacts, recommend, shopper_controls, storage
from core.settings import get_settings
from spark_jobs.serving_lists import (SERVING_BLOCK, SERVING_MAX_ITEMS, SERVING_MAX_USERS, item_line, user_block,
                                      user_lines)

COSINE_FILE = "cosine.faiss"  # the similar-items index over unit-length factors, built once by the driver
_LOADED: dict[tuple[str, str], tuple[artifacts.Model, object]] = {}


def _model(root: str, version: str, cosine: bool = False) -> tuple[artifacts.Model, object]:
    """The version's model (and its cosine index when asked), loaded once per Python worker."""
    key = (root, version)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = (artifacts.load_model(version, root), None)
    model, index = _LOADED[key]
    if cosine and index is None and model.ann is not None:
        index = ann.load(artifacts.models_dir(root) / version / COSINE_FILE, ann.unit_rows(model.item_factors))
        _LOADED[key] = (model, index)
    return model, index


def _user_lines(root: str, version: str, n: int, excluded, block: int):
    def run(batches: Iterator) -> Iterator:
        import pandas as pd
        import scipy.sparse as sp

        model, _ = _model(root, version)
        excl = excluded.value
        step = user_block(model, len(model.item_ids), block)
        for pdf in batches:
            for s in range(0, len(pdf), step):
                part = pdf.iloc[s:s + step]
                lens = part["items"].map(len).to_numpy()
                indptr = np.zeros(lens.size + 1, np.int64)
                np.cumsum(lens, out=indptr[1:])
                idx = (np.concatenate(part["items"].to_numpy()).astype(np.int64) if lens.sum()
                       else np.zeros(0, np.int64))
                rated = sp.csr_matrix((np.ones(idx.size, np.float32), idx, indptr),
                                      shape=(lens.size, len(model.item_ids)))
                yield pd.DataFrame({"value": user_lines(model, rated, part["user_id"].tolist(), excl, n)})
    return run


def _item_lines(root: str, version: str, block: int):
    def run(batches: Iterator) -> Iterator:
        import pandas as pd

        model, cosine = _model(root, version, cosine=True)
        ids = model.item_ids
        for pdf in batches:
            iids = pdf["iid"].to_numpy().astype(np.int64)
            for s in range(0, iids.size, block):
                idx = iids[s:s + block]
                yield pd.DataFrame({"value": [item_line(ids[i], got) for i, got in zip(
                    idx.tolist(), recommend.similar_many(model, idx, 10, index=cosine))]})
    return run


def most_active_frame(counts: DataFrame, key: str, cap: int) -> DataFrame:
    """The ``cap`` keys with the most pairs (ties by key, as ``serving_lists.most_active`` breaks
    them by index: uids are assigned in user_id order), or all of them if cap <= 0."""
    if cap <= 0:
        return counts
    return counts.orderBy(F.col("n").desc(), F.col(key).asc()).limit(cap)


def write_serving_lists_spark(spark: SparkSession, version: str, pairs: DataFrame, n: int | None = None,
                              block: int = SERVING_BLOCK, max_users: int = SERVING_MAX_USERS,
                              max_items: int = SERVING_MAX_ITEMS) -> dict[str, int]:
    """Top-N per user and similar items per product of ``version``, written by the executors.

    ``pairs``: (user_id string, iid int) for every pair the served model was fitted on (iid is
    the model's item index). Same lists as ``write_serving_lists`` (same code per block of users),
    same caps; returns how many users and items got lists, of how many.
    """
    root = str(get_settings().artifacts_dir)
    model = artifacts.load_model(version, root)
    n = n or get_settings().top_n
    n_items = len(model.item_ids)
    d = artifacts.models_dir(root) / version
    if model.ann is not None:  # the cosine graph of similar items: built once here, read by each worker
        ann.save(ann.build(ann.unit_rows(model.item_factors)), d / COSINE_FILE)
    del model
    excluded = spark.sparkContext.broadcast(shopper_controls.all_exclusions())  # users with a document (an empty set after an undo)

    per_user = pairs.groupBy("user_id").agg(F.collect_set("iid").alias("items"))
    per_user = per_user.withColumn("n", F.size("items")).cache()
    try:
        n_users = per_user.count()
        listed = most_active_frame(per_user, "user_id", max_users).select("user_id", "items")
        for name in (artifacts.TOPN_LISTS, artifacts.SIMILAR_LISTS):
            storage.remove_tree(d / name)  # a re-run replaces the folder whole
        (listed.mapInPandas(_user_lines(root, version, n, excluded, block), "value string")
         .write.option("compression", "gzip").text(storage.spark_uri(d / artifacts.TOPN_LISTS)))
        n_listed = min(n_users, max_users) if max_users > 0 else n_users
    finally:
        per_user.unpersist()
        excluded.unpersist()
    if max_items > 0 and max_items < n_items:
        items = most_active_frame(pairs.select("user_id", "iid").distinct().groupBy("iid").agg(F.count("*").alias("n")),
                                  "iid", max_items).select("iid")
    else:
        items = spark.range(0, n_items, numPartitions=max(1, spark.sparkContext.defaultParallelism)).select(
            F.col("id").cast("int").alias("iid"))
    items_listed = items.count()
    items.mapInPandas(_item_lines(root, version, block), "value string").write.option("compression", "gzip").text(
        storage.spark_uri(d / artifacts.SIMILAR_LISTS))
    out = {"users_listed": int(n_listed), "users": int(n_users), "items_listed": int(items_listed),
           "items": n_items, "written_by": "spark executors"}
    if n_listed < n_users or items_listed < n_items:
        print(f"train: serving lists capped: {out}")
    return out
