"""Peak memory of training per interaction, and the time of every user's serving list, on one node.

    .local/venv/bin/python bench/train_memory.py [--sizes 1m,5m,10m] [--work DIR] [--grid 2]

For each size a generator process writes synthetic interactions of the 10M-review run's shape
(5.8 interactions per user, 15.5 per item, Zipf-skewed users and items, and taste: every user
leans to one of 300 item clusters, so iALS learns factors with real structure) as the arrays Spark
hands train's driver (uid, iid, part by leave-last-out, user ids as one Arrow string column).
Then a fresh process runs everything train's driver does after Spark: the tuning sample's grid
(``--grid`` points of IALS_GRID, default 2, and ``--iterations``: every point and every iteration
peaks alike, the full grid only takes longer), the refit on train + validation with test metrics and popularity, the served model on
everything with its ANN index above ANN_MIN_ITEMS, and the serving lists of every user and
item (``--lists-users`` most active users and ``--lists-items`` items, the time per list then
projected to everyone, as the run must fit a session). Its resident set size is read before the data (the base: interpreter, numpy, implicit,
faiss, pyspark's Python modules) and its peak (``getrusage``) after each phase, so

    bytes per interaction = (peak RSS - base) / interactions

The Spark JVM (ids, split, the Spark baselines) is another process, bounded by its own heap
settings, and is not part of this figure. Printed beside it: the floor, what the pairs and the
factors alone occupy. After the lists, the top-20 of a sample of users through the ANN index is
compared with exact scoring of the same served model (recall@20).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 2 ** 30


def parse_size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * mult)


def generate(n: int, out: Path, seed: int = 0) -> None:
    """Interactions of the 10M run's shape with taste structure, as .npy files and an Arrow id column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users, n_items, n_clusters = int(n / 5.8), int(n / 15.5), 300
    item_w = 1.0 / np.arange(1, n_items + 1) ** 0.9
    item_w = item_w[rng.permutation(n_items)]
    cluster = rng.integers(0, n_clusters, n_items)
    by_cluster = np.argsort(cluster, kind="stable")
    cum = np.cumsum(item_w[by_cluster])
    ends = np.searchsorted(cluster[by_cluster], np.arange(n_clusters), side="right")
    starts = np.concatenate([[0], ends[:-1]])
    user_w = 1.0 / np.arange(1, n_users + 1) ** 0.6
    user_cum = np.cumsum(user_w[rng.permutation(n_users)])
    draws = int(n * 1.5)  # repeated pairs are dropped below
    uid = np.searchsorted(user_cum, rng.random(draws) * user_cum[-1]).astype(np.int64)
    taste = rng.integers(0, n_clusters, n_users)[uid]
    lo = np.where(starts[taste] > 0, cum[starts[taste] - 1], 0.0)
    hi = cum[ends[taste] - 1]
    own = by_cluster[np.minimum(np.searchsorted(cum, lo + rng.random(draws) * (hi - lo)), n_items - 1)]
    anywhere = by_cluster[np.minimum(np.searchsorted(cum, rng.random(draws) * cum[-1]), n_items - 1)]
    iid = np.where(rng.random(draws) < 0.7, own, anywhere)
    pairs = np.unique(uid * n_items + iid)[:n]
    uid, iid = pairs // n_items, pairs % n_items
    users, uid = np.unique(uid, return_inverse=True)
    items, iid = np.unique(iid, return_inverse=True)
    # leave-last-out: a random order per user stands for time
    order = np.lexsort((rng.random(uid.size), uid))
    uid, iid = uid[order], iid[order]
    counts = np.bincount(uid)
    end = np.cumsum(counts)
    part = np.zeros(uid.size, np.int8)
    many = counts >= 3
    part[end[many] - 1] = 2
    part[end[many] - 2] = 1
    np.save(out / "uid.npy", uid.astype(np.int32))
    np.save(out / "iid.npy", iid.astype(np.int32))
    np.save(out / "part.npy", part)
    pq.write_table(pa.table({"user_id": pa.array([f"U{u:010d}" for u in users.tolist()])}), out / "users.parquet")
    (out / "items.json").write_text(json.dumps([f"P{i:09d}" for i in items.tolist()]))


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(src: Path, grid: int, iterations: int, recall_users: int, lists_users: int, lists_items: int) -> dict:
    """Train's driver path on the generated arrays (run in a fresh process)."""
    import faiss  # noqa: F401  (loaded before the base, as the job loads it)
    import implicit.cpu.als  # noqa: F401
    import numpy as np
    import pyarrow.parquet as pq

    from core import ann, artifacts
    from spark_jobs import engines
    from spark_jobs.interactions import Interactions
    from spark_jobs.serving_lists import write_serving_lists

    # the 64-factor points (the memory peak of any grid), with fewer iterations if asked: an
    # iteration's memory is the same, only the time changes
    engines.IALS_GRID = [{**p, "iterations": iterations or p["iterations"]} for p in engines.IALS_GRID[-grid:]]
    base = rss()
    out = {"base": base, "phases": []}

    def phase(name: str, t0: float) -> None:
        out["phases"].append({"phase": name, "seconds": round(time.time() - t0, 1), "peak": peak()})
        print(f"  {name}: {time.time() - t0:.1f}s, peak RSS so far {(peak() - base) / GB:.2f} GB above base", flush=True)

    t0 = time.time()
    uid, iid, part = (np.load(src / f"{c}.npy") for c in ("uid", "iid", "part"))
    user_ids = pq.read_table(src / "users.parquet").column("user_id").combine_chunks()
    item_ids = json.loads((src / "items.json").read_text())
    data = Interactions.from_arrays(uid, iid, part, user_ids, item_ids)
    del uid, iid, part
    out.update(data.counts())
    phase("pairs (as from Spark) -> compact layout", t0)
    t0 = time.time()
    ranked = engines.select_and_test("implicit", data)
    out["test_ndcg@10"], out["popularity_ndcg@10"] = ranked["test"]["ndcg@10"], ranked["popularity_test"]["ndcg@10"]
    out["tuning"] = ranked["tuning"]
    phase(f"grid ({grid}) on the tuning sample, refit, test, popularity", t0)
    t0 = time.time()
    factors, params = engines.served_model("implicit", ranked["best"], data)
    phase("served model (all pairs)", t0)
    t0 = time.time()
    version = artifacts.save_model(data.item_ids, factors, params, {})
    out["ann"] = ann.wanted(len(data.item_ids), "ials")
    out["rank"] = int(factors.shape[1])
    del factors
    phase("save with ANN index" if out["ann"] else "save (exact: below ANN_MIN_ITEMS)", t0)
    t0 = time.time()
    lists = write_serving_lists(version, data.matrix(2), data.user_ids, data.item_ids,
                                max_users=lists_users, max_items=lists_items)
    out["serving_lists"] = lists
    phase(f"serving lists ({lists['users_listed']:,} users, {lists['items_listed']:,} items)", t0)
    out["serving_seconds"] = out["phases"][-1]["seconds"]
    out["peak"] = peak()
    if out["ann"]:
        from core.recommend import recommend_many

        model = artifacts.load_model(version)
        exact = artifacts.load_model(version)
        exact.ann = None
        users = np.sort(np.random.default_rng(3).choice(data.shape[0], recall_users, replace=False))
        rated = data.matrix(2)[users]
        hits = total = 0
        for a, e in zip(recommend_many(model, rated, 20), recommend_many(exact, rated, 20)):
            hits += len({r["product_id"] for r in a} & {r["product_id"] for r in e})
            total += len(e)
        out["recall@20"] = hits / max(1, total)
        out["recall_users"] = int(users.size)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1m,5m,10m")
    ap.add_argument("--work", default="", help="folder for the generated data and models (default: a temporary one)")
    ap.add_argument("--grid", type=int, default=2, help="points of IALS_GRID fitted on the tuning sample")
    ap.add_argument("--iterations", type=int, default=0, help="ALS iterations per fit (default: IALS_GRID's 15)")
    ap.add_argument("--recall-users", type=int, default=2000)
    ap.add_argument("--lists-users", type=int, default=100_000,
                    help="serving lists for this many (most active) users, 0 = every user; the time is projected to all")
    ap.add_argument("--lists-items", type=int, default=50_000, help="similar items for this many items, 0 = all")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    ap.add_argument("--gen", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gen:
        generate(parse_size(args.sizes), Path(args.gen))
        return 0
    if args.one:
        result = measure(Path(args.one), args.grid, args.iterations, args.recall_users, args.lists_users, args.lists_items)
        Path(args.one, "result.json").write_text(json.dumps(result))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="train-memory-"))
    print(f"train_memory: {os.cpu_count()} cores, load average {open('/proc/loadavg').read().split()[:3]}, work {work}",
          flush=True)
    results = []
    for size in args.sizes.split(","):
        src = work / size
        src.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ARTIFACTS_DIR": str(src / "artifacts"), "MONGO_DB": "bench_train_memory"}
        t0 = time.time()
        subprocess.run([sys.executable, __file__, "--sizes", size, "--gen", str(src)], check=True, env=env)
        print(f"{size}: generated in {time.time() - t0:.0f}s; training ...", flush=True)
        subprocess.run([sys.executable, __file__, "--one", str(src), "--grid", str(args.grid), "--iterations", str(args.iterations),
                        "--recall-users", str(args.recall_users), "--lists-users", str(args.lists_users),
                        "--lists-items", str(args.lists_items)], check=True, env=env)
        r = json.loads((src / "result.json").read_text())
        r["size"] = size
        results.append(r)
        per = (r["peak"] - r["base"]) / r["interactions"]
        sl = r["serving_lists"]
        each = r["serving_seconds"] / max(1, sl["users_listed"] + sl["items_listed"])
        every = each * (sl["users"] + sl["items"]) / 60
        floor = 5 * r["interactions"] + 4 * r["rank"] * (r["users"] + r["items"])
        print(f"{size}: {r['interactions']:,} interactions, {r['users']:,} users, {r['items']:,} items: "
              f"peak {r['peak'] / GB:.2f} GB, base {r['base'] / GB:.2f} GB -> {per:.0f} bytes per interaction "
              f"(floor, the pairs + one copy of the factors: {floor / r['interactions']:.0f}); serving lists of "
              f"{r['serving_lists']['users_listed']:,} users and {r['serving_lists']['items_listed']:,} items "
              f"{r['serving_seconds']:.0f}s ({'ANN' if r['ann'] else 'exact'}; all {sl['users']:,} users and {sl['items']:,} items "
              f"at that rate: {every:.1f} min)"
              + (f"; recall@20 ANN vs exact {r['recall@20']:.3f} on {r['recall_users']:,} users" if r.get("recall@20") is not None else "")
              + f"; load average {open('/proc/loadavg').read().split()[:3]}", flush=True)
        (work / "results.json").write_text(json.dumps(results, indent=2))
    if len(results) >= 2:
        a, b = results[0], results[-1]
        slope = ((b["peak"] - b["base"]) - (a["peak"] - a["base"])) / (b["interactions"] - a["interactions"])
        print(f"growth between {a['size']} and {b['size']}: {slope:.0f} bytes per interaction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
