"""MLlib implicit ALS on the Spark standalone cluster (bin/services start spark), beside local mode.

    .local/venv/bin/python -m bench.cluster_als --interactions 1000000 [--interactions 5000000 ...]
        [--master spark://127.0.0.1:7077] [--rank 32] [--iterations 10] [--no-local]

For each size, the interactions are generated on the executors (users and items drawn with a
popularity skew, plus a low-rank taste so the model has something to find) and the same ALS fit
(the engine train.py uses above the single-node limit, ``spark_als``) runs twice in separate
driver processes: on the cluster (2 workers x 1 core), then in ``local[2]`` (the same 2 cores in
one JVM): the comparison says what the cluster's extra processes and shuffles cost on one host.
Printed per run: seconds to generate, seconds to fit, peak RSS of the driver (the Python
process and the JVM it starts) and of this application's executors (sampled every 0.5 s from
/proc; in local mode they are inside the driver's JVM), and the load average. Nothing is collected to the driver but counts and one factor row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.proc_rss import executors_rss, tree_rss

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One fit in this process (the driver); prints one JSON line."""
    from pyspark.sql import functions as F

    from spark_jobs.common import spark_session
    from spark_jobs.engines import spark_als

    os.environ.setdefault("SPARK_SHUFFLE_PARTITIONS", str(args.partitions))
    spark = spark_session("bench-cluster-als", master=args.master)
    if args.app_id_file:  # the parent measures this application's executors only
        Path(args.app_id_file).write_text(spark.sparkContext.applicationId)
    n, users, items = args.interactions, max(1000, args.interactions // 6), max(500, args.interactions // 15)
    t0 = time.time()
    # Skewed ids: u = floor(users * x^2) puts more mass on low ids (active users, popular items);
    # the item also leans towards the user's taste group (user % 16 == item % 16 half the time).
    base = spark.range(0, n, numPartitions=args.partitions)
    df = (base.withColumn("uid", (F.pow(F.rand(seed=1), 2) * users).cast("int"))
          .withColumn("_i", (F.pow(F.rand(seed=2), 2) * items).cast("int"))
          .withColumn("iid", F.when(F.rand(seed=3) < 0.5, F.col("_i") - F.col("_i") % 16 + F.col("uid") % 16)
                      .otherwise(F.col("_i")) % items)
          .select("uid", "iid", F.lit(1.0).alias("rating"))
          .dropDuplicates(["uid", "iid"]).cache())
    count = df.count()
    generated = time.time() - t0
    t1 = time.time()
    model = spark_als(spark, df, True, rank=args.rank, regParam=0.1, alpha=9.0, maxIter=args.iterations)
    n_items = model.itemFactors.count()
    n_users = model.userFactors.count()
    fitted = time.time() - t1
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - (0 if args.master.startswith("local") else 1)
    spark.stop()
    print(json.dumps({"interactions": count, "users": n_users, "items": n_items, "generate_s": round(generated, 1),
                      "fit_s": round(fitted, 1), "executors": executors}))


def run(master: str, args: argparse.Namespace, interactions: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_DRIVER_MEMORY": args.driver_memory, "SPARK_EXECUTOR_MEMORY": args.executor_memory}
    app_id_file = Path(tempfile.mkdtemp(prefix="bench-als-")) / "app-id"
    cmd = [sys.executable, "-m", "bench.cluster_als", "--child", "--master", master, "--interactions",
           str(interactions), "--rank", str(args.rank), "--iterations", str(args.iterations),
           "--partitions", str(args.partitions), "--app-id-file", str(app_id_file)]
    peak = {"driver": 0, "executors": 0}
    done = threading.Event()

    def sample(driver_pid: int) -> None:
        while not done.is_set():
            peak["driver"] = max(peak["driver"], tree_rss(driver_pid))
            app = app_id_file.read_text().strip() if app_id_file.exists() else None
            if app:  # this application's executors only
                peak["executors"] = max(peak["executors"], executors_rss(app))
            time.sleep(0.5)

    t0 = time.time()
    child_proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=sample, args=(child_proc.pid,), daemon=True)
    sampler.start()
    stdout, stderr = child_proc.communicate()
    proc = subprocess.CompletedProcess(cmd, child_proc.returncode, stdout, stderr)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{master}: the fit failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(master=master, wall_s=round(time.time() - t0, 1), driver_peak_rss_gb=round(peak["driver"] / 2**30, 2),
               executors_peak_rss_gb=round(peak["executors"] / 2**30, 2),
               loadavg=Path("/proc/loadavg").read_text().split()[:3])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--interactions", type=int, action="append")
    p.add_argument("--master", default=os.environ.get("SPARK_MASTER") or "spark://127.0.0.1:7077")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--driver-memory", default="2g")
    p.add_argument("--executor-memory", default="2500m")
    p.add_argument("--no-local", action="store_true", help="skip the local[2] comparison")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--app-id-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.interactions = args.interactions or [1_000_000]
    if args.child:
        args.interactions = args.interactions[0]
        child(args)
        return 0
    rows = []
    for n in args.interactions:
        for master in [args.master] + ([] if args.no_local else ["local[2]"]):
            row = run(master, args, n)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'interactions':>12} {'master':<26} {'fit s':>7} {'gen s':>6} {'driver GB':>9} {'executors GB':>12}  load")
    for r in rows:
        print(f"{r['interactions']:>12,} {r['master']:<26} {r['fit_s']:>7} {r['generate_s']:>6} "
              f"{r['driver_peak_rss_gb']:>9} {r['executors_peak_rss_gb']:>12}  {' '.join(r['loadavg'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
