"""Top-N lists for every user and the worker's rating -> new list: exact scoring against the ANN index.

    .local/venv/bin/python bench/serving_lists.py [--items 100000,1000000] [--users 1700000] [--sample 2000]

train.py writes the top-N list of every user (and the similar items of every product) with
``recommend_many``/``similar_many``; the worker answers a rating with ``recommend`` (the user's
fold-in, then the top-N). Exact scoring costs users x items x rank; above ANN_MIN_ITEMS a model
carries an HNSW index (core/ann.py). For each catalog size this measures, on the same model and the
same users (Zipf-skewed histories of 1 to a few hundred items):

* the batch lists, exact and through the index: users/s, the projected time for ``--users`` users,
  and recall@20 of the index's lists against the exact ones;
* similar-10 per item by cosine, exact and through an index over the unit-length factors;
* one user's ``recommend`` (fold-in + top-20, what the worker does per rating): p50/p99.

Factors: random ones are the worst case of any ANN index (64 independent dimensions, no structure)
and not what ALS learns, so items sit around 300 taste clusters with log-normal norms (popularity)
and users are drawn near items they rated, as folded-in users are. bench/train_memory.py measures
recall on factors trained by iALS.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

from core import ann
from core.artifacts import Model
from core.recommend import recommend, recommend_many, similar_many


def histories(rng: np.random.Generator, n_users: int, n_items: int, cluster: np.ndarray) -> sp.csr_matrix:
    """Zipf-sized histories, mostly inside one taste cluster per user."""
    sizes = np.minimum(1 + rng.zipf(1.8, n_users), 300)
    by_cluster = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[by_cluster], np.arange(cluster.max() + 2))
    cols = []
    for k in sizes.tolist():
        c = rng.integers(0, cluster.max() + 1)
        own = by_cluster[bounds[c]:bounds[c + 1]]
        pick = np.where(rng.random(k) < 0.7, rng.choice(own, k), rng.integers(0, n_items, k))
        cols.append(np.unique(pick))
    rows = np.repeat(np.arange(n_users), [c.size for c in cols])
    return sp.csr_matrix((np.ones(rows.size), (rows, np.concatenate(cols))), shape=(n_users, n_items))


def factors(rng: np.random.Generator, n_items: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(300, rank))
    cluster = rng.integers(0, 300, n_items)
    y = (centers[cluster] + 0.7 * rng.normal(size=(n_items, rank))) * rng.lognormal(0, 0.5, n_items)[:, None] * 0.05
    return y.astype(np.float32), cluster


def overlap(a: list[list[dict]], b: list[list[dict]]) -> float:
    hits = sum(len({r["product_id"] for r in x} & {r["product_id"] for r in y}) for x, y in zip(a, b))
    return hits / max(1, sum(len(y) for y in b))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(n_items: int, sample: int, n_users: int, rank: int, block: int, singles: int) -> None:
    rng = np.random.default_rng(0)
    y, cluster = factors(rng, n_items, rank)
    params = {"kind": "ials", "reg": 0.1, "alpha": 9.0, "weight": "binary"}
    exact = Model(version="bench", item_ids=[f"i{i}" for i in range(n_items)], item_factors=y, params=params)
    fast = Model(version="bench", item_ids=exact.item_ids, item_factors=y, params=params)
    fast.ann, t_build = timed(lambda: ann.build(y))
    rated = histories(rng, sample, n_items, cluster)

    def lists(model):
        return [x for s in range(0, sample, block) for x in recommend_many(model, rated[s:s + block], 20)]

    want, t_exact = timed(lambda: lists(exact))
    got, t_ann = timed(lambda: lists(fast))
    items = rng.choice(n_items, min(sample, n_items), replace=False)
    cosine, t_cos_build = timed(lambda: ann.build(ann.unit_rows(y)))
    sim_want, t_sim_exact = timed(lambda: [x for s in range(0, items.size, block)
                                           for x in similar_many(exact, items[s:s + block], 10)])
    sim_got, t_sim_ann = timed(lambda: [x for s in range(0, items.size, block)
                                        for x in similar_many(fast, items[s:s + block], 10, index=cosine)])
    lat = {"exact": [], "ann": []}
    for u in range(min(singles, sample)):
        history = {exact.item_ids[i]: 1.0 for i in rated[u].indices.tolist()}
        for name, model in (("exact", exact), ("ann", fast)):
            t0 = time.perf_counter()
            recommend(model, history, 20)
            lat[name].append(time.perf_counter() - t0)
    p = {k: (np.percentile(v, 50) * 1000, np.percentile(v, 99) * 1000) for k, v in lat.items()}
    print(f"{n_items:>9,} items, rank {rank}, {sample:,} users ({rated.nnz / sample:.1f} rated each); "
          f"index built in {t_build:.0f}s (cosine index {t_cos_build:.0f}s); load average "
          + "/".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"  top-20 per user    exact {sample / t_exact:>8,.0f} users/s | ANN {sample / t_ann:>8,.0f} users/s | "
          f"{t_exact / t_ann:5.1f}x | recall@20 {overlap(got, want):.3f} | {n_users:,} users: "
          f"{n_users / (sample / t_exact) / 60:,.1f} min vs {n_users / (sample / t_ann) / 60:,.1f} min")
    print(f"  similar-10/item    exact {items.size / t_sim_exact:>8,.0f} items/s | ANN {items.size / t_sim_ann:>8,.0f} items/s | "
          f"{t_sim_exact / t_sim_ann:5.1f}x | recall@10 {overlap(sim_got, sim_want):.3f} | {n_items:,} items: "
          f"{n_items / (items.size / t_sim_exact) / 60:,.1f} min vs {n_items / (items.size / t_sim_ann) / 60:,.1f} min")
    print(f"  one rating: fold-in + top-20 (recommend), {len(lat['ann'])} users: exact p50 {p['exact'][0]:.1f} ms "
          f"p99 {p['exact'][1]:.1f} ms | ANN p50 {p['ann'][0]:.1f} ms p99 {p['ann'][1]:.1f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="100000,1000000", help="catalog sizes, comma-separated")
    ap.add_argument("--users", type=int, default=1_700_000, help="users to project the time for")
    ap.add_argument("--sample", type=int, default=2000, help="users (and items) actually scored")
    ap.add_argument("--singles", type=int, default=500, help="users timed one rating at a time")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--block", type=int, default=2048)
    args = ap.parse_args(argv)
    print(f"serving_lists: {os.cpu_count()} cores, load average " + "/".join(f"{x:.1f}" for x in os.getloadavg()))
    for n in (int(x) for x in args.items.split(",")):
        run(n, args.sample, args.users, args.rank, args.block, args.singles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
