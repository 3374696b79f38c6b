"""The clean reviews as compact arrays on the training driver: int ids, a time split, one CSR layout.

Spark assigns the integer ids and the split; the driver then holds every (user, item) pair once,
sorted by user: ``indptr`` (per user), ``items`` (int32) and ``part`` (int8), 5 bytes per
interaction. Every matrix a training run needs (train, train + validation, everything, a sample
of users) is cut from that layout on demand as binary float32 CSR, sharing ``items`` where it can;
no COO, pandas or per-user Python copies. The string ids are kept once: users as one Arrow string
array (bytes + 4-byte offsets, not a Python object each), items as the list the model saves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core import storage


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


def ids_in_order(ids: DataFrame, index: str, name: str, out_dir: Path) -> pa.Array:
    """The string ids in index order, as one Arrow array."""
    table = via_parquet(ids, out_dir / f"{name}s")
    positions = table.column(index).to_numpy()
    order = np.argsort(positions, kind="stable")
    if not np.array_equal(positions[order], np.arange(order.size)):
        raise ValueError(f"{index} is not 0..{order.size - 1}")
    return table.column(name).take(pa.array(order)).combine_chunks()


def ids_at(ids: Sequence[str] | pa.Array, rows: np.ndarray) -> list[str]:
    """``ids[rows]`` as Python strings, for a list or an Arrow array of ids."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return ids.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()
    return [ids[i] for i in np.asarray(rows).tolist()]


@dataclass
class Interactions:
    """Every (user, item) pair once, sorted by user (the CSR layout of the whole matrix)."""

    indptr: np.ndarray  # (n_users + 1,) int32 (int64 past 2^31 pairs): user u's pairs are [indptr[u], indptr[u+1])
    items: np.ndarray  # (n,) int32 item of each pair
    part: np.ndarray  # (n,) int8: 0 train, 1 validation, 2 test
    user_ids: Sequence[str] | pa.Array
    item_ids: list[str]
    # A sample of users collected from Spark (engine spark, ``collect_sample``): each row's uid in
    # the whole data, and the whole data's pairs per item with part <= 0 and <= 1 (popularity).
    uids: np.ndarray | None = None
    item_totals: dict[int, np.ndarray] | None = None

    @classmethod
    def from_arrays(cls, uid: np.ndarray, iid: np.ndarray, part: np.ndarray, user_ids, item_ids) -> "Interactions":
        n_users = len(user_ids)
        order = np.lexsort((iid, uid))
        index = np.int32 if uid.size < 2 ** 31 - 1 else np.int64
        indptr = np.zeros(n_users + 1, index)
        np.cumsum(np.bincount(uid, minlength=n_users), out=indptr[1:])
        return cls(indptr, iid[order].astype(np.int32), part[order].astype(np.int8), user_ids, list(item_ids))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.indptr) - 1, len(self.item_ids)

    @property
    def n(self) -> int:
        return int(self.items.size)

    def rows(self) -> np.ndarray:
        """The user of each pair (a temporary: 4 bytes per pair)."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int32), np.diff(self.indptr))

    def matrix(self, max_part: int = 2) -> sp.csr_matrix:
        """Binary float32 (users x items) of the pairs with part <= ``max_part`` (2: all, sharing ``items``)."""
        if max_part >= 2:
            indptr, indices = self.indptr, self.items
        else:
            keep = self.part <= max_part
            kept = np.zeros(keep.size + 1, self.indptr.dtype)
            np.cumsum(keep, out=kept[1:])
            indptr, indices = kept[self.indptr], self.items[keep]
        data = np.ones(indices.size, np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=self.shape, copy=False)

    def subset(self, users: np.ndarray) -> "Interactions":
        """The pairs of ``users`` (sorted indices), re-numbered 0..len(users)-1; items keep their ids."""
        users = np.asarray(users, dtype=np.int64)
        counts = np.diff(self.indptr)[users]
        starts = self.indptr[users].astype(np.int64)
        take = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        indptr = np.zeros(users.size + 1, self.indptr.dtype)
        np.cumsum(counts, out=indptr[1:])
        return Interactions(indptr, self.items[take], self.part[take], ids_at(self.user_ids, users), self.item_ids)

    def users_with(self, part: int) -> np.ndarray:
        """Sorted users who have a pair in ``part``."""
        return np.unique(self.rows()[self.part == part])

    def heldout(self, part: int, max_users: int, seed: int = 11) -> dict[int, list[int]]:
        """{user: held-out items} of ``part``, for a fixed random sample of at most ``max_users`` users
        (evaluation time and memory bounded at any scale)."""
        users = self.users_with(part)
        if users.size > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        out: dict[int, list[int]] = {}
        for u in users.tolist():
            s, e = self.indptr[u], self.indptr[u + 1]
            out[u] = self.items[s:e][self.part[s:e] == part].tolist()
        return out

    def popularity(self, max_part: int) -> np.ndarray | None:
        """The whole data's pairs per item with part <= ``max_part`` for a sample of users (None:
        this is the whole data, popularity counts its matrix)."""
        return None if self.item_totals is None else self.item_totals[max_part]

    def counts(self) -> dict[str, int]:
        return {"interactions": self.n, "users": self.shape[0], "items": self.shape[1],
                "train": int((self.part == 0).sum()), "validation": int((self.part == 1).sum()),
                "test": int((self.part == 2).sum())}


def collect(parted: DataFrame, users: DataFrame, items: DataFrame, out_dir: Path) -> Interactions:
    """The split interactions on the driver (the ``interactions`` Parquet is also what
    bench/pipeline_scale.py reads)."""
    table = via_parquet(parted.select("uid", "iid", F.col("rating").cast("float"), "part"), out_dir / "interactions")
    uid, iid, part = (table.column(c).to_numpy() for c in ("uid", "iid", "part"))
    del table
    user_ids = ids_in_order(users, "uid", "user_id", out_dir)
    item_ids = ids_in_order(items, "iid", "product_id", out_dir).to_pylist()
    return Interactions.from_arrays(uid, iid, part, user_ids, item_ids)


def spark_counts(parted: DataFrame) -> dict[str, int]:
    """``Interactions.counts()`` computed by Spark (one pass): uids and iids are 0..n-1."""
    row = parted.agg(F.count("*").alias("interactions"), (F.max("uid") + 1).alias("users"),
                     (F.max("iid") + 1).alias("items"),
                     *(F.sum((F.col("part") == p).cast("long")).alias(name)
                       for p, name in ((0, "train"), (1, "validation"), (2, "test")))).first()
    return {k: int(row[k] or 0) for k in ("interactions", "users", "items", "train", "validation", "test")}


def collect_sample(parted: DataFrame, users: DataFrame, items: DataFrame, out_dir: Path, max_users: int,
                   seed: int = 11) -> Interactions:
    """The pairs of at most ``max_users`` held-out users (those with a test pair), for engine spark.

    Only these users' rows reach the driver (renumbered 0..m-1, ``uids`` maps them back), with the
    item ids and per-item counts of the whole data; the sample is the users with the smallest
    hash of (uid, seed), chosen by Spark, so it is fixed for a dataset and never needs an array
    over every user. ``heldout(part, n)`` of the result then scores every sampled user.
    """
    chosen = (parted.where("part = 2").select("uid").distinct()
              .orderBy(F.xxhash64("uid", F.lit(seed)), "uid").limit(max_users)).cache()
    try:
        pairs = via_parquet(parted.join(F.broadcast(chosen), "uid").select("uid", "iid", "part"), out_dir / "sample")
        ids = via_parquet(users.join(F.broadcast(chosen), "uid"), out_dir / "sample_users")
    finally:
        chosen.unpersist()
    uids = np.sort(ids.column("uid").to_numpy().astype(np.int64))
    user_ids = ids.column("user_id").take(pa.array(np.argsort(ids.column("uid").to_numpy(), kind="stable")))
    local = np.searchsorted(uids, pairs.column("uid").to_numpy())
    per_item = via_parquet(parted.groupBy("iid", "part").count(), out_dir / "item_counts")
    item_ids = ids_in_order(items, "iid", "product_id", out_dir).to_pylist()
    iid, part, n = (per_item.column(c).to_numpy() for c in ("iid", "part", "count"))
    totals = {k: np.bincount(iid[part <= k], weights=n[part <= k], minlength=len(item_ids)).astype(np.int64)
              for k in (0, 1)}
    sample = Interactions.from_arrays(local, pairs.column("iid").to_numpy(), pairs.column("part").to_numpy(),
                                      user_ids.combine_chunks(), item_ids)
    sample.uids, sample.item_totals = uids, totals
    return sample


# --- the (uid, iid, rating, part) dict form, kept for bench/pipeline_scale.py -------------------

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
