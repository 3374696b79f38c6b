"""Peak RSS of train's Python driver with ``--engine spark``, this code against an earlier commit,
in the same run on the same generated data.

    .local/venv/bin/python bench/train_driver_memory.py [--size 1m] [--before REF] [--work DIR] [--grid 1]

Engine spark is what ``auto`` picks when the data does not fit one node, so its driver must not
need memory per user. The bench writes clean reviews (``<work>/clean/reviews``, Parquet) of the
10M-review run's shape (bench/train_memory.py's generator: 5.8 interactions per user, 15.5 per
item, Zipf-skewed, with taste), then runs ``spark_jobs.train.train(..., engine="spark")`` in a
fresh process for each code tree (``--before``: ``git archive REF`` of this repository, default
the commit before the MLlib-path changes; then this worktree), on local Spark (``local[2]``),
with its own ARTIFACTS_DIR, DATA_DIR and MongoDB database. Each child reads its resident set
size after Spark has started and its modules are imported (the base), and ``getrusage``'s peak
after training; the figure is (peak - base) per user. Python workers and the JVM are other
processes (in local mode the JVM also runs the executors) and are not part of it.

``--grid N`` keeps the first N points of MLlib's grid in both runs: every point peaks alike on
the driver, more only take longer.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 2 ** 30
REPO = Path(__file__).resolve().parents[1]
BEFORE = "d8ada03"  # the lead's train before the MLlib path kept users off the driver


def write_reviews(n: int, work: Path) -> Path:
    """Clean reviews (user_id, product_id, rating, ts) from bench/train_memory.py's generator; each
    user's generated order is their time order, so the split is the generator's."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from bench.train_memory import generate

    arrays = work / "arrays"
    arrays.mkdir(parents=True, exist_ok=True)
    generate(n, arrays)
    uid, iid = np.load(arrays / "uid.npy"), np.load(arrays / "iid.npy")
    users = pq.read_table(arrays / "users.parquet").column("user_id")
    items = pa.array(json.loads((arrays / "items.json").read_text()))
    starts = np.concatenate([[0], np.cumsum(np.bincount(uid))[:-1]])
    ts = 1.5e9 + 86400.0 * (np.arange(uid.size) - starts[uid])
    rating = np.random.default_rng(1).integers(1, 6, uid.size).astype(np.float64)
    table = pa.table({"user_id": users.take(pa.array(uid)), "product_id": items.take(pa.array(iid)),
                      "rating": rating, "ts": ts})
    out = work / "clean" / "reviews"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-00000.parquet", row_group_size=250_000)
    shutil.rmtree(arrays)
    return work / "clean"


def child(clean: str, grid: int) -> None:
    """One training run with engine spark, in this process (PYTHONPATH picks the code tree)."""
    import psutil

    from spark_jobs import engines
    from spark_jobs.common import spark_session
    from spark_jobs.train import train

    spark = spark_session("bench-train-driver", master="local[2]",
                          checkpoint_dir=str(Path(os.environ["DATA_DIR"]) / "checkpoints"))
    full = engines.grid
    engines.grid = lambda engine: full(engine)[:grid]
    base = psutil.Process().memory_info().rss
    t0 = time.time()
    record = train(spark, clean, f"bench-{os.getpid()}", engine="spark")
    out = {"base": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "seconds": round(time.time() - t0, 1), "counts": record["metrics"]["counts"],
           "test_ndcg@10": record["metrics"]["test"]["ndcg@10"], "test_users": record["metrics"]["test"]["users"],
           "serving_lists": record["metrics"]["serving_lists"], "timings": record["timings"]}
    spark.stop()
    print("RESULT " + json.dumps(out), flush=True)


def run(code: Path, clean: Path, work: Path, grid: int) -> dict:
    from pymongo import MongoClient

    name = f"bench_train_driver_{os.getpid()}_{code.name}"
    env = {**os.environ, "PYTHONPATH": str(code), "ARTIFACTS_DIR": str(work / "artifacts"),
           "DATA_DIR": str(work / "data"), "MONGO_DB": name}
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(clean), "--grid", str(grid)],
                              env=env, capture_output=True, text=True, cwd=code)
    finally:
        MongoClient(os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27017/")).drop_database(name)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"train failed for {code}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1m", help="interactions (1m, 500k, ...)")
    ap.add_argument("--before", default=BEFORE, help="git ref of the code to compare with")
    ap.add_argument("--work", default=None)
    ap.add_argument("--grid", type=int, default=1)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.grid)
        return 0
    sys.path.insert(0, str(REPO))
    from bench.train_memory import parse_size

    n = parse_size(args.size)
    work = Path(args.work or tempfile.mkdtemp(prefix="train-driver-"))
    before = work / "before"
    if not before.exists():
        before.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    t0 = time.time()
    clean = write_reviews(n, work) if not (work / "clean" / "reviews").exists() else work / "clean"
    print(f"data: {n:,} interactions requested, written in {time.time() - t0:.0f}s to {clean}", flush=True)
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    results = {}
    for label, code in ((f"before ({args.before})", before), ("after (this tree)", REPO)):
        r = run(code, clean, work / f"run-{label.split()[0]}", args.grid)
        results[label] = r
        users = r["counts"]["users"]
        print(f"{label}: {r['counts']['interactions']:,} interactions, {users:,} users, {r['counts']['items']:,} items; "
              f"{r['seconds']:.0f}s; driver RSS base {r['base'] / GB:.2f} GB, peak {r['peak'] / GB:.2f} GB, "
              f"{(r['peak'] - r['base']) / GB:.3f} GB above base = {(r['peak'] - r['base']) / users:,.0f} B per user; "
              f"test NDCG@10 {r['test_ndcg@10']:.4f} on {r['test_users']:,} users; lists {r['serving_lists']}", flush=True)
        print(f"  seconds per phase: {r['timings']}", flush=True)
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    print("RESULTS " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
