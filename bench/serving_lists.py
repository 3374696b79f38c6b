"""Top-N lists for every user: one ``recommend`` call per user vs ``recommend_many`` in blocks.

    .local/venv/bin/python bench/serving_lists.py [--items 60000,600000] [--users 1500000] [--sample 1000]

train.py writes the top-N list of every user (and the similar items of every product) for
publish.py. It used to call ``core.recommend.recommend`` once per user; it now calls
``recommend_many`` on blocks of users (stacked fold-in solves, scores by implicit's multi-threaded
top-k). This measures both on the same random iALS model and the same users (a Zipf-skewed
history, 1 to a few hundred items each), checks that they give the same lists, and projects the
time for ``--users`` users. Random factors are fine here: the work does not depend on the values.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.sparse as sp

from core.artifacts import Model
from core.recommend import recommend, recommend_many, similar_items, similar_many


def histories(rng: np.random.Generator, n_users: int, n_items: int) -> sp.csr_matrix:
    sizes = np.minimum(1 + rng.zipf(1.8, n_users), 300)
    cols = np.concatenate([rng.choice(n_items, k, replace=False) for k in sizes.tolist()])
    rows = np.repeat(np.arange(n_users), sizes)
    return sp.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(n_users, n_items))


def run(n_items: int, sample: int, n_users: int, rank: int, block: int) -> None:
    rng = np.random.default_rng(0)
    model = Model(version="bench", item_ids=[f"i{i}" for i in range(n_items)],
                  item_factors=(rng.normal(size=(n_items, rank)) * 0.1).astype(np.float32),
                  params={"kind": "ials", "reg": 0.1, "alpha": 9.0, "weight": "binary"})
    rated = histories(rng, sample, n_items)
    t0 = time.perf_counter()
    one = []
    for u in range(sample):
        row = rated[u]
        one.append(recommend(model, {model.item_ids[i]: 1.0 for i in row.indices.tolist()}, 20))
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = []
    for s in range(0, sample, block):
        many.extend(recommend_many(model, rated[s:s + block], 20))
    t_many = time.perf_counter() - t0
    same = sum(a == [r["product_id"] for r in b] for a, b in
               zip(([r["product_id"] for r in x] for x in one), many))
    items = np.arange(min(sample, n_items))
    t0 = time.perf_counter()
    sim_one = [similar_items(model, model.item_ids[i], 10) for i in items.tolist()]
    t_sim_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim_many = [x for s in range(0, items.size, block) for x in similar_many(model, items[s:s + block], 10)]
    t_sim_many = time.perf_counter() - t0
    sim_same = sum([r["product_id"] for r in a] == [r["product_id"] for r in b] for a, b in zip(sim_one, sim_many))
    print(f"{n_items:>9,} items, rank {rank}, {sample:,} users ({rated.nnz / sample:.1f} rated each):")
    print(f"  top-20 per user   one call per user {sample / t_one:>9,.0f} users/s | recommend_many {sample / t_many:>9,.0f}"
          f" users/s | {t_one / t_many:5.1f}x | same lists {same}/{sample} | {n_users:,} users: "
          f"{n_users / (sample / t_one) / 60:,.0f} min vs {n_users / (sample / t_many) / 60:,.0f} min")
    print(f"  similar-10/item   one call per item {items.size / t_sim_one:>9,.0f} items/s | similar_many  {items.size / t_sim_many:>9,.0f}"
          f" items/s | {t_sim_one / t_sim_many:5.1f}x | same lists {sim_same}/{items.size} | {n_items:,} items: "
          f"{n_items / (items.size / t_sim_one) / 60:,.0f} min vs {n_items / (items.size / t_sim_many) / 60:,.0f} min")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="60000,600000", help="catalog sizes, comma-separated")
    ap.add_argument("--users", type=int, default=1_500_000, help="users to project the time for")
    ap.add_argument("--sample", type=int, default=1000, help="users (and items) actually scored")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--block", type=int, default=2048)
    args = ap.parse_args(argv)
    import os

    print(f"serving_lists: {os.cpu_count()} cores, load average " + "/".join(f"{x:.1f}" for x in os.getloadavg()))
    for n in (int(x) for x in args.items.split(",")):
        run(n, args.sample, args.users, args.rank, args.block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
