"""The serving lists of a model version: top-N per user and similar items per product, as gzipped JSON
lines beside the model for publish.py to load into MongoDB.

Every user gets a list (SERVING_MAX_USERS, default 0 = all). Above ANN_MIN_ITEMS items the lists
come from the model's ANN index (core/ann.py) instead of scoring every item for every user: exact
lists of the 1.7M users x 633k items of a 10M-review run took ~110 min on 2 cores, compute-bound;
the index answers the same top-20 with recall >= 0.95 (bench/serving_lists.py). The caps remain
for a machine where even that is too long: the most active users and most rated items only, the
others getting their personal list from the worker's fold-in at their next rating.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from core import ann, artifacts, recommend, shopper_controls, storage
from core.env import env_int
from core.settings import get_settings
from spark_jobs.interactions import ids_at

SERVING_BLOCK = env_int("SERVING_BLOCK_USERS", 2048)  # users per batch of serving lists
SERVING_MAX_USERS = env_int("SERVING_MAX_USERS", 0)
SERVING_MAX_ITEMS = env_int("SERVING_MAX_ITEMS", 0)
SERVING_THREADS = env_int("SERVING_THREADS", 0) or (os.cpu_count() or 1)


def most_active(counts: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the ``cap`` rows with the largest counts (ties by index), in index order; all if cap <= 0."""
    if cap <= 0 or cap >= counts.size:
        return np.arange(counts.size)
    order = np.lexsort((np.arange(counts.size), -counts))
    return np.sort(order[:cap])


def in_threads(work: Callable[[np.ndarray], str], blocks: list[np.ndarray],
               threads: int = SERVING_THREADS) -> Iterator[str]:
    """``work(block)`` for every block, in order, ``threads`` blocks at a time.

    The blocks' time is spent in numpy, BLAS and faiss, which release the GIL, so threads use both
    cores where one block at a time (single-threaded BLAS on small matrices) used one; waves of
    ``threads`` blocks keep at most that many blocks' results in memory.
    """
    if threads <= 1:
        yield from (work(b) for b in blocks)
        return
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(blocks), threads):
            yield from pool.map(work, blocks[start:start + threads])


def user_block(model: artifacts.Model, n_items: int, block: int) -> int:
    """Users scored at once. Exact scores are (block x items) floats per thread (implicit's top-k
    builds them too): keep a block near 2^24 cells, not 2048 users x a 600k-item catalog (5 GB)."""
    if model.kind == "ease" or model.ann is None:
        return max(1, min(block, 2 ** 24 // max(1, n_items)))
    return block


def user_lines(model: artifacts.Model, rated: sp.csr_matrix, user_ids: list[str],
               excluded: dict[str, set[str]], n: int) -> list[str]:
    """The JSON lines publish.py loads of these users' top-``n`` (``rated``: their rows), each
    without the products they marked "not interested" (left out inside ``recommend_many``)."""
    lists = recommend.recommend_many(model, rated, n, exclude=recommend.exclusion_matrix(
        model, [excluded.get(u, ()) for u in user_ids]))
    return [json.dumps({"_id": uid, "items": got}) for uid, got in zip(user_ids, lists)]


def item_line(item_id: str, got: list[dict]) -> str:
    """One product's similar items as the JSON line publish.py loads."""
    return json.dumps({"_id": item_id, "items": got})


def write_serving_lists(version: str, x_all: sp.csr_matrix, user_ids: Sequence[str], item_ids: list[str],
                        n: int | None = None, block: int = SERVING_BLOCK, max_users: int = SERVING_MAX_USERS,
                        max_items: int = SERVING_MAX_ITEMS) -> dict[str, int]:
    """Top-N per user and similar items per product, as JSON lines beside the model for publish.py.

    The lists are what ``recommend``/``similar_items`` give one user or item (every rated item
    counts 1.0, as the worker's fold-in of the same history), computed ``block`` users at a time by
    ``recommend_many``: one call per user took 8 ms on a 60k-item catalog (3 h for 1.5M users);
    blocks are ~16x faster there and ~6x at 600k items, where scoring every item dominates
    (bench/serving_lists.py); above ANN_MIN_ITEMS both go through ANN indexes (the model's, and one
    over the unit-length factors for the cosine of similar items, built here). ``user_ids`` may be
    an Arrow array (train keeps them so). Returns how many users and items got lists, of how many.
    """
    model = artifacts.load_model(version)
    if list(model.item_ids) != list(item_ids):
        raise ValueError("the model's items are not the matrix's columns")
    n = n or get_settings().top_n
    d = artifacts.models_dir() / version
    excluded = shopper_controls.all_exclusions()  # "not interested": left out inside each top-n
    rated = sp.csr_matrix(x_all, copy=False)
    if rated.nnz and not (rated.data == 1).all():  # the lists fold in every rated item as 1.0
        rated = (rated > 0).astype(np.float32).tocsr()
    users = most_active(np.diff(rated.indptr), max_users)
    items = most_active(np.asarray(rated.getnnz(axis=0)), max_items)
    block = user_block(model, len(item_ids), block)

    def block_lines(rows: np.ndarray) -> str:
        return "".join(line + "\n" for line in user_lines(model, rated[rows], ids_at(user_ids, rows), excluded, n))

    with storage.open_text_output(artifacts.serving_lists_file(d, artifacts.TOPN_LISTS)) as f:
        for text in in_threads(block_lines, [users[s:s + block] for s in range(0, users.size, block)]):
            f.write(text)
    cosine = ann.build(ann.unit_rows(model.item_factors)) if model.ann is not None else None

    def item_lines(idx: np.ndarray) -> str:
        return "".join(item_line(item_ids[i], got) + "\n"
                       for i, got in zip(idx.tolist(), recommend.similar_many(model, idx, 10, index=cosine)))

    with storage.open_text_output(artifacts.serving_lists_file(d, artifacts.SIMILAR_LISTS)) as f:
        for text in in_threads(item_lines, [items[s:s + block] for s in range(0, items.size, block)]):
            f.write(text)
    out = {"users_listed": int(users.size), "users": int(rated.shape[0]),
           "items_listed": int(items.size), "items": int(rated.shape[1])}
    if users.size < rated.shape[0] or items.size < rated.shape[1]:
        print(f"train: serving lists capped: {out}")
    return out
